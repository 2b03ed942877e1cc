"""The digest manifest index: per repository, every tag's history and every published digest.

Cut by concept: `model` (values, answers, the tag-history rule), `codec` (JSON of both
versions), `paths` (where each file lives), `files` (fetching them from a directory or a
URL), `reader` (answers from the few files needed), `writer` (the files a change writes),
`migrate` (version 1 to version 2). The layout is described in docs/index-layout.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.store.index.model import (
    PUSH,
    UNTAG,
    DigestRecord,
    RepositoryIndex,
    RepositoryView,
    TagEvent,
    manifest_record,
)

if TYPE_CHECKING:
    from ligoenv.store.index.reader import IndexReader

__all__ = ["PUSH", "UNTAG", "DigestRecord", "RepositoryIndex", "RepositoryView", "TagEvent",
           "manifest_record", "open_index_reader"]


def open_index_reader(location: str | Path) -> IndexReader:
    """A reader for a local directory (publish root, CVMFS mount) or an http(s) URL."""
    from ligoenv.store.index.reader import open_reader

    return open_reader(location)
