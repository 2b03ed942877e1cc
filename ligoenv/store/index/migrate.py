"""Converting a publish root's index from version 1 (one file per repository) to version 2.

Per repository: every version-2 file is written, the marker last (the commit point: readers
use version 2 from then on), then the version-1 file is removed. A run that stops half way is
resumed by running again; a repository already converted (by a publish, or an earlier run)
only loses its stale version-1 file; a root with nothing left to convert is not touched.
The caller makes sure no publisher writes meanwhile (`ligoenv-server index migrate`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ligoenv.oci.atomicfile import fsync_dir
from ligoenv.store.errors import PublishIndexError
from ligoenv.store.index import paths
from ligoenv.store.index.codec import IndexParser, loads
from ligoenv.store.index.files import V1_FILE_BYTES, LocalFiles
from ligoenv.store.index.reader import StoredRepository
from ligoenv.store.index.writer import convert


@dataclass
class Migration:
    """What a run did, repository by repository (`registry/repository`)."""

    converted: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # in version 2 already: old file removed
    bytes_written: int = 0


def version_1_files(root: Path) -> Iterator[tuple[str, str, Path]]:
    """(registry, repository, path) of every version-1 index file under `root`, sorted."""
    base = root / paths.INDEX_DIR
    if not base.is_dir():
        return
    for registry in sorted(os.listdir(base)):
        if registry.startswith(("_", ".")) or not (base / registry).is_dir():
            continue
        for path in sorted((base / registry).rglob("*.json")):
            if path.is_file() and not path.name.startswith("."):
                yield registry, str(path.relative_to(base / registry))[: -len(".json")], path


def migrate_root(root: Path, log: Callable[[str], None] = lambda _: None) -> Migration:
    """Convert every version-1 repository index under publish root `root`."""
    done = Migration()
    for registry, repository, path in version_1_files(root):
        name = f"{registry}/{repository}"
        stored = StoredRepository(LocalFiles(root), registry, repository)
        if stored.exists and stored.legacy() is None:
            done.already.append(name)
            log(f"{name}: already in version 2; removing {path.relative_to(root)}")
        else:
            index = IndexParser(str(path)).index(loads(_read(path), str(path)))
            if (index.registry, index.repository) != (registry, repository):
                raise PublishIndexError(f"{path} describes {index.name}, not {name}: move it "
                                        "to its own path or remove it, then migrate again")
            change = convert(root, index)
            change.apply()
            done.converted.append(name)
            done.bytes_written += change.size
            log(f"{name}: {len(index.tags)} tags, {len(index.digests)} digests converted")
        path.unlink()
        _remove_empty_parents(path.parent, root / paths.INDEX_DIR)
    _remove_old_locks(root)
    return done


def _remove_old_locks(root: Path) -> None:
    """Version 1 locked `<repository>.lock` files beside repository directories: a file
    `lab/app.lock` would block the lock directory of a repository `lab/app.lock/x`."""
    locks = root / paths.LOCKS_DIR
    for path in sorted(locks.rglob("*.lock")) if locks.is_dir() else []:
        if path.is_file() and not path.is_symlink():
            path.unlink()


def _read(path: Path) -> bytes:
    data = LocalFiles(path.parent).read(path.name, V1_FILE_BYTES)
    if data is None:
        raise PublishIndexError(f"{path} disappeared while migrating: is a publisher running?")
    return data


def _remove_empty_parents(directory: Path, stop: Path) -> None:
    """Remove `directory` and its parents up to `stop` while they are empty (old layout dirs)."""
    while directory != stop and directory.is_relative_to(stop):
        try:
            directory.rmdir()
        except OSError:
            break  # not empty: it holds other repositories
        directory = directory.parent
    fsync_dir(directory if directory.exists() else stop)
