"""Shared helpers for the benchmarks: timing, percentiles, generated layer files, image documents
and layouts."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import tarfile
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


def measured_process(cmd: Sequence[str | Path],
                     env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one command, the CPU and RSS from GNU time.

    Not from wait4(): a child's ru_maxrss counts what it held between fork and exec, which is
    the whole benchmark process when that has just generated a multi-gigabyte image.
    """
    report = Path(os.environ.get("TMPDIR", "/tmp")) / f"ligoenv-bench-time-{os.getpid()}.txt"
    start = time.perf_counter()
    try:
        run(["/usr/bin/time", "-f", "%U %S %M", "-o", report, *cmd], env=env, stdout=subprocess.DEVNULL)
        user, system, rss_kb = report.read_text().split()[-3:]
    finally:
        report.unlink(missing_ok=True)
    return time.perf_counter() - start, float(user) + float(system), int(rss_kb) / 1024


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
    with tar_path.open("rb") as raw, out.open("wb") as sink, \
            gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as packed:
        shutil.copyfileobj(raw, packed, 1 << 20)
    tar_path.unlink()
    return LayerFile(out, sha256_file(out), diff_id, out.stat().st_size, uncompressed)


def image_blobs(layers: Sequence[LayerFile], cmd: Sequence[str] = ("/bin/bash",)) -> tuple[bytes, bytes]:
    """(config, manifest) of an OCI image made of `layers`, as the bytes to store or push."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": list(cmd)},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer.diff_id}" for layer in layers]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{hashlib.sha256(config).hexdigest()}", "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{layer.digest}", "size": layer.size} for layer in layers],
    }, sort_keys=True).encode()
    return config, manifest


def write_layout(layout: Path, layers: Sequence[LayerFile], tag: str) -> str:
    """An OCI layout holding one image made of `layers` (hardlinked into blobs/). Returns its digest."""
    blobs = fresh(layout) / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for layer in layers:
        os.link(layer.path, blobs / layer.digest)
    config, manifest = image_blobs(layers)
    (blobs / hashlib.sha256(config).hexdigest()).write_bytes(config)
    manifest_hex = hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_hex).write_bytes(manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{manifest_hex}", "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return f"sha256:{manifest_hex}"


class _HashingSink:
    """A write-only stream that hashes and counts the bytes it passes on to `target`."""

    def __init__(self, target: object) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.target.write(data)  # type: ignore[attr-defined]
        return len(data)

    def flush(self) -> None:
        pass


_WORDS = [f"strain{i}" for i in range(5000)]
_BLOCK = 256 << 10


def generated_layer(out: Path, seed: int, size: int, top: str,
                    extra: dict[str, bytes] | None = None) -> LayerFile:
    """A gzip layer of about `size` uncompressed bytes under `top/`, the same for the same `seed`.

    Many small text files plus 4 MiB files of alternating random and text blocks (compresses
    to about 2/3); then `extra` (path -> content). Streamed through gzip level 1 (level 6 on
    random data takes minutes for a 300 MB image), hashing the tar and the blob on the way.
    """
    rng = random.Random(seed)
    pool = " ".join(rng.choices(_WORDS, k=200_000)).encode()
    with out.open("wb") as raw:
        blob = _HashingSink(raw)
        with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=1, mtime=0) as packed:
            tar_stream = _HashingSink(packed)
            with tarfile.open(fileobj=tar_stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for name, data in [*_generated_files(rng, pool, size, top), *(extra or {}).items()]:
                    _add(tar, name, data)
    return LayerFile(out, blob.sha.hexdigest(), tar_stream.sha.hexdigest(), blob.size, tar_stream.size)


def _generated_files(rng: random.Random, pool: bytes, size: int, top: str) -> list[tuple[str, bytes | None]]:
    """(path, content) in tar order; None makes a directory."""
    small = max(20, size // 100_000)
    files: list[tuple[str, bytes | None]] = [(top, None), (f"{top}/share", None), (f"{top}/data", None)]
    files += [(f"{top}/share/d{d:02d}", None) for d in range(20)]
    left = size
    for i in range(small):
        length = rng.randint(1_000, 16_000)
        start = rng.randrange(len(pool) - length)
        files.append((f"{top}/share/d{i % 20:02d}/file{i:05d}.txt", pool[start:start + length]))
        left -= length
    for i in range(max(1, -(-left // (4 << 20)))):
        files.append((f"{top}/data/frame{i:03d}.gwf", _mixed(rng, pool, min(4 << 20, max(left, _BLOCK)))))
        left -= 4 << 20
    return files


def _mixed(rng: random.Random, pool: bytes, length: int) -> bytes:
    blocks = []
    for j in range(-(-length // _BLOCK)):
        if j % 2:
            start = rng.randrange(len(pool) - _BLOCK)
            blocks.append(pool[start:start + _BLOCK])
        else:
            blocks.append(rng.randbytes(_BLOCK))
    return b"".join(blocks)[:length]


def _add(tar: tarfile.TarFile, name: str, data: bytes | None, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid = 1_700_000_000, 0, 0
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, name: str, kind: bytes, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.mode = 1_700_000_000, 0, 0, 0o777
    info.type, info.linkname = kind, target
    tar.addfile(info)


def conda_layer(out: Path, seed: int = 11, files: int = 100_000, size: int = 273_000_000) -> LayerFile:
    """A gzip layer shaped like a conda environment: `files` regular files (about `size` bytes
    in all) in site-packages trees of 20-60 modules per directory with their __pycache__, a
    lib/ of shared objects with their version symlinks, and some hard links.

    Mostly small text files (a few kB), 1% large binaries carrying a third of the bytes: the
    per-entry cost, not the byte rate, decides how fast it unpacks.
    """
    rng = random.Random(seed)
    pool = " ".join(rng.choices(_WORDS, k=400_000)).encode()
    big_count = files // 100
    big_each = size // 3 // big_count
    small_each = (size - big_count * big_each) // (files - big_count)
    root = "opt/conda"
    with out.open("wb") as raw:
        blob = _HashingSink(raw)
        with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=6, mtime=0) as packed:
            tar_stream = _HashingSink(packed)
            with tarfile.open(fileobj=tar_stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for sub in ("", "/bin", "/lib", "/lib/python3.11", "/lib/python3.11/site-packages"):
                    _add(tar, root + sub, None)
                for i in range(big_count):  # lib/: shared objects and their symlinks
                    name = f"{root}/lib/libpkg{i:04d}.so"
                    _add(tar, f"{name}.{i % 7}.{i % 3}", _mixed(rng, pool, big_each), 0o755)
                    _add_link(tar, f"{name}.{i % 7}", tarfile.SYMTYPE, f"libpkg{i:04d}.so.{i % 7}.{i % 3}")
                    _add_link(tar, name, tarfile.SYMTYPE, f"libpkg{i:04d}.so.{i % 7}")
                site, left, made = f"{root}/lib/python3.11/site-packages", files - big_count, 0
                while made < left:
                    package = f"{site}/package_{made // 400:03d}_{rng.choice(_WORDS)}"
                    _add(tar, package, None)
                    for sub in range(rng.randint(1, 8)):
                        where = f"{package}/submodule_{sub:02d}" if sub else package
                        if sub:
                            _add(tar, where, None)
                        modules = min(rng.randint(10, 30), (left - made) // 2 + 1)
                        _add(tar, f"{where}/__pycache__", None)
                        names = [f"module_{rng.choice(_WORDS)}_{m:02d}" for m in range(modules)]
                        for name in names:
                            length = max(64, int(rng.lognormvariate(0, 0.8) * small_each / 1.38))
                            start = rng.randrange(len(pool) - length)
                            _add(tar, f"{where}/{name}.py", pool[start:start + length])
                            if made % 97 == 0:  # conda keeps some files as hard links of others
                                _add_link(tar, f"{where}/{name}_alias.py", tarfile.LNKTYPE,
                                          f"{where}/{name}.py")
                            made += 1
                        for name in names:
                            if made >= left:
                                break
                            length = max(64, int(rng.lognormvariate(0, 0.8) * small_each / 1.38))
                            _add(tar, f"{where}/__pycache__/{name}.cpython-311.pyc",
                                 rng.randbytes(length // 4) + pool[:length - length // 4])
                            made += 1
    return LayerFile(out, blob.sha.hexdigest(), tar_stream.sha.hexdigest(), blob.size, tar_stream.size)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The `fraction` (0..1) percentile, by linear interpolation between the closest ranks."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


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
