"""Benchmark: publishing by layer chain against publishing each image whole, in one run.

Builds (once, cached under $LIGOENV_BENCH_DIR/chains) a Debian-based image of about 460 MB and
15,000 entries in four gzip layers — this machine's /usr/include and /usr/lib/gcc, then its
Python, Perl and zoneinfo trees, then generated analysis data, then a small application layer —
and two rebuilds of it: one whose top layer changes one file, and one whose second layer does.
Pushes the three to a throwaway registry, then publishes them in order, in-process through the
worker's RequestProcessor (cold layer cache, downloads included), with:

  directory  the directory publisher, chains off (today's whole images) and on: publish time
             and how much the publish root grows (hard links counted once)
  cvmfs      the CVMFS publisher against the stand-in cvmfs_server, chains off (copy in) and on
             (template transactions): bytes written into the repository's transactions

Run: bash scripts/setup.sh && .venv/bin/python bench/chains.py [--out /dev/shm/ligoenv-chains]
[--runs 5] (medians of the directory publisher's runs; the CVMFS stand-in runs once)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, WORK, LayerFile, fresh, generated_layer, make_layer, run, write_layout
from ligoenv.oci.digest import Digest
from ligoenv_server.config import ServerConfig, default_config
from ligoenv_server.jobs import PublishRequest
from ligoenv_server.pipeline import RequestProcessor
from ligoenv_server.publishers.base import Publisher
from ligoenv_server.publishers.cvmfs import CvmfsPublisher
from ligoenv_server.publishers.directory import DirectoryPublisher
from testbed.registry import RegistryProcess

FAKE_CVMFS = REPO / "testbed" / "fake_cvmfs_server"
CVMFS_REPO = "bench.example.org"
SYSTEM = ["usr/include", "usr/lib/gcc"]
RUNTIME = ["usr/lib/python3.11", "usr/share/perl", "usr/share/zoneinfo"]
CHANGED = "usr/share/zoneinfo/UTC"  # the one file the middle-layer rebuild changes
IMAGES = ("image", "rebuild: one file on top", "rebuild: middle layer")


def build_layers(work: Path) -> dict[str, LayerFile]:
    """The layers of the three images, made once."""
    layers_dir = work / "layers"
    done = layers_dir / "layers.json"
    if done.exists():
        return {name: LayerFile(Path(d["path"]), d["digest"], d["diff_id"], d["size"], d["uncompressed"])
                for name, d in json.loads(done.read_text()).items()}
    fresh(layers_dir)
    runtime = work / "runtime"  # a copy, so that the rebuild can change one file in it
    fresh(runtime)
    for member in RUNTIME:
        (runtime / member).parent.mkdir(parents=True, exist_ok=True)
        run(["cp", "-a", Path("/") / member, runtime / member])
    changed = work / "runtime-changed"
    if changed.exists():
        shutil.rmtree(changed)
    run(["cp", "-a", runtime, changed])
    (changed / CHANGED).unlink()
    (changed / CHANGED).write_bytes(b"TZif rebuilt\n")
    app, app2 = fresh(work / "app"), fresh(work / "app-changed")
    for root, version in ((app, "1.0"), (app2, "1.1")):
        (root / "opt/app").mkdir(parents=True)
        (root / "opt/app/VERSION").write_text(version + "\n")
        (root / "opt/app/run.sh").write_text("#!/bin/sh\nexec python3 -m analysis \"$@\"\n")
    print("building the bench layers (once)...", flush=True)
    layers = {
        "system": make_layer(Path("/"), SYSTEM, layers_dir / "1-system.tar.gz"),
        "runtime": make_layer(runtime, RUNTIME, layers_dir / "2-runtime.tar.gz"),
        "runtime2": make_layer(changed, RUNTIME, layers_dir / "2-runtime-changed.tar.gz"),
        "data": generated_layer(layers_dir / "3-data.tar.gz", 11, 130 * 10**6, "opt/analysis"),
        "app": make_layer(app, ["opt/app"], layers_dir / "4-app.tar.gz"),
        "app2": make_layer(app2, ["opt/app"], layers_dir / "4-app-changed.tar.gz"),
    }
    done.write_text(json.dumps({name: {**vars(layer), "path": str(layer.path)}
                                for name, layer in layers.items()}))
    return layers


def image_layers(layers: dict[str, LayerFile]) -> dict[str, list[LayerFile]]:
    return {
        IMAGES[0]: [layers["system"], layers["runtime"], layers["data"], layers["app"]],
        IMAGES[1]: [layers["system"], layers["runtime"], layers["data"], layers["app2"]],
        IMAGES[2]: [layers["system"], layers["runtime2"], layers["data"], layers["app"]],
    }


def push(registry: RegistryProcess, work: Path, images: dict[str, list[LayerFile]]) -> dict[str, Digest]:
    digests = {}
    for number, (name, layers) in enumerate(images.items()):
        layout = work / f"layout-{number}"
        digest = write_layout(layout, layers, "latest")
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest",
             f"docker://{registry.host}/bench/chains:v{number}"])
        digests[name] = Digest.parse(digest)
    return digests


def disk_usage(root: Path) -> int:
    """Bytes allocated under `root`, each inode counted once (hard links are free)."""
    seen: set[int] = set()
    total = 0
    for directory, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            info = os.lstat(os.path.join(directory, name))
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
    return total


def cvmfs_written(state: Path) -> int:
    path = state / "written"
    if not path.exists():
        return 0
    return sum(json.loads(line)["bytes"] for line in path.read_text().splitlines())


def publish_all(config: ServerConfig, publisher: Publisher, registry: RegistryProcess,
                digests: dict[str, Digest], measure: dict[str, object]) -> dict[str, dict[str, float]]:
    """Publish the images in order; per image the seconds and what `measure` callables say."""
    processor = RequestProcessor(config, publisher)
    out: dict[str, dict[str, float]] = {}
    for number, (name, digest) in enumerate(digests.items()):
        before = {key: fn() for key, fn in measure.items()}  # type: ignore[operator]
        run(["sync"])
        request = PublishRequest(registry=registry.host, repository="bench/chains", tag=f"v{number}",
                                 digest=str(digest), source="cli", received_at=datetime.now(UTC))
        start = time.perf_counter()
        processor.process(request)
        seconds = time.perf_counter() - start
        out[name] = {"seconds": seconds, **{key: fn() - before[key]  # type: ignore[operator]
                                            for key, fn in measure.items()}}
    return out


def directory_run(base: ServerConfig, out: Path, registry: RegistryProcess,
                  digests: dict[str, Digest], chains: bool) -> dict[str, dict[str, float]]:
    root = fresh(out / "publish")
    config = replace(base, publisher=replace(base.publisher, root=root, chains=chains),
                     worker=replace(base.worker, cache_dir=fresh(out / "cache")))
    publisher = DirectoryPublisher(root, chains=chains)
    return publish_all(config, publisher, registry, digests, {"growth": lambda: disk_usage(root)})


def cvmfs_run(base: ServerConfig, out: Path, registry: RegistryProcess,
              digests: dict[str, Digest], chains: bool) -> dict[str, dict[str, float]]:
    cvmfs, state = fresh(out / "cvmfs"), fresh(out / "cvmfs-state")
    os.environ.update(FAKE_CVMFS_ROOT=str(cvmfs), FAKE_CVMFS_STATE=str(state))
    run([FAKE_CVMFS, "mkfs", CVMFS_REPO])
    config = replace(base, worker=replace(base.worker, cache_dir=fresh(out / "cache")))
    publisher = CvmfsPublisher(CVMFS_REPO, mount=cvmfs / CVMFS_REPO, staging_root=fresh(out / "staging"),
                               cvmfs_server=str(FAKE_CVMFS), gateway=True, chains=chains)
    return publish_all(config, publisher, registry, digests, {"written": lambda: cvmfs_written(state)})


def report(total: int, directory: dict[bool, dict[str, dict[str, float]]],
           cvmfs: dict[bool, dict[str, dict[str, float]]]) -> None:
    full = directory[False][IMAGES[0]]
    print(f"\nimage: {total / 1e6:.0f} MB uncompressed; {os.cpu_count()} cores")
    print(f"{'publication':28} {'mode':7} {'seconds':>8} {'x full':>7} {'root grows':>11} "
          f"{'% image':>8} {'CVMFS written':>14}")
    for name in IMAGES:
        for chains in (False, True):
            row, written = directory[chains][name], cvmfs[chains][name]["written"]
            print(f"{name:28} {'chains' if chains else 'whole':7} {row['seconds']:8.2f} "
                  f"{row['seconds'] / full['seconds']:7.2f} {row['growth'] / 1e6:9.1f} MB "
                  f"{100 * row['growth'] / full['growth']:7.1f}% {written / 1e6:11.1f} MB")
    one = directory[True][IMAGES[1]]
    print(f"\none-file rebuild: {100 * one['seconds'] / full['seconds']:.1f}% of the full image's time "
          f"(target <= 10%), root +{100 * one['growth'] / full['growth']:.1f}% (target <= 5%), "
          f"{cvmfs[True][IMAGES[1]]['written'] / 1e6:.2f} MB into the transaction (target <= 5 MB)")
    first = directory[True][IMAGES[0]]["seconds"] / full["seconds"]
    print(f"first publication with chains: {first:.2f}x the whole-image time (target <= 1.1x)")


def median_run(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per image and figure, the median over `runs`."""
    return {name: {key: statistics.median(run[name][key] for run in runs) for key in runs[0][name]}
            for name in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="where publish roots, caches and the CVMFS stand-in live "
                             "(default: the bench dir on disk)")
    parser.add_argument("--runs", type=int, default=1,
                        help="directory publications of the three images, each way: medians")
    args = parser.parse_args()
    work = WORK / "chains"
    work.mkdir(parents=True, exist_ok=True)
    images = image_layers(build_layers(work))
    total = sum(layer.uncompressed for layer in images[IMAGES[0]])
    out = args.out or work / "run"
    registry = RegistryProcess(fresh(work / "registry")).start()
    try:
        digests = push(registry, work, images)
        base = default_config(fresh(out / "state"), registry_host=registry.host)
        runs: dict[bool, list[dict[str, dict[str, float]]]] = {False: [], True: []}
        for _ in range(args.runs):  # interleaved, so that a busy spell hurts both alike
            for chains in (False, True):
                runs[chains].append(directory_run(base, fresh(out / f"dir-{chains}"), registry,
                                                  digests, chains))
                shutil.rmtree(out / f"dir-{chains}")
        directory = {chains: median_run(runs[chains]) for chains in (False, True)}
        cvmfs = {}
        for chains in (False, True):
            cvmfs[chains] = cvmfs_run(base, fresh(out / f"cvmfs-{chains}"), registry, digests, chains)
            shutil.rmtree(out / f"cvmfs-{chains}")
    finally:
        registry.stop()
    report(total, directory, cvmfs)


if __name__ == "__main__":
    main()
