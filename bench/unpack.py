"""Benchmark: pull and unpack a large multi-layer image, against skopeo+umoci and plain tar.

Builds (once, cached under $LIGOENV_BENCH_DIR, default /var/tmp/ligoenv-bench) a Debian
minbase root from debootstrap plus generated data, split into gzip layers (>= 300 MB
uncompressed, >= 10,000 files), pushes it to a throwaway local registry, and times in one run:

  ligoenv    `ligoenv pull REF --output DIR` with a cold layer cache
  skopeo     `skopeo copy docker://REF oci:DIR:TAG` then `umoci unpack --rootless`
  tar        `tar -xzf` of the same layer files, in order (the decompression floor)

Run: bash scripts/setup.sh && LIGOENV_SETUP_BENCH=1 bash scripts/setup.sh && .venv/bin/python bench/unpack.py
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import VENV_BIN, WORK, LayerFile, fresh, make_layer, run, timed, tree_stats, write_layout
from ligoenv_server.localregistry import RegistryProcess


def build_rootfs(work: Path) -> Path:
    rootfs = work / "rootfs"
    if not (rootfs / "usr" / "bin").is_dir():
        print("building a Debian minbase root with debootstrap (once)...", flush=True)
        fresh(rootfs)
        with (work / "debootstrap.log").open("wb") as log:
            run(["debootstrap", "--variant=minbase", "bookworm", rootfs, "http://deb.debian.org/debian"],
                stdout=log, stderr=log)
    return rootfs


def build_data(work: Path, seed: int = 7) -> Path:
    """Generated analysis-like data: many small text files and some large semi-compressible ones."""
    data = work / "data"
    marker = data / ".complete"
    if marker.exists():
        return data
    fresh(data)
    rng = random.Random(seed)
    words = [f"strain{i}" for i in range(5000)]
    for i in range(6000):
        sub = data / "opt" / "analysis" / "share" / f"d{i % 60:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 400)))
        (sub / f"file{i:05d}.txt").write_text(text)
    for i in range(6):
        big = data / "opt" / "analysis" / "psd" / f"frame{i}.gwf"
        big.parent.mkdir(parents=True, exist_ok=True)
        with big.open("wb") as handle:
            block = os.urandom(1 << 20)
            for j in range(25):  # 25 MiB each; half random, half zeros: compresses ~2x
                handle.write(block if j % 2 else bytes(1 << 20))
    marker.write_text("ok")
    return data


def build_layers(work: Path) -> list[LayerFile]:
    rootfs, data = build_rootfs(work), build_data(work)
    layers_dir = work / "layers"
    layers_dir.mkdir(exist_ok=True)
    plan = [
        (rootfs, ["usr"], "1-usr.tar.gz"),
        (rootfs, sorted(p.name for p in rootfs.iterdir() if p.name != "usr"), "2-base.tar.gz"),
        (data, ["opt/analysis/share"], "3-share.tar.gz"),
        (data, ["opt/analysis/psd"], "4-psd.tar.gz"),
    ]
    layers = []
    for source, members, name in plan:
        print(f"layer {name}...", flush=True)
        layers.append(make_layer(source, members, layers_dir / name))
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per method (median)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the trees and caches are written (default: the bench dir on "
                             "disk; /dev/shm takes the disk's noise out)")
    args = parser.parse_args()
    work = WORK
    work.mkdir(parents=True, exist_ok=True)
    layers = build_layers(work)
    total = sum(layer.uncompressed for layer in layers)
    registry = RegistryProcess(fresh(work / "registry")).start()
    try:
        ref = f"{registry.host}/bench/debian-analysis:latest"
        layout = work / "layout"
        write_layout(layout, layers, "latest")
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"])
        out = args.out or work
        out.mkdir(parents=True, exist_ok=True)
        results = measure(out, ref, layers, args.runs)
    finally:
        registry.stop()
    report(results, total, out / "out-tar", out)


def measure(work: Path, ref: str, layers: list[LayerFile], runs: int) -> dict[str, float]:
    """Median seconds per method. Runs are interleaved (one of each method per round) and each
    starts from a clean, synced disk, so that write-back and discard noise from deleting the
    previous trees falls on every method alike."""
    out_ligoenv, cache = work / "out-ligoenv", work / "cache"
    out_oci, out_umoci, out_tar = work / "out-oci", work / "out-umoci", work / "out-tar"

    def reset() -> None:
        for path in (out_ligoenv, cache, out_oci, out_umoci, out_tar):
            if path.exists():
                shutil.rmtree(path)
        run(["sync"])
        time.sleep(2)  # let the file system finish discarding what was deleted
        run(["sync"])

    env = {**os.environ, "LIGOENV_CACHE": str(cache)}

    def ligoenv() -> None:
        run([VENV_BIN / "ligoenv", "pull", ref, "--output", out_ligoenv], env=env)

    def skopeo_umoci() -> None:
        run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
             f"docker://{ref}", f"oci:{out_oci}:latest"])
        run(["umoci", "unpack", "--rootless", "--image", f"{out_oci}:latest", out_umoci],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def plain_tar() -> None:
        out_tar.mkdir()
        for layer in layers:
            run(["tar", "-xzf", layer.path, "-C", out_tar])

    methods = {"ligoenv pull (cold cache)": ligoenv, "skopeo copy + umoci unpack": skopeo_umoci,
               "tar -xzf (floor)": plain_tar}
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(runs):
        for name, method in methods.items():
            samples[name].append(timed(method, 1, reset))
    return {name: statistics.median(times) for name, times in samples.items()}


def report(results: dict[str, float], total: int, tree: Path, out: Path) -> None:
    entries, _ = tree_stats(tree)
    mb = total / 1e6
    print(f"\nimage: {mb:.0f} MB uncompressed, {entries} entries, {os.cpu_count()} cores; "
          f"written under {out}")
    print(f"{'method':32} {'seconds':>8} {'MB/s':>8}")
    for name, seconds in results.items():
        print(f"{name:32} {seconds:8.2f} {mb / seconds:8.1f}")
    ours = results["ligoenv pull (cold cache)"]
    print(f"\nskopeo+umoci / ligoenv = {results['skopeo copy + umoci unpack'] / ours:.2f}x (target >= 2x)")
    print(f"ligoenv / tar          = {ours / results['tar -xzf (floor)']:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
