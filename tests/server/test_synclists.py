"""Image lists: OSG docker_images.txt and DUCC wishlists, and what a bad line does."""

from __future__ import annotations

from pathlib import Path

import pytest

from ligoenv.oci.errors import InvalidReference
from ligoenv.store.errors import ConfigError
from ligoenv_server.synclists import ListProblem, parse_entry, parse_osg, read_list

DIGEST = "sha256:" + "ab" * 32


def test_osg_list_lines_comments_and_docker_hub(tmp_path: Path) -> None:
    path = tmp_path / "docker_images.txt"
    path.write_text("# OSG images\n\nopensciencegrid/osgvo-el7:latest\n"
                    "  containers.ligo.org/lscsoft/lalsuite:nightly   # the nightly build\n"
                    "ubuntu\nhub.example.org:5000/lab/app:v1.*\n")
    listed = read_list(path, "osg")
    assert [str(e) for e in listed.entries] == [
        "docker.io/opensciencegrid/osgvo-el7:latest",
        "containers.ligo.org/lscsoft/lalsuite:nightly",
        "docker.io/library/ubuntu:latest",
        "hub.example.org:5000/lab/app:v1.*",
    ]
    assert [e.where for e in listed.entries] == ["docker_images.txt:3", "docker_images.txt:4",
                                                 "docker_images.txt:5", "docker_images.txt:6"]
    assert listed.problems == () and not listed.untag_missing


def test_bad_line_fails_alone() -> None:
    entries, problems = parse_osg("lab/app:v1\nLab/Bad:v1\nlab/app:v[12]\nlab/other:*\n", "list")
    assert [str(e) for e in entries] == ["docker.io/lab/app:v1", "docker.io/lab/other:*"]
    assert [p.where for p in problems] == ["list:2", "list:3"]
    assert "Lab/Bad" in problems[0].message


def test_pattern_matches_star_only() -> None:
    entry = parse_entry("lab/app:v1.*", "x")
    assert entry.is_pattern
    assert [t for t in ("v1.0", "v1.10-rc", "v1x0", "v2.0", "v1.") if entry.matches(t)] == \
        ["v1.0", "v1.10-rc", "v1."]
    assert parse_entry("lab/app:*", "x").matches("anything")
    assert not parse_entry("lab/app:v1", "x").is_pattern


def test_digest_pinned_entry_and_pattern_with_digest() -> None:
    entry = parse_entry(f"lab/app:v1@{DIGEST}", "x")
    assert str(entry.digest) == DIGEST and entry.tag == "v1"
    with pytest.raises(InvalidReference, match="no digest"):
        parse_entry(f"lab/app:v*@{DIGEST}", "x")


def test_ducc_wishlist(tmp_path: Path) -> None:
    path = tmp_path / "wishlist.yaml"
    path.write_text("version: 1\nuser: smosciat\ncvmfs_repo: unpacked.cern.ch\n"
                    "output_format: '$(scheme)://registry.gitlab.cern.ch/thin/$(image)'\n"
                    "input:\n"
                    "  - 'https://registry.hub.docker.com/library/fedora:latest'\n"
                    "  - 'https://registry.hub.docker.com/econtal/numpy-mkl:*'\n"
                    "  - 'http://127.0.0.1:5000/lab/app:v1'\n"
                    "  - 'ftp://example.org/lab/app:v1'\n"
                    "  - 42\n")
    listed = read_list(path, "ducc")
    assert [str(e) for e in listed.entries] == ["docker.io/library/fedora:latest",
                                                "docker.io/econtal/numpy-mkl:*",
                                                "127.0.0.1:5000/lab/app:v1"]
    assert [p.where for p in listed.problems] == ["wishlist.yaml:input[3]", "wishlist.yaml:input[4]"]


@pytest.mark.parametrize(("text", "message"), [
    ("version: 2\ninput: []\n", "only version 1"),
    ("version: 1\n", "input: expected a list"),
    ("- a\n- b\n", "a mapping"),
    ("version: 1\ninput: [\n", "not valid YAML"),
])
def test_unusable_wishlist_is_one_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "w.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_list(path, "w")


def test_format_can_be_forced_and_missing_file_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "wishes"
    path.write_text("version: 1\ninput: ['https://registry.hub.docker.com/library/debian:stable']\n")
    assert [str(e) for e in read_list(path, "w", format="ducc").entries] == \
        ["docker.io/library/debian:stable"]
    with pytest.raises(ConfigError, match="cannot read image list"):
        read_list(tmp_path / "nope.txt", "n")
    assert ListProblem("a", "b") == ListProblem("a", "b")
