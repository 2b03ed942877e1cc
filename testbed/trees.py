"""Facts of an unpacked tree that must not change once it is published (chains share inodes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any


def frozen_facts(root: Path) -> dict[str, Any]:
    """Per path: type and mode, owner, size, mtime, content or link target, extended attributes;
    plus the tree's hardlink groups. Not the link counts or ctimes: cloning a tree with hard
    links changes those of every file it shares, by design."""
    facts: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for path in sorted([root, *root.rglob("*")]):
        name = str(path.relative_to(root))
        info = path.lstat()
        kind = stat.S_IFMT(info.st_mode)
        body = path.read_bytes() if stat.S_ISREG(kind) else os.readlink(path) if stat.S_ISLNK(kind) else None
        xattrs = sorted(os.listxattr(path, follow_symlinks=False))
        facts[name] = (info.st_mode, info.st_uid, info.st_gid, info.st_size if not stat.S_ISDIR(kind)
                       else None, info.st_mtime_ns, body, xattrs)
        if not stat.S_ISDIR(kind):
            inodes.setdefault(info.st_ino, []).append(name)
    facts["hardlink groups"] = sorted(group for group in inodes.values() if len(group) > 1)
    return facts
