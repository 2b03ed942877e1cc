"""Which archives hold an environment: remembered in the user cache when one is written or restored.

`verify` and `cite` read them, so that an environment the registry has lost can be named as
still available from its archive. One small JSON file per top digest:
`<cache>/archives/<algorithm>/<hex>.json` = `{"archives": [{path, sha256, kind, platforms, at}]}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ligoenv.oci.atomicfile import write_atomic
from ligoenv.oci.digest import Digest


@dataclass(frozen=True)
class ArchiveRecord:
    path: str  # absolute
    sha256: str
    kind: str  # "written" | "restored"
    platforms: tuple[str, ...]
    at: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "kind": self.kind,
                "platforms": list(self.platforms), "at": self.at}


class ArchiveRecords:
    def __init__(self, root: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.root = Path(root)
        self.clock = clock

    def _file(self, digest: Digest) -> Path:
        return self.root / "archives" / digest.algorithm / f"{digest.hex}.json"

    def find(self, digest: Digest) -> list[ArchiveRecord]:
        """The archives known to hold `digest`, newest first; unreadable records are skipped."""
        try:
            data = json.loads(self._file(digest).read_text(encoding="utf-8"))
            entries = data["archives"]
            records = [ArchiveRecord(str(e["path"]), str(e["sha256"]), str(e["kind"]),
                                     tuple(str(p) for p in e.get("platforms", ())), str(e["at"]))
                       for e in entries]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return sorted(records, key=lambda r: r.at, reverse=True)

    def remember(self, digest: Digest, archive: Path, sha256: str, kind: str,
                 platforms: Sequence[str]) -> None:
        path = str(Path(archive).resolve())
        kept = [r for r in self.find(digest) if (r.path, r.kind) != (path, kind)]
        when = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        records = [ArchiveRecord(path, sha256, kind, tuple(platforms), when), *kept]
        target = self._file(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, json.dumps({"archives": [r.to_json() for r in records]},
                                        indent=2, sort_keys=True) + "\n")

    def available(self, digest: Digest) -> ArchiveRecord | None:
        """The newest record whose archive file is still where it was written or restored from."""
        return next((r for r in self.find(digest) if Path(r.path).is_file()), None)
