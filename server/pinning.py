"""Pinning a lockfile's digests in the publish root, from the command line or the pins API.

Pins are written under the publisher's exclusive hold (no publish or garbage collection runs
meanwhile) and, on CVMFS, in a transaction of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ligoenv.oci.atomicfile import write_atomic
from ligoenv.oci.digest import Digest
from ligoenv.store.errors import PublishIndexError
from ligoenv.store.lockfile import Lockfile
from ligoenv.store.pins import PINS_FILE, Pin, PinSet, default_label, load_pins, lockfile_digests
from ligoenv.store.schemas import validate

from .publishers.base import Publisher


@dataclass(frozen=True)
class PinChange:
    digest: Digest
    reference: str
    changed: bool  # False: already pinned so (pin), or not pinned under the label (unpin)


def pin(publisher: Publisher, lockfile: Lockfile, name: str, *, by: str, why: str, at: datetime,
        label: str | None = None) -> tuple[str, list[PinChange]]:
    """Pin every digest of `lockfile` (`name` is its file name, for the default label)."""
    label = label or default_label(name, lockfile)
    digests = lockfile_digests(lockfile)

    def change(pins: PinSet) -> list[PinChange]:
        return [PinChange(d, ref, pins.add(d, Pin(label, by, at, why, ref)))
                for d, ref in digests.items()]

    return label, _edit(publisher, change)


def unpin(publisher: Publisher, lockfile: Lockfile, name: str,
          label: str | None = None) -> tuple[str, list[PinChange]]:
    """Remove the pins of `label` (default: the lockfile's own) from the lockfile's digests."""
    label = label or default_label(name, lockfile)
    digests = lockfile_digests(lockfile)

    def change(pins: PinSet) -> list[PinChange]:
        return [PinChange(d, ref, pins.remove(d, label)) for d, ref in digests.items()]

    return label, _edit(publisher, change)


def _edit(publisher: Publisher, change: Callable[[PinSet], list[PinChange]]) -> list[PinChange]:
    root = publisher.layout.root
    with publisher.hold_publishes():
        trial = change(load_pins(root))  # on a copy first: no empty CVMFS transaction
        if not any(c.changed for c in trial):
            return trial
        with publisher.root_change():
            pins = load_pins(root)
            changes = change(pins)
            validate(pins.to_json(), "pins", PublishIndexError, f"refusing to write {PINS_FILE}")
            (root / PINS_FILE).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(root / PINS_FILE, pins.dumps())
    return changes
