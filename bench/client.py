"""Benchmark: the client's hot paths against the tools people would use instead.

Pushes a small busybox image to a throwaway local registry, then times fresh processes:

  resolve (lockfile)   `ligoenv resolve NAME` answered from ligoenv.lock
  resolve (index)      `ligoenv resolve REF --index ROOT` answered from a local publish index
  resolve (registry)   `ligoenv resolve REF` asking the registry (a HEAD)
  skopeo inspect       `skopeo inspect docker://REF` against the same registry
  ligoenv run bwrap    `ligoenv run --runtime bwrap --lock bench.lock busybox -- true` (tree cached)
  run bwrap (by tag)   the same by tag, so the registry is asked for the digest first
  bwrap directly       the very command line `ligoenv run` executes

with hyperfine when /usr/bin/hyperfine exists, else a timing loop. Prints medians and ratios.
Run: .venv/bin/python bench/client.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import VENV_BIN, WORK, fresh, run
from ligoenv.client.launch import prepare
from ligoenv.client.resolve import Resolver
from ligoenv.client.runtimes.base import Host, RunRequest
from ligoenv.client.runtimes.select import select_runtime
from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_MANIFEST
from ligoenv.store.index import DigestRecord
from ligoenv.store.index.writer import IndexWriter
from ligoenv.store.publishroot import PublishRoot
from testbed.ocibuild import Entry, Image, Layer, LayoutWriter
from testbed.registry import RegistryProcess, skopeo_push

LIGOENV = str(VENV_BIN / "ligoenv")
HYPERFINE = "/usr/bin/hyperfine"


def busybox_image() -> Image:
    entries = [Entry("bin", "dir", mode=0o755), Entry("etc", "dir", mode=0o755),
               Entry("bin/busybox", data=Path("/bin/busybox").read_bytes(), mode=0o755),
               Entry("bin/sh", "symlink", target="busybox"), Entry("bin/true", "symlink", target="busybox"),
               Entry("etc/greeting", data=b"hello\n")]
    return Image([Layer.from_entries(entries)], env=("PATH=/bin",))


def write_index(root: Path, registry: str, repository: str, tag: str, image: Image) -> None:
    manifest = Digest.of_bytes(image.manifest_bytes())
    layout = PublishRoot(root)
    now = datetime.now(UTC)
    record = DigestRecord(
        digest=manifest, media_type=OCI_MANIFEST, platforms={"linux/amd64": manifest},
        platform="linux/amd64", config=Digest.of_bytes(image.config_bytes()),
        layers=tuple(layer.digest for layer in image.layers), size=1,
        path=layout.relative_image_path(manifest), published=now)
    IndexWriter(root).plan_publish(registry, repository, [record], tag, manifest, now,
                                   "bench").apply()


def median_seconds(commands: dict[str, list[str]], runs: int, env: dict[str, str],
                   cwd: Path) -> dict[str, float]:
    if Path(HYPERFINE).exists():
        return _hyperfine(commands, runs, env, cwd)
    return {name: _loop(argv, runs, env, cwd) for name, argv in commands.items()}


def _hyperfine(commands: dict[str, list[str]], runs: int, env: dict[str, str], cwd: Path) -> dict[str, float]:
    import shlex

    out = cwd / "hyperfine.json"
    argv = [HYPERFINE, "-N", "--warmup", "3", "--runs", str(runs), "--export-json", str(out),
            "--style", "none"]
    for name, command in commands.items():
        argv += ["--command-name", name, shlex.join(command)]
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    results = json.loads(out.read_text())["results"]
    return {r["command"]: float(r["median"]) for r in results}


def _loop(argv: list[str], runs: int, env: dict[str, str], cwd: Path) -> float:
    samples = []
    for _ in range(runs + 3):
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    work = fresh(WORK / "client")
    registry = RegistryProcess(work / "registry").start()
    try:
        report(work, registry, args.runs)
    finally:
        registry.stop()


def report(work: Path, registry: RegistryProcess, runs: int) -> None:
    image = busybox_image()
    LayoutWriter(work / "layout").add_image(image, tag="bench")
    ref = f"{registry.host}/bench/busybox:bench"
    skopeo_push(work / "layout", "bench", ref)
    write_index(work / "root", registry.host, "bench/busybox", "bench", image)
    home = work / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "LIGOENV_CACHE": str(work / "cache"), "LIGOENV_CONFIG": str(home / "none.toml"),
           "LIGOENV_SITE_CONFIG": ""}
    # cwd outside /tmp and /var/tmp/...: the cached tree gets a mount point for it once, up front.
    cwd = Path(tempfile.mkdtemp(prefix="ligoenv-bench-cwd-", dir=str(work)))
    # Not the default ligoenv.lock: the index and registry runs must not find a lockfile.
    run([LIGOENV, "lock", "-o", "bench.lock", "--name", "busybox=" + ref], env=env, cwd=cwd,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run([LIGOENV, "pull", ref], env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    direct = bwrap_command(ref, cwd, env)

    commands = {
        "resolve (lockfile)": [LIGOENV, "resolve", "--lock", "bench.lock", "busybox"],
        "resolve (index)": [LIGOENV, "resolve", "--index", str(work / "root"), ref],
        "resolve (registry)": [LIGOENV, "resolve", ref],
        "skopeo inspect": ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
        "ligoenv run bwrap": [LIGOENV, "run", "--runtime", "bwrap", "--lock", "bench.lock", "busybox",
                              "--", "true"],
        "run bwrap (by tag)": [LIGOENV, "run", "--runtime", "bwrap", ref, "--", "true"],
        "bwrap directly": direct,
    }
    medians = median_seconds(commands, runs, env, cwd)
    print(f"median wall time of a fresh process, {runs} runs each "
          f"({'hyperfine' if Path(HYPERFINE).exists() else 'timing loop'})")
    for name, seconds in medians.items():
        print(f"  {name:<20} {seconds * 1000:8.1f} ms")
    skopeo = medians["skopeo inspect"]
    print("ratios (ligoenv / the alternative; below 1 means ligoenv is faster)")
    for name in ("resolve (lockfile)", "resolve (index)", "resolve (registry)"):
        print(f"  {name:<20} / skopeo inspect  {medians[name] / skopeo:6.2f}")
    direct = medians["bwrap directly"]
    for name in ("ligoenv run bwrap", "run bwrap (by tag)"):
        wrapped = medians[name]
        print(f"  {name:<20} / bwrap directly  {wrapped / direct:6.2f}  "
              f"(+{(wrapped - direct) * 1000:.1f} ms per run)")
    shutil.rmtree(cwd, ignore_errors=True)


def bwrap_command(ref: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """The argv `ligoenv run --runtime bwrap REF -- true` executes, built by the same code."""
    from ligoenv.client.settings import load_settings

    settings = load_settings({}, env)
    request = RunRequest(reference=ref, command=("true",), cwd=str(cwd), runtime="bwrap",
                         stdin_open=False, host=Host.current())
    resolver = Resolver(insecure_registries=settings.insecure_registries)
    runtime, plan = prepare(request, resolver, settings.cache, shutil.which)
    assert runtime.name == select_runtime("bwrap").name
    return runtime.command(plan)


if __name__ == "__main__":
    main()
