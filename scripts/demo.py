"""The ligoenv demo: the whole pipeline on embedded defaults, step by step, then cleaned up.

registry --webhook--> ligoenv-server (relay, queue, worker) --> publish root + index
--> ligoenv lock / run / history, with a tag that moves under our feet.
Run it with `bash scripts/demo.sh` (which installs what it needs first).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
sys.path.insert(0, str(REPO))

from ligoenv.store.index.reader import LocalIndexReader  # noqa: E402
from testbed.ocibuild import Entry, Image, Layer, LayoutWriter  # noqa: E402
from testbed.registry import RegistryProcess, free_port  # noqa: E402

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
REPOSITORY = "lvk/analysis"
TAG = "nightly"


def step(number: int, text: str) -> None:
    print(f"\n{BOLD}==> {number}/8 {text}{RESET}", flush=True)


def show(*argv: str | Path, env: dict[str, str] | None = None, check: bool = True) -> str:
    """Print a command as a user would type it, run it, print and return its output."""
    words = [str(a) for a in argv]
    shown = [Path(words[0]).name, *words[1:]]
    print(f"{DIM}$ {shlex.join(shown)}{RESET}", flush=True)
    result = subprocess.run(words, env=env, capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print("  " + output.replace("\n", "\n  "), flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: {shown[0]} failed with exit code {result.returncode}")
    return result.stdout


def sample_image(version: str) -> Image:
    """A tiny analysis image: busybox, a version file and a script, like a real pipeline's."""
    busybox = Path("/bin/busybox").read_bytes()
    base = [Entry(d, "dir", mode=0o755) for d in ("bin", "etc", "opt", "opt/analysis", "usr", "tmp")]
    base.append(Entry("bin/busybox", data=busybox, mode=0o755))
    base += [Entry(f"bin/{name}", "symlink", target="busybox")
             for name in ("sh", "cat", "echo", "ls", "uname", "env")]
    script = f'#!/bin/sh\necho "analysis {version}: matched-filter search on $(uname -m)"\n'
    app = [Entry("opt/analysis/VERSION", data=f"{version}\n".encode()),
           Entry("opt/analysis/run.sh", data=script.encode(), mode=0o755)]
    return Image([Layer.from_entries(base), Layer.from_entries(app)],
                 env=("PATH=/opt/analysis:/bin", f"ANALYSIS_VERSION={version}"),
                 cmd=("/opt/analysis/run.sh",))


def push(work: Path, host: str, version: str) -> None:
    layout = work / f"image-{version}"
    LayoutWriter(layout).add_image(sample_image(version), version)
    show("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{version}",
         f"docker://{host}/{REPOSITORY}:{TAG}")


def wait_published(root: Path, host: str, previous: str | None, pushed_at: float) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        digest = LocalIndexReader(root).get(host, REPOSITORY).current(TAG)
        if digest is not None and str(digest) != previous and (root / host / f"{REPOSITORY}:{TAG}").exists():
            print(f"  published and indexed {time.monotonic() - pushed_at:.2f} s after the push: {digest}")
            return str(digest)
        time.sleep(0.05)
    raise SystemExit("demo: the image was not published within 60 s (see the server log above)")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ligoenv-demo-"))
    relay_port = free_port()
    registry = RegistryProcess(work / "registry", notifications=[{
        "name": "ligoenv", "url": f"http://127.0.0.1:{relay_port}/hooks/distribution",
        "timeout": "2s", "threshold": 3, "backoff": "300ms"}])
    server: subprocess.Popen[bytes] | None = None
    try:
        step(1, "Start a throwaway registry (Distribution) whose webhooks go to the relay")
        registry.start()
        print(f"  registry at {registry.host}, notifications -> http://127.0.0.1:{relay_port}/hooks/distribution")

        step(2, "Start ligoenv-server on its embedded defaults (relay + SQLite queue + worker)")
        state = work / "server"
        print(f"{DIM}$ ligoenv-server serve --port {relay_port} --registry {registry.host} "
              f"--state-dir {state}{RESET}")
        log = (work / "server.log").open("wb")
        server = subprocess.Popen(
            [BIN / "ligoenv-server", "serve", "--port", str(relay_port), "--registry", registry.host,
             "--state-dir", state], stdout=log, stderr=subprocess.STDOUT)
        _wait_healthy(relay_port)
        root = state / "publish"
        env = {**os.environ, "LIGOENV_INDEX": str(root), "LIGOENV_CACHE": str(work / "cache"),
               "LIGOENV_CONFIG": str(work / "no-user-config.toml")}
        ref = f"{registry.host}/{REPOSITORY}:{TAG}"

        step(3, f"A researcher's CI pushes {REPOSITORY}:{TAG} (version 1.0)")
        pushed = time.monotonic()
        push(work, registry.host, "1.0")

        step(4, "The webhook is relayed, queued, pulled by digest, unpacked and published")
        first = wait_published(root, registry.host, None, pushed)
        print(f"  tree: {(root / registry.host / f'{REPOSITORY}:{TAG}').resolve()}")
        show(BIN / "ligoenv", "resolve", ref, env=env)

        step(5, "Lock the environment for the paper (ligoenv.lock pins the digest)")
        lockfile = work / "ligoenv.lock"
        show(BIN / "ligoenv", "lock", "--name", f"analysis={ref}", "-o", lockfile, env=env)
        print("  " + lockfile.read_text().rstrip().replace("\n", "\n  "))

        step(6, "Run the analysis inside the image, by digest (Apptainer if installed, else bubblewrap)")
        show(BIN / "ligoenv", "run", "--lock", lockfile, "analysis", "--", "run.sh", env=env)

        step(7, f"A new build (version 2.0) is pushed to the same tag: {TAG} moves")
        pushed = time.monotonic()
        push(work, registry.host, "2.0")
        second = wait_published(root, registry.host, first, pushed)
        assert second != first

        step(8, "The tag's history is kept; the lockfile still runs the first digest")
        show(BIN / "ligoenv", "history", ref, env=env)
        show(BIN / "ligoenv", "run", "--lock", lockfile, "analysis", "--", "cat", "/opt/analysis/VERSION",
             env=env)
        show(BIN / "ligoenv", "run", ref, "--", "cat", "/opt/analysis/VERSION", env=env)
        show(BIN / "ligoenv", "cite", lockfile, env=env)
        print(f"\n{BOLD}Demo complete:{RESET} push -> published in seconds, pinned by digest, "
              "reproducible after the tag moved.")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def _wait_healthy(port: int) -> None:
    import requests

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit("demo: ligoenv-server did not start")


if __name__ == "__main__":
    main()
