"""Provenance inside a tree: labels.json and /.ligoenv/provenance.json, written safely, read warily."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ligoenv import __version__
from ligoenv.oci.digest import Digest
from ligoenv.oci.reference import Reference
from ligoenv.store.completion import LABELS, complete_tree
from ligoenv.store.provenance import PROVENANCE_FILE, Provenance, read_provenance
from testbed.clientkit import Cli, Pushed, write_index
from testbed.images import build_busybox_image, unpack_image

TOP = Digest.of_bytes(b"index")
MANIFEST = Digest.of_bytes(b"manifest")
WHEN = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)


def provenance() -> Provenance:
    ref = Reference.parse(f"registry.example.org:5000/lvk/lalsuite:nightly@{TOP}")
    return Provenance.of(ref, MANIFEST, "linux/amd64", WHEN)


def test_what_a_tree_says_about_itself(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    image = build_busybox_image("prov", cmd=("/bin/sh",))
    made = complete_tree(tree, unpack_image(image, tree), bind_points=("/gpfs",),
                         provenance=provenance())
    expected = {
        "reference": "registry.example.org:5000/lvk/lalsuite:nightly",
        "registry": "registry.example.org:5000", "repository": "lvk/lalsuite", "tag": "nightly",
        "digest": str(TOP), "manifest": str(MANIFEST), "platform": "linux/amd64",
        "published": "2026-03-01T12:00:05Z", "version": __version__,
    }
    assert read_provenance(tree) == {"format": 1, **expected, "bind_points": list(made)}
    labels = json.loads((tree / LABELS).read_text())
    assert labels == {"org.opencontainers.image.version": "prov",  # the image's own label is kept
                      **{f"org.ligoenv.{name}": value for name, value in expected.items()}}
    assert oct(os.stat(tree / PROVENANCE_FILE).st_mode & 0o777) == "0o644"


def test_a_single_manifest_has_no_separate_digest() -> None:
    ref = Reference.parse(f"docker.io/library/busybox@{MANIFEST}")
    fields = Provenance.of(ref, MANIFEST, "linux/arm64", WHEN).fields()
    assert fields["reference"] == f"docker.io/library/busybox@{MANIFEST}"
    assert "digest" not in fields and "tag" not in fields


def test_an_image_symlink_at_dot_ligoenv_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    config = unpack_image(build_busybox_image("prov"), tree)
    (tree / ".ligoenv").symlink_to(str(outside))
    complete_tree(tree, config, provenance=provenance())
    assert list(outside.iterdir()) == []
    assert not (tree / ".ligoenv").is_symlink() and read_provenance(tree) is not None


@pytest.mark.parametrize("kind", ["symlink", "fifo", "huge", "not-json", "other-format", "missing"])
def test_only_our_own_file_is_read(tmp_path: Path, kind: str) -> None:
    tree = tmp_path / "tree"
    (tree / ".ligoenv").mkdir(parents=True)
    path = tree / PROVENANCE_FILE
    secret = tmp_path / "secret.json"
    secret.write_text('{"format": 1, "stolen": true}')
    if kind == "symlink":
        path.symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(path)  # opening it must not hang
    elif kind == "huge":
        path.write_text(json.dumps({"format": 1, "pad": "x" * 70_000}))
    elif kind == "not-json":
        path.write_bytes(b"\xff{")
    elif kind == "other-format":
        path.write_text('{"format": 2}')
    assert read_provenance(tree) is None


def test_a_pulled_tree_says_where_it_came_from_and_path_json_shows_it(
        cli: Cli, images: dict[str, Pushed], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = images["old"]
    root = tmp_path / "root"
    tree = root / ".images" / old.digest.hex[:2] / old.digest.hex
    before = datetime.now(UTC).replace(microsecond=0)
    assert cli("pull", "--output", str(tree), old.ref) == 0  # a real tree, as a publisher makes it
    write_index(root, old, [(old.digest, WHEN)])
    capsys.readouterr()
    assert cli("path", "--json", "--index", str(root), old.ref) == 0
    report = json.loads(capsys.readouterr().out)
    provenance = report.pop("provenance")
    assert report == {"path": str(tree), "reference": f"{old.ref}@{old.digest}", "digest": str(old.digest),
                      "manifest": str(old.digest), "platform": "linux/amd64", "link": None,
                      "bind_points": ["/cvmfs", "/srv", "/hdfs", "/gpfs", "/dev", "/proc", "/sys",
                                      "/tmp", "/var/tmp", "/home"]}
    assert before <= datetime.fromisoformat(provenance.pop("published")) <= datetime.now(UTC)
    assert provenance == {"format": 1, "reference": old.ref, "registry": old.registry,
                          "repository": old.repository, "tag": old.tag, "manifest": str(old.digest),
                          "platform": "linux/amd64", "version": __version__,
                          "bind_points": report["bind_points"]}
    labels = json.loads((tree / LABELS).read_text())
    assert labels["org.ligoenv.manifest"] == str(old.digest)
    assert labels["org.opencontainers.image.version"] == "old"  # the image's own


def test_path_json_falls_back_to_the_index_record_for_bind_points(
        cli: Cli, images: dict[str, Pushed], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tree without a provenance file (published before there was one) has its index record."""
    from dataclasses import replace

    from ligoenv.store.index import RepositoryIndex
    from ligoenv.store.index.writer import convert
    from ligoenv.store.publishroot import PublishRoot
    from testbed.clientkit import records

    old = images["old"]
    root = tmp_path / "root"
    index = RepositoryIndex.empty(old.registry, old.repository)
    for record in records(old, PublishRoot(root), WHEN):
        index.record_image(replace(record, bind_points=("/cvmfs", "/lustre")))
        (root / str(record.path)).mkdir(parents=True)
    index.move_tag(old.tag, old.digest, WHEN, "webhook:test")
    convert(root, index).apply()
    assert cli("path", "--json", "--index", str(root), old.ref) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["bind_points"], report["provenance"]) == (["/cvmfs", "/lustre"], None)
