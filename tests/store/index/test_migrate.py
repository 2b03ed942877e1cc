"""Version 1 to version 2, in place: same answers after, resumable, a no-op when done."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ligoenv.store.errors import PublishIndexError
from ligoenv.store.index import paths
from ligoenv.store.index.files import LocalFiles
from ligoenv.store.index.migrate import migrate_root, version_1_files
from ligoenv.store.index.reader import load_repository, open_reader
from ligoenv.store.index.writer import convert
from testbed.indexfiles import REGISTRY, REPOSITORY, read_index, sample, save_v1, snapshot

OLD_ROOT = Path(__file__).resolve().parents[2] / "data" / "index-v1"


def old_root(tmp_path: Path) -> Path:
    """A root whose index was written by ligoenv before version 2 (tests/data/index-v1)."""
    root = tmp_path / "root"
    shutil.copytree(OLD_ROOT, root / paths.INDEX_DIR, ignore=shutil.ignore_patterns("*.md"))
    return root


def test_a_root_written_by_the_old_code_answers_the_same_after_migration(tmp_path: Path) -> None:
    root = old_root(tmp_path)
    names = [(registry, repository) for registry, repository, _ in version_1_files(root)]
    assert names == [(REGISTRY, "lab/app.json/x"), (REGISTRY, REPOSITORY)]
    before = {name: load_repository(LocalFiles(root), *name) for name in names}
    old_lock = root / paths.LOCKS_DIR / REGISTRY / f"{REPOSITORY}.lock"  # where version 1 locked
    old_lock.parent.mkdir(parents=True)
    old_lock.touch()
    done = migrate_root(root)
    assert not old_lock.exists()  # it would block the lock of a repository `lvk/lalsuite.lock/x`
    assert done.converted == [f"{r}/{n}" for r, n in names] and done.already == []
    assert list(version_1_files(root)) == []
    assert sorted(p.name for p in (root / paths.INDEX_DIR).iterdir()) == ["_v2"]  # old dirs gone
    for name in names:
        after = read_index(root, *name)  # each file valid against its schema
        assert after is not None and after.tags == before[name].tags  # type: ignore[union-attr]
        assert after.digests == before[name].digests  # type: ignore[union-attr]
    repo = open_reader(root).get(REGISTRY, REPOSITORY)
    assert repo.legacy() is None and repo.current("old") is None and repo.has_tag("old")
    again = snapshot(root)
    assert migrate_root(root).converted == [] and snapshot(root) == again  # a no-op


def test_an_interrupted_migration_is_resumed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    save_v1(root, sample())
    half = convert(root, sample())
    half.writes = half.writes[: len(half.writes) // 2]  # stopped before the marker
    half.apply(validate=False)
    assert open_reader(root).get(REGISTRY, REPOSITORY).legacy() is not None  # still version 1
    assert migrate_root(root).converted == [f"{REGISTRY}/{REPOSITORY}"]
    after = read_index(root, REGISTRY, REPOSITORY)
    assert after is not None and after.tags == sample().tags and after.digests == sample().digests


def test_a_repository_converted_by_a_publish_only_loses_its_old_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    convert(root, sample()).apply()
    stale = save_v1(root, sample())
    done = migrate_root(root)
    assert done.already == [f"{REGISTRY}/{REPOSITORY}"] and not stale.exists()


def test_a_file_under_another_repository_name_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = save_v1(root, sample())
    copy = path.with_name("copy.json")
    shutil.copy(path, copy)
    path.unlink()
    with pytest.raises(PublishIndexError, match=r"describes .*lvk/lalsuite, not .*lvk/copy"):
        migrate_root(root)
    assert copy.exists()
