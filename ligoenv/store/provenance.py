"""Where a published or pulled tree came from, written inside the tree itself.

An Apptainer user who has only the tree (or a SIF built from it) can tell which registry digest
it is: the same facts go into `/.singularity.d/labels.json` (what `apptainer inspect` shows) and
into `/.ligoenv/provenance.json` (what `ligoenv path --json` shows). `.ligoenv/` at a tree's root
is ours: completing a tree replaces whatever an image had there, never writing through it.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.oci.reference import Reference
from ligoenv.oci.version import __version__

PROVENANCE_FILE = ".ligoenv/provenance.json"
FORMAT = 1
LABEL_PREFIX = "org.ligoenv."
MAX_FILE_BYTES = 64 * 1024  # ours is a few hundred bytes: anything bigger is not ours


@dataclass(frozen=True)
class Provenance:
    """One tree's origin: the reference asked for, the digests it resolved to, when and by what."""

    reference: str  # canonical, by tag when there was one: `registry.example.org/lvk/lalsuite:nightly`
    registry: str
    repository: str
    manifest: Digest  # this platform's manifest: the tree is its unpacked image
    platform: str
    published: datetime
    tag: str | None = None
    digest: Digest | None = None  # the top-level digest (an index's), when it is not `manifest`
    version: str = __version__  # ligoenv's

    @classmethod
    def of(cls, ref: Reference, manifest: Digest, platform: str, when: datetime) -> Provenance:
        """For `ref` (its digest, when pinned, is the top-level one) and one platform's tree."""
        top = ref.digest if ref.digest is not None and ref.digest != manifest else None
        text = f"{ref.name}:{ref.tag}" if ref.tag else f"{ref.name}@{ref.digest or manifest}"
        return cls(reference=text, registry=ref.registry,
                   repository=ref.repository, manifest=manifest, platform=platform,
                   published=when, tag=ref.tag, digest=top)

    def fields(self) -> dict[str, str]:
        """Name -> text of every known field, in a fixed order."""
        from ligoenv.store.times import format_time

        out = {"reference": self.reference, "registry": self.registry,
               "repository": self.repository, "manifest": str(self.manifest),
               "platform": self.platform, "published": format_time(self.published),
               "version": self.version}
        if self.tag:
            out["tag"] = self.tag
        if self.digest is not None:
            out["digest"] = str(self.digest)
        return out

    def labels(self) -> dict[str, str]:
        """Labels for labels.json. No OCI annotation key means these things (its
        `org.opencontainers.image.source` is the URL of the image's source code, which images set
        themselves), so they have their own names and never replace an image's label."""
        return {f"{LABEL_PREFIX}{name}": value for name, value in self.fields().items()}

    def file_json(self, bind_points: tuple[str, ...]) -> str:
        document: dict[str, Any] = {"format": FORMAT, **self.fields(), "bind_points": list(bind_points)}
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def read_provenance(tree: Path) -> dict[str, Any] | None:
    """The provenance file of `tree` as written, or None when it has none (or not one of ours).

    Opened without following a symlink, and capped: a tree's content is not trusted here.
    """
    try:
        directory = os.open(tree / ".ligoenv", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        # O_NONBLOCK: a fifo of that name must not hang the reader
        fd = os.open("provenance.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    except OSError:
        return None
    finally:
        os.close(directory)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = handle.read(MAX_FILE_BYTES + 1)
    try:
        data = json.loads(raw) if len(raw) <= MAX_FILE_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None
