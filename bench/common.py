"""Shared helpers for the benchmarks: timing, a throwaway registry, layer files and layouts."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
WORK = Path(os.environ.get("LIGOENV_BENCH_DIR", "/var/tmp/ligoenv-bench"))


def timed(fn: Callable[[], object], runs: int = 1, before: Callable[[], object] | None = None) -> float:
    """Median wall time of `fn` over `runs`, calling `before` (untimed) ahead of each run."""
    samples = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(cmd: Sequence[str | Path], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LayerFile:
    path: Path  # the .tar.gz blob
    digest: str  # sha256 hex of the blob
    diff_id: str  # sha256 hex of the uncompressed tar
    size: int  # compressed size
    uncompressed: int


def make_layer(source: Path, members: Sequence[str], out: Path) -> LayerFile:
    """A gzip layer of `members` (paths relative to `source`), made with GNU tar + gzip -6."""
    tar_path = out.with_suffix(".tar")
    run(["tar", "--sort=name", "--numeric-owner", "--xattrs", "-C", source, "-cf", tar_path, *members])
    diff_id = sha256_file(tar_path)
    uncompressed = tar_path.stat().st_size
    with tar_path.open("rb") as raw, gzip.open(out, "wb", compresslevel=6, mtime=0) as packed:
        shutil.copyfileobj(raw, packed, 1 << 20)
    tar_path.unlink()
    return LayerFile(out, sha256_file(out), diff_id, out.stat().st_size, uncompressed)


def write_layout(layout: Path, layers: Sequence[LayerFile], tag: str) -> str:
    """An OCI layout holding one image made of `layers` (hardlinked into blobs/). Returns its digest."""
    blobs = fresh(layout) / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for layer in layers:
        os.link(layer.path, blobs / layer.digest)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/bash"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer.diff_id}" for layer in layers]},
    }, sort_keys=True).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    (blobs / config_hex).write_bytes(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{config_hex}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{layer.digest}", "size": layer.size} for layer in layers],
    }, sort_keys=True).encode()
    manifest_hex = hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_hex).write_bytes(manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{manifest_hex}", "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return f"sha256:{manifest_hex}"


def tree_stats(root: Path) -> tuple[int, int]:
    """(number of entries, bytes in regular files) under `root`, not following symlinks."""
    count = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        count += len(dirnames) + len(filenames)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                size += os.lstat(path).st_size
    return count, size
