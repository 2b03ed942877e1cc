"""Where each index file lives, relative to a publish root (the same under a URL).

Version 2 keeps one directory per repository under `.ligoenv/index/_v2/<registry>/`; our own
names start with `_`, which no registry host, repository component or (inside `_tags/`) tag
can make collide with ours, so `lab/app` and `lab/app/x` or `lab/app.json/x` coexist:

    _v2/<registry>/<repository>/_repository.json               the repository is in version 2
    _v2/<registry>/<repository>/_tags/<tag>/current.json        the tag's current pointer
    _v2/<registry>/<repository>/_tags/<tag>/history/<n>.json    history segment n (8 digits)
    _v2/<registry>/<repository>/_digests/<algo>/<xx>/<hex>.json  one digest's record, immutable

Version 1 was one file per repository: `.ligoenv/index/<registry>/<repository>.json`.
"""

from __future__ import annotations

from ligoenv.oci.digest import Digest
from ligoenv.store.publishroot import check_name

INDEX_DIR = ".ligoenv/index"
V2_DIR = f"{INDEX_DIR}/_v2"
LOCKS_DIR = ".ligoenv/locks"
SEGMENT_EVENTS = 128  # events per history segment: a segment stays near 20 KiB


def v1_file(registry: str, repository: str) -> str:
    check_name(registry, repository, None)
    return f"{INDEX_DIR}/{registry}/{repository}.json"


def repository_dir(registry: str, repository: str) -> str:
    # Always with the registry host: two registries may hold the same repository name.
    check_name(registry, repository, None)
    return f"{V2_DIR}/{registry}/{repository}"


def marker_file(registry: str, repository: str) -> str:
    return f"{repository_dir(registry, repository)}/_repository.json"


def tags_dir(registry: str, repository: str) -> str:
    return f"{repository_dir(registry, repository)}/_tags"


def pointer_file(registry: str, repository: str, tag: str) -> str:
    check_name(registry, repository, tag)
    return f"{tags_dir(registry, repository)}/{tag}/current.json"


def segment_file(registry: str, repository: str, tag: str, number: int) -> str:
    check_name(registry, repository, tag)
    return f"{tags_dir(registry, repository)}/{tag}/history/{number:08d}.json"


def record_file(registry: str, repository: str, digest: Digest) -> str:
    return (f"{repository_dir(registry, repository)}/_digests/{digest.algorithm}/"
            f"{digest.hex[:2]}/{digest.hex}.json")


PUBLISHERS_LOCK = f"{LOCKS_DIR}/_publishers"  # held shared by every live directory publisher


def lock_file(registry: str, repository: str) -> str:
    """The publishers' lock of one repository: `_lock` cannot be a repository component."""
    check_name(registry, repository, None)
    return f"{LOCKS_DIR}/{registry}/{repository}/_lock"


def kind_of(relative: str) -> str | None:
    """"repository", "tag", "history" or "record" for a version-2 file's path, else None.

    Read from the end of the path: a repository or tag name may itself contain `history` or
    (a tag) start with `_`, but never sits where our own names do.
    """
    parts = relative.split("/")
    if parts[-1] == "_repository.json":
        return "repository"
    if len(parts) >= 3 and parts[-3] == "_tags" and parts[-1] == "current.json":
        return "tag"
    if len(parts) >= 4 and parts[-4] == "_tags" and parts[-2] == "history":
        return "history"
    if len(parts) >= 4 and parts[-4] == "_digests":
        return "record"
    return None


def is_immutable(relative: str) -> bool:
    """True for files that never change once written (digest records): cacheable for long."""
    return relative.startswith(f"{V2_DIR}/") and kind_of(relative) == "record"
