"""Digests and the VerifyingReader: exact, short, long and wrong streams."""

from __future__ import annotations

import hashlib
import io

import pytest

from ligoenv.oci.digest import Digest, VerifyingReader, chain_ids
from ligoenv.oci.errors import DigestMismatch, InvalidReference

DATA = b"gravitational waves\n" * 1000
GOOD = Digest.of_bytes(DATA)


def test_parse_and_str() -> None:
    text = "sha256:" + hashlib.sha256(b"x").hexdigest()
    digest = Digest.parse(text)
    assert (digest.algorithm, str(digest)) == ("sha256", text)
    assert digest.short == text[:19]
    sha512 = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert str(Digest.parse(sha512)) == sha512


@pytest.mark.parametrize(("text", "message"), [
    ("sha256:abc", "sha256 needs 64 hex characters, got 3"),
    ("sha512:" + "a" * 64, "sha512 needs 128 hex characters, got 64"),
    ("sha256:" + "A" * 64, "expected sha256: or sha512: followed by lowercase hex"),
    ("md5:" + "a" * 32, "expected sha256: or sha512:"),
    ("a" * 64, "expected sha256: or sha512:"),
    ("", "expected sha256: or sha512:"),
    ("sha256:" + "a" * 64 + "\n", "expected sha256: or sha512: followed by lowercase hex"),
])
def test_invalid_digests(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        Digest.parse(text)


def test_of_bytes_and_verify_bytes() -> None:
    assert GOOD.hex == hashlib.sha256(DATA).hexdigest()
    assert Digest.of_bytes(DATA, "sha512").hex == hashlib.sha512(DATA).hexdigest()
    GOOD.verify_bytes(DATA)
    with pytest.raises(DigestMismatch, match=f"config: expected {GOOD}, got sha256:"):
        GOOD.verify_bytes(DATA + b"!", "config")


def reader(data: bytes, digest: Digest = GOOD, size: int | None = len(DATA)) -> VerifyingReader:
    return VerifyingReader(io.BytesIO(data), digest, size, "blob x")


def test_exact_stream_verifies() -> None:
    r = reader(DATA)
    parts = []
    while chunk := r.read(777):
        parts.append(chunk)
    assert b"".join(parts) == DATA
    assert r.verified and r.bytes_read == len(DATA)
    assert r.read(10) == b""


def test_read_all_and_drain_verify() -> None:
    assert reader(DATA).read() == DATA
    r = reader(DATA)
    r.read(5)
    assert r.drain() == len(DATA) and r.verified


def test_readinto() -> None:
    r = reader(DATA)
    buffer = bytearray(len(DATA) + 10)
    assert r.readinto(buffer) == len(DATA)
    assert bytes(buffer[: len(DATA)]) == DATA
    assert r.readinto(buffer) == 0 and r.verified


def test_short_stream_is_refused() -> None:
    with pytest.raises(DigestMismatch, match=f"blob x: stream ended after 100 of {len(DATA)} bytes"):
        reader(DATA[:100]).drain()


def test_long_stream_is_refused_without_reading_on() -> None:
    with pytest.raises(DigestMismatch, match=f"blob x: more than the declared {len(DATA)} bytes"):
        reader(DATA + b"extra").drain()


def test_wrong_content_of_the_right_size_is_refused() -> None:
    tampered = b"G" + DATA[1:]
    with pytest.raises(DigestMismatch, match=f"blob x: expected {GOOD}, got sha256:"):
        reader(tampered).read()


def test_unknown_size_checks_the_digest_only() -> None:
    assert reader(DATA, size=None).drain() == len(DATA)
    with pytest.raises(DigestMismatch):
        reader(DATA[:-1], size=None).drain()


def test_sha512_reader() -> None:
    digest = Digest.of_bytes(DATA, "sha512")
    assert reader(DATA, digest).read() == DATA


def test_chain_ids_follow_the_oci_definition() -> None:
    a, b, c = (Digest.of_bytes(x) for x in (b"a", b"b", b"c"))
    ab = Digest("sha256", hashlib.sha256(f"{a} {b}".encode()).hexdigest())
    abc = Digest("sha256", hashlib.sha256(f"{ab} {c}".encode()).hexdigest())
    assert chain_ids([a, b, c]) == [a, ab, abc]
    assert chain_ids([]) == [] and chain_ids([b])[0] == b
