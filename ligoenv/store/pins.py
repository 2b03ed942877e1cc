"""Pins: digests a publish root keeps whatever its garbage collection policy says.

`ligoenv-server pin LOCKFILE` pins every digest of a lockfile (each environment's top-level
digest and every platform's manifest), with who, when and why. Pins live in the publish root at
`.ligoenv/pins.json` (`schemas/pins.schema.json`), so a mirror of the root shows them too:

    {"schemaVersion": 1,
     "pins": {"sha256:<hex>": [{"label": "paper-3f2a9c1d", "by": "alice",
                                "at": "2026-03-01T12:00:00Z", "why": "GWTC-4 paper",
                                "reference": "registry/repo:tag@sha256:<hex>"}]}}

A digest stays pinned while any pin names it; `unpin` removes the pins of one label.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ligoenv.oci.digest import Digest
from ligoenv.store.errors import PublishIndexError

if TYPE_CHECKING:
    from ligoenv.store.lockfile import Lockfile

PINS_FILE = ".ligoenv/pins.json"
PINS_VERSION = 1
MAX_PINS_BYTES = 64 << 20


@dataclass(frozen=True)
class Pin:
    label: str  # what `unpin` names: by default the lockfile's name and a hash of its digests
    by: str
    at: datetime
    why: str
    reference: str  # the pinned reference, for people reading the file

    def to_json(self) -> dict[str, str]:
        from ligoenv.store.times import format_time

        return {"label": self.label, "by": self.by, "at": format_time(self.at), "why": self.why,
                "reference": self.reference}


@dataclass
class PinSet:
    """Every pin of one publish root, by digest."""

    pins: dict[str, list[Pin]] = field(default_factory=dict)

    def of(self, digest: Digest | str) -> list[Pin]:
        return list(self.pins.get(str(digest), []))

    def is_pinned(self, digest: Digest | str) -> bool:
        return bool(self.pins.get(str(digest)))

    def add(self, digest: Digest, pin: Pin) -> bool:
        """Pin `digest`; a pin with the same label is replaced. False when nothing changed."""
        kept = [p for p in self.pins.get(str(digest), []) if p.label != pin.label]
        old = self.pins.get(str(digest), [])
        self.pins[str(digest)] = sorted([*kept, pin], key=lambda p: (p.at, p.label))
        return self.pins[str(digest)] != old

    def remove(self, digest: Digest, label: str) -> bool:
        """Remove the pin of `label` on `digest`; False when there was none."""
        old = self.pins.get(str(digest), [])
        kept = [p for p in old if p.label != label]
        if kept:
            self.pins[str(digest)] = kept
        else:
            self.pins.pop(str(digest), None)
        return len(kept) != len(old)

    def to_json(self) -> dict[str, Any]:
        return {"schemaVersion": PINS_VERSION,
                "pins": {digest: [p.to_json() for p in pins]
                         for digest, pins in sorted(self.pins.items()) if pins}}

    def dumps(self) -> str:
        """Deterministic text: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


def parse_pins(text: str, what: str) -> PinSet:
    """A pins document; PublishIndexError names the bad field."""
    from ligoenv.store.times import parse_time

    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PublishIndexError(f"{what}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("schemaVersion") != PINS_VERSION:
        raise PublishIndexError(f"{what}: schemaVersion: expected {PINS_VERSION}")
    pins = data.get("pins")
    if not isinstance(pins, dict):
        raise PublishIndexError(f"{what}: pins: expected an object")
    out = PinSet()
    for key, items in pins.items():
        try:
            digest = Digest.parse(key)
            if not isinstance(items, list):
                raise TypeError
            out.pins[str(digest)] = [
                Pin(label=str(item["label"]), by=str(item["by"]), at=parse_time(str(item["at"])),
                    why=str(item["why"]), reference=str(item["reference"])) for item in items]
        except (KeyError, TypeError, ValueError, Exception) as error:
            raise PublishIndexError(f"{what}: pins.{key}: not a list of pins ({error})") from None
    return out


def load_pins(root: Path) -> PinSet:
    """The pins of the publish root at `root` (none when it has no pins file)."""
    path = root / PINS_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PINS_BYTES + 1)
    except FileNotFoundError:
        return PinSet()
    except OSError as error:
        raise PublishIndexError(f"cannot read pins {path}: {error.strerror}") from None
    if len(raw) > MAX_PINS_BYTES:
        raise PublishIndexError(f"{path} is larger than {MAX_PINS_BYTES} bytes: not a pins file")
    return parse_pins(raw.decode("utf-8", errors="replace"), str(path))


def read_pins(location: str) -> PinSet:
    """The pins at an index location: a publish root or CVMFS mount, or an HTTP mirror or
    server (`<url>/.ligoenv/pins.json`, read like its index files: bounded, whole or not at all)."""
    if location.startswith(("http://", "https://")):
        from ligoenv.store.index.files import HttpFiles

        url = f"{location.rstrip('/')}/{PINS_FILE}"
        body = HttpFiles(location).read(PINS_FILE, max_bytes=MAX_PINS_BYTES)
        return parse_pins(body.decode("utf-8", errors="replace"), url) if body else PinSet()
    return load_pins(Path(location.removeprefix("file://")).expanduser())


def lockfile_digests(lockfile: Lockfile) -> dict[Digest, str]:
    """Every digest a lockfile names (top-level and per platform), with the reference to show."""
    out: dict[Digest, str] = {}
    for _, env in sorted(lockfile.environments.items()):
        out.setdefault(env.digest, env.canonical)
        for platform, pin in sorted(env.platforms.items()):
            out.setdefault(pin.manifest, f"{env.registry}/{env.repository}@{pin.manifest} ({platform})")
    return out


def default_label(name: str, lockfile: Lockfile) -> str:
    """`<file stem>-<8 hex>`: the same lockfile gives the same label, so `unpin` finds its pins."""
    digests = sorted(str(d) for d in lockfile_digests(lockfile))
    stem = Path(name).stem or "lockfile"
    return f"{stem}-{hashlib.sha256(' '.join(digests).encode()).hexdigest()[:8]}"
