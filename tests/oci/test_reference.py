"""Reference parsing: Docker's normalisation, strict errors with useful messages, round trips."""

from __future__ import annotations

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import InvalidReference
from ligoenv.oci.reference import Reference

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"

# text -> (registry, repository, tag, digest, canonical string)
VALID = {
    "ubuntu": ("docker.io", "library/ubuntu", "latest", None, "docker.io/library/ubuntu:latest"),
    "ubuntu:22.04": ("docker.io", "library/ubuntu", "22.04", None, "docker.io/library/ubuntu:22.04"),
    "library/ubuntu": ("docker.io", "library/ubuntu", "latest", None, "docker.io/library/ubuntu:latest"),
    "docker.io/ubuntu": ("docker.io", "library/ubuntu", "latest", None, "docker.io/library/ubuntu:latest"),
    "index.docker.io/library/ubuntu": ("docker.io", "library/ubuntu", "latest", None,
                                       "docker.io/library/ubuntu:latest"),
    "registry-1.docker.io/lscsoft/lalsuite": ("docker.io", "lscsoft/lalsuite", "latest", None,
                                              "docker.io/lscsoft/lalsuite:latest"),
    "lscsoft/lalsuite:nightly": ("docker.io", "lscsoft/lalsuite", "nightly", None,
                                 "docker.io/lscsoft/lalsuite:nightly"),
    "containers.ligo.org/lscsoft/lalsuite/lalsuite-v7:latest": (
        "containers.ligo.org", "lscsoft/lalsuite/lalsuite-v7", "latest", None,
        "containers.ligo.org/lscsoft/lalsuite/lalsuite-v7:latest"),
    "ghcr.io/org/app:1.0_rc-2": ("ghcr.io", "org/app", "1.0_rc-2", None, "ghcr.io/org/app:1.0_rc-2"),
    "localhost/app": ("localhost", "app", "latest", None, "localhost/app:latest"),
    "localhost:5000/app": ("localhost:5000", "app", "latest", None, "localhost:5000/app:latest"),
    "127.0.0.1:5000/a/b/c:t": ("127.0.0.1:5000", "a/b/c", "t", None, "127.0.0.1:5000/a/b/c:t"),
    "[::1]:5000/app": ("[::1]:5000", "app", "latest", None, "[::1]:5000/app:latest"),
    "Registry.Example.ORG/app": ("registry.example.org", "app", "latest", None,
                                 "registry.example.org/app:latest"),
    "localhost:5000": ("docker.io", "library/localhost", "5000", None, "docker.io/library/localhost:5000"),
    f"app@{DIGEST}": ("docker.io", "library/app", None, DIGEST, f"docker.io/library/app@{DIGEST}"),
    f"reg.org/app:v1@{DIGEST}": ("reg.org", "app", "v1", DIGEST, f"reg.org/app:v1@{DIGEST}"),
    "a.b-c.d/e_f": ("a.b-c.d", "e_f", "latest", None, "a.b-c.d/e_f:latest"),
    "a/b__c/d--e": ("docker.io", "a/b__c/d--e", "latest", None, "docker.io/a/b__c/d--e:latest"),
    "  ubuntu  ": ("docker.io", "library/ubuntu", "latest", None, "docker.io/library/ubuntu:latest"),
}

# text -> the message
INVALID = {
    "": "empty image reference",
    "   ": "empty image reference",
    "UPPER": "invalid reference 'UPPER': repository names must be lowercase",
    "reg.org/App": "invalid reference 'reg.org/App': repository names must be lowercase",
    "ubuntu:": "invalid reference 'ubuntu:': tag '' must be 1-128 characters",
    "ubuntu:-x": "invalid reference 'ubuntu:-x': tag '-x' must be 1-128 characters",
    "ubuntu:" + "x" * 129: "tag 'xxxx",
    "a//b": "invalid reference 'a//b': path component '' must be lowercase letters and digits",
    "a/-b": "path component '-b'",
    "a/b.": "path component 'b.'",
    "reg.org/": "invalid reference 'reg.org/': no repository name",
    "repo@sha256:abc": "invalid reference 'repo@sha256:abc': invalid digest 'sha256:abc': "
                       "sha256 needs 64 hex characters, got 3",
    f"repo@md5:{HEX[:32]}": "expected sha256: or sha512: followed by lowercase hex",
    f"repo@sha256:{HEX.upper()}": "expected sha256: or sha512: followed by lowercase hex",
    "bad_host!:5000/app": "invalid reference 'bad_host!:5000/app': bad registry host 'bad_host!:5000'",
    "a.b__c/d": "invalid reference 'a.b__c/d': bad registry host 'a.b__c'",
    "x/" + "a" * 260: "repository name longer than 255 characters",
    # `$` also matches before a final newline: every pattern must match the whole text
    f"foo:bar\n@sha256:{HEX}": "tag 'bar\\n' must be 1-128 characters",
    "reg.org\n/app": "bad registry host 'reg.org\\n'",
    "lab/app\n/x": "path component 'app\\n'",
}


@pytest.mark.parametrize("text", sorted(VALID))
def test_valid_references(text: str) -> None:
    registry, repository, tag, digest, canonical = VALID[text]
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert ref.digest == (Digest.parse(digest) if digest else None)
    assert str(ref) == canonical
    assert ref.original == text


@pytest.mark.parametrize("text", sorted(VALID))
def test_round_trip(text: str) -> None:
    ref = Reference.parse(text)
    again = Reference.parse(str(ref))
    assert again == ref and str(again) == str(ref)


@pytest.mark.parametrize("text", sorted(INVALID))
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        Reference.parse(text)
    assert INVALID[text] in str(caught.value)
    assert "\n" not in str(caught.value)


def test_docker_hub_api_host_and_name() -> None:
    ref = Reference.parse("ubuntu")
    assert ref.api_host == "registry-1.docker.io"
    assert ref.name == "docker.io/library/ubuntu"
    assert Reference.parse("ghcr.io/o/a").api_host == "ghcr.io"


def test_pinning() -> None:
    ref = Reference.parse("reg.org/app:v1")
    assert not ref.is_pinned and ref.reference == "v1"
    with pytest.raises(InvalidReference, match="is not pinned to a digest"):
        ref.pinned_str()
    pinned = ref.with_digest(Digest.parse(DIGEST))
    assert pinned.is_pinned and pinned.reference == DIGEST
    assert pinned.pinned_str() == f"reg.org/app@{DIGEST}"
    assert str(pinned) == f"reg.org/app:v1@{DIGEST}"
    assert str(pinned.with_tag(None)) == f"reg.org/app@{DIGEST}"


def test_original_is_for_display_not_equality() -> None:
    short, full = Reference.parse("ubuntu"), Reference.parse("docker.io/library/ubuntu:latest")
    assert short == full and hash(short) == hash(full)
    assert short.display() == "ubuntu"
    assert Reference("reg.org", "app", "v1").display() == "reg.org/app:v1"
