"""Benchmark: `ligoenv archive` / `restore --to` against `skopeo copy` to and from `oci-archive:`.

Generates (once, under $LIGOENV_BENCH_DIR, default /var/tmp/ligoenv-bench) an image of three
gzip layers, about 460 MB uncompressed, pushes it to a throwaway local registry, locks it, and
times in one run, interleaved, the median of --runs fresh processes each:

  archive   `ligoenv archive -o X.tar` (cold cache: every blob from the registry)
            vs `skopeo copy docker://REF oci-archive:X.tar`
  restore   `ligoenv restore X.tar --to REGISTRY/PREFIX` (every blob verified, then pushed)
            vs `skopeo copy oci-archive:X.tar docker://REGISTRY/PREFIX/...`
  load      `ligoenv restore X.tar` into the local cache, unpacking the image (no peer)

with each process's peak RSS (from GNU time), to show that memory stays flat however large the layers.

Run: bash scripts/setup.sh && .venv/bin/python bench/archive.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    VENV_BIN,
    WORK,
    LayerFile,
    fresh,
    generated_layer,
    measured_process,
    run,
    write_layout,
)
from testbed.registry import RegistryProcess

LIGOENV = str(VENV_BIN / "ligoenv")
LAYER_SIZES = (40 << 20, 300 << 20, 120 << 20)  # about 460 MB uncompressed


def build_layers(work: Path) -> list[LayerFile]:
    layers = []
    for n, size in enumerate(LAYER_SIZES):
        out = work / f"archive-layer{n}.tar.gz"
        marker = out.with_suffix(".ids")
        if marker.exists() and out.exists():
            digest, diff_id, uncompressed = marker.read_text().split()
            layers.append(LayerFile(out, digest, diff_id, out.stat().st_size, int(uncompressed)))
            continue
        print(f"generating layer {n} ({size >> 20} MiB, once)...", flush=True)
        layer = generated_layer(out, seed=100 + n, size=size, top=f"opt/layer{n}")
        marker.write_text(f"{layer.digest} {layer.diff_id} {layer.uncompressed}")
        layers.append(layer)
    return layers


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS in MB) of one fresh process."""
    seconds, _, rss = measured_process(cmd, env)
    return seconds, int(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = WORK
    work.mkdir(parents=True, exist_ok=True)
    layers = build_layers(work)
    total = sum(layer.uncompressed for layer in layers)
    scratch = fresh(work / "archive-run")
    registry = RegistryProcess(scratch / "registry").start()
    try:
        layout = scratch / "layout"
        write_layout(layout, layers, "bench")
        ref = f"{registry.host}/bench/archive:v1"
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:bench", f"docker://{ref}"])
        home = fresh(scratch / "home")
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "LIGOENV_CACHE": str(scratch / "cache"),
               "LIGOENV_CONFIG": str(home / "none.toml")}
        run([LIGOENV, "lock", "--name", "bench=" + ref, "-o", str(scratch / "ligoenv.lock")], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = _interleaved(args.runs, scratch, ref, env)
    finally:
        registry.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    _report(results, total, args.runs)


def _interleaved(runs: int, scratch: Path, ref: str,
                 env: dict[str, str]) -> dict[str, list[tuple[float, int]]]:
    results: dict[str, list[tuple[float, int]]] = {}
    lockfile = str(scratch / "ligoenv.lock")
    for n in range(runs):
        # Restores go to a registry of their own, new each run, that has none of the blobs:
        # otherwise skopeo mounts them from a repository it saw before instead of uploading.
        target = RegistryProcess(scratch / f"target{n}").start()
        try:
            _one_run(n, scratch, ref, target.host, lockfile, env, results)
        finally:
            target.stop()
    return results


def _one_run(n: int, scratch: Path, ref: str, host: str, lockfile: str, env: dict[str, str],
             results: dict[str, list[tuple[float, int]]]) -> None:
    ours, theirs = scratch / f"ours{n}.tar", scratch / f"skopeo{n}.tar"
    pairs = {
        "archive": ([LIGOENV, "archive", lockfile, "-o", str(ours)],
                    ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                     f"oci-archive:{theirs}:bench"]),
        "restore": ([LIGOENV, "restore", str(ours), "--to", f"{host}/ours{n}",
                     "--lockfile", str(scratch / f"restored{n}.lock")],
                    ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                     f"oci-archive:{theirs}:bench", f"docker://{host}/skopeo{n}/bench/archive:v1"]),
    }
    for step, (mine, peer) in pairs.items():
        shutil.rmtree(scratch / "cache", ignore_errors=True)  # archive: every blob from the registry
        order = [("ligoenv", mine), ("skopeo", peer)]
        for tool, cmd in order if n % 2 == 0 else reversed(order):  # alternate who goes first
            results.setdefault(f"{step}/{tool}", []).append(measured(cmd, env))
    shutil.rmtree(scratch / "cache", ignore_errors=True)
    results.setdefault("load/ligoenv", []).append(measured(
        [LIGOENV, "restore", str(ours), "--lockfile", str(scratch / f"loaded{n}.lock")], env))
    results.setdefault("size/ligoenv", []).append((ours.stat().st_size / 1e6, 0))
    results.setdefault("size/skopeo", []).append((theirs.stat().st_size / 1e6, 0))
    ours.unlink()
    theirs.unlink()


def _report(results: dict[str, list[tuple[float, int]]], total: int, runs: int) -> None:
    def median(name: str) -> float:
        return statistics.median(t for t, _ in results[name])

    def peak(name: str) -> int:
        return max(m for _, m in results[name])

    print(f"\nimage: 3 gzip layers, {total / 1e6:.0f} MB uncompressed; median of {runs} interleaved runs")
    print(f"archive size: ligoenv {median('size/ligoenv'):.0f} MB, skopeo {median('size/skopeo'):.0f} MB\n")
    print("| step | ligoenv | skopeo copy | ratio | peak RSS ligoenv / skopeo |")
    print("|---|---:|---:|---:|---:|")
    for step in ("archive", "restore"):
        ours, theirs = median(f"{step}/ligoenv"), median(f"{step}/skopeo")
        print(f"| {step} | {ours:.2f} s | {theirs:.2f} s | {ours / theirs:.2f}x | "
              f"{peak(f'{step}/ligoenv')} MB / {peak(f'{step}/skopeo')} MB |")
    print(f"| restore into the cache, unpacked | {median('load/ligoenv'):.2f} s | | | "
          f"{peak('load/ligoenv')} MB |")


if __name__ == "__main__":
    main()
