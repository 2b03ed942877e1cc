"""Benchmark: pull and unpack images, against skopeo+umoci and the write floor of plain tar.

Builds (once, cached under $LIGOENV_BENCH_DIR, default /var/tmp/ligoenv-bench) two images and
pushes them to a throwaway local registry:

  debian     a Debian minbase root from debootstrap plus generated data, 4 gzip layers
             (>= 300 MB uncompressed, >= 10,000 files)
  conda      a conda-like environment: 100,000 files (273 MB) in one gzip layer

and times, interleaved (one of each method per round), medians of --runs:

  ligoenv    `ligoenv pull REF --output DIR` with a cold layer cache
  skopeo     `skopeo copy docker://REF oci:DIR:TAG` then `umoci unpack --rootless`
  tar -xf    `tar -xf` of the decompressed layers, in order: the write floor (no download,
             no decompression, no digest)
  baseline   with --baseline DIR, `ligoenv pull` of another checkout (before and after a change)

with the CPU time (user + system) and the peak RSS of each. `--rate 100` pulls through a proxy
that lets the registry send 100 MB/s in all, as over a network link, instead of at loopback
speed. `--rss-gb 5` also pulls a generated 5 GB image once and reports the peak RSS of
`ligoenv pull`; that image is deleted afterwards.

Run: bash scripts/setup.sh && LIGOENV_SETUP_BENCH=1 bash scripts/setup.sh && .venv/bin/python bench/unpack.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    VENV_BIN,
    WORK,
    LayerFile,
    conda_layer,
    fresh,
    generated_layer,
    make_layer,
    measured_process,
    run,
    tree_stats,
    write_layout,
)
from testbed.registry import RegistryProcess
from testbed.throttle import ThrottledProxy


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


def decompressed(layer: LayerFile) -> Path:
    """The layer's uncompressed tar beside it (made once): what the write floor reads."""
    tar_path = layer.path.with_suffix("")
    if not tar_path.exists() or tar_path.stat().st_size != layer.uncompressed:
        with gzip.open(layer.path, "rb") as packed, tar_path.open("wb") as raw:
            shutil.copyfileobj(packed, raw, 1 << 20)
    return tar_path


def build_conda(work: Path) -> list[LayerFile]:
    path = work / "conda" / "site-packages.tar.gz"
    marker = path.with_suffix(".json")
    if marker.exists():
        return [LayerFile(**{**json.loads(marker.read_text()), "path": path})]
    print("generating the conda-like layer (once)...", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    layer = conda_layer(path)
    marker.write_text(json.dumps({**vars(layer), "path": str(path)}))
    return [layer]


@dataclass
class Sample:
    seconds: float
    cpu: float  # user + system seconds of the process and its children
    rss_mb: float  # peak resident set of the largest process


def measured(cmds: list[list[str | Path]], env: dict[str, str] | None = None) -> Sample:
    """Run `cmds` one after the other; wall time, their CPU time and the largest peak RSS."""
    start, cpu, rss = time.perf_counter(), 0.0, 0.0
    for cmd in cmds:
        _, used, peak = measured_process(cmd, env)
        cpu += used
        rss = max(rss, peak)
    return Sample(time.perf_counter() - start, cpu, rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per method (median)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the trees and caches are written (default: the bench dir on "
                             "disk; /dev/shm takes the disk's noise out)")
    parser.add_argument("--images", default="debian,conda", help="which images, comma-separated")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (with its .venv) whose `ligoenv pull` is timed too")
    parser.add_argument("--rate", type=float, default=0,
                        help="MB/s: pull through a proxy that paces what the registry sends, as "
                             "over a network link (default: loopback speed)")
    parser.add_argument("--rss-gb", type=float, default=0,
                        help="also pull a generated image of this many GB once and report peak RSS")
    args = parser.parse_args()
    work = WORK
    work.mkdir(parents=True, exist_ok=True)
    builders = {"debian": build_layers, "conda": build_conda}
    images = {name: builders[name](work) for name in args.images.split(",") if name}
    floors = {name: [decompressed(layer) for layer in layers] for name, layers in images.items()}
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    registry = RegistryProcess(fresh(work / "registry")).start()
    proxy = ThrottledProxy(registry.host, args.rate * 1e6) if args.rate else None
    try:
        refs = {name: push(work, registry.host, name, layers) for name, layers in images.items()}
        if proxy is not None:
            print(f"pulling through a link of {args.rate:g} MB/s")
            refs = {name: ref.replace(registry.host, proxy.host, 1) for name, ref in refs.items()}
        results = {name: measure(out, refs[name], floors[name], args.runs, args.baseline) for name in images}
        for name, layers in images.items():
            report(name, results[name], layers, out)
        if args.rss_gb:
            big_rss(work, registry.host, args.rss_gb)
    finally:
        if proxy is not None:
            proxy.stop()
        registry.stop()


def push(work: Path, host: str, name: str, layers: list[LayerFile]) -> str:
    ref = f"{host}/bench/{name}:latest"
    layout = work / f"layout-{name}"
    write_layout(layout, layers, "latest")
    run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"])
    shutil.rmtree(layout)
    return ref


def measure(work: Path, ref: str, floor: list[Path], runs: int, baseline: Path | None) -> dict[str, Sample]:
    """Median per method. Runs are interleaved (one of each method per round) and each starts
    from a clean, synced file system, so that write-back and discard noise from deleting the
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
    methods: dict[str, Callable[[], Sample]] = {
        "ligoenv pull (cold cache)": lambda: measured(
            [[VENV_BIN / "ligoenv", "pull", ref, "--output", out_ligoenv]], env),
        "skopeo copy + umoci unpack": lambda: measured(
            [["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
              f"oci:{out_oci}:latest"],
             ["umoci", "unpack", "--rootless", "--image", f"{out_oci}:latest", out_umoci]]),
        "tar -xf, decompressed (floor)": lambda: measured(
            [["mkdir", out_tar], *[["tar", "-xf", layer, "-C", out_tar] for layer in floor]]),
    }
    if baseline is not None:
        methods["ligoenv pull, baseline checkout"] = lambda: measured(
            [[baseline / ".venv/bin/ligoenv", "pull", ref, "--output", out_ligoenv]], env)
    samples: dict[str, list[Sample]] = {name: [] for name in methods}
    entries = 0
    for _ in range(runs):
        for name, method in methods.items():
            reset()
            samples[name].append(method())
            if name.startswith("tar") and not entries:
                entries, _ = tree_stats(out_tar)
    results = {name: Sample(statistics.median(s.seconds for s in got), statistics.median(s.cpu for s in got),
                            max(s.rss_mb for s in got)) for name, got in samples.items()}
    results["entries"] = Sample(entries, 0, 0)
    reset()
    return results


def report(name: str, results: dict[str, Sample], layers: list[LayerFile], out: Path) -> None:
    entries = int(results.pop("entries").seconds)
    mb = sum(layer.uncompressed for layer in layers) / 1e6
    print(f"\n{name}: {len(layers)} layers, {mb:.0f} MB of tar, {entries} entries, "
          f"{os.cpu_count()} cores; written under {out}")
    print(f"{'method':32} {'seconds':>8} {'us/entry':>9} {'CPU s':>7} {'peak RSS MB':>12}")
    for method, got in results.items():
        per_entry = got.seconds / entries * 1e6
        print(f"{method:32} {got.seconds:8.2f} {per_entry:9.1f} {got.cpu:7.2f} {got.rss_mb:12.0f}")
    ours = results["ligoenv pull (cold cache)"]
    print(f"skopeo+umoci / ligoenv = {results['skopeo copy + umoci unpack'].seconds / ours.seconds:.2f}x "
          "(target >= 3x)")
    print(f"ligoenv / tar -xf      = {ours.seconds / results['tar -xf, decompressed (floor)'].seconds:.2f}x "
          "(target <= 1.5x)")


def big_rss(work: Path, host: str, gigabytes: float) -> None:
    """Pull a generated image of `gigabytes` GB once; print the peak RSS of `ligoenv pull`."""
    where = fresh(work / "big")
    try:
        count = max(1, round(gigabytes))
        size = int(gigabytes * 1e9 / count)
        print(f"\ngenerating a {gigabytes:g} GB image in {count} layers...", flush=True)
        layers = [generated_layer(where / f"layer{i}.tar.gz", 100 + i, size, f"big{i}") for i in range(count)]
        ref = push(work, host, "big", layers)
        tree, cache = work / "out-big", work / "cache-big"  # on disk: 5 GB twice
        got = measured([[VENV_BIN / "ligoenv", "pull", ref, "--output", tree]],
                       {**os.environ, "LIGOENV_CACHE": str(cache)})
        entries, written = tree_stats(tree)
        tar_gb = sum(layer.uncompressed for layer in layers) / 1e9
        print(f"big: {tar_gb:.1f} GB of tar, {entries} entries, {written / 1e9:.1f} GB written: "
              f"ligoenv pull {got.seconds:.1f} s, peak RSS {got.rss_mb:.0f} MB (target <= 200 MB)")
    finally:
        for path in (where, work / "out-big", work / "cache-big"):
            if path.exists():
                shutil.rmtree(path)


if __name__ == "__main__":
    main()
