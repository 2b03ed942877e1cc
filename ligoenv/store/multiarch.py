"""Per-platform tag links: one stable path per architecture that follows a tag.

Next to `<registry>/<repository>:<tag>`, a publish root holds
`.multiarch/<os>-<arch>[-<variant>]/<registry>/<repository>:<tag>` for every platform the tag's
current image was published for, with `uname -m` spellings as directory aliases
(`.multiarch/linux-x86_64` -> `linux-amd64`, `linux-aarch64` -> `linux-arm64`), as CVMFS's DUCC
does. A site turns them into one path for every pool with a CVMFS variant symlink
(docs/operations.md). Publishers plan them here and write them just before the tag link.
"""

from __future__ import annotations

import os
import platform as _host
from dataclasses import dataclass, field
from pathlib import Path

from ligoenv.oci.digest import Digest
from ligoenv.oci.platform import Platform
from ligoenv.store.index import RepositoryView
from ligoenv.store.publishroot import PublishRoot, remove_symlink, replace_symlink

MULTIARCH_DIR = ".multiarch"
# OCI architecture -> what `uname -m` prints on that machine (only where the two differ).
UNAME_SPELLINGS = {"amd64": "x86_64", "arm64": "aarch64"}


def dir_name(platform: Platform | str) -> str:
    """`linux-amd64`, `linux-arm-v7`: the platform's directory under `.multiarch/`."""
    parsed = Platform.parse(str(platform))
    return "-".join(part for part in (parsed.os, parsed.architecture, parsed.variant) if part)


def alias_name(platform: Platform | str) -> str | None:
    """`linux-x86_64` for linux/amd64: the `uname -m` spelling, where it differs."""
    parsed = Platform.parse(str(platform))
    machine = UNAME_SPELLINGS.get(parsed.architecture)
    return f"{parsed.os}-{machine}" if machine and parsed.variant is None else None


def host_dir_name() -> str:
    """This machine's directory as `uname -m` spells it (`linux-x86_64`), where an alias exists;
    else its platform directory (`linux-ppc64le`)."""
    machine = _host.machine().lower()
    if machine in UNAME_SPELLINGS.values():
        return f"linux-{machine}"
    return dir_name(Platform.host())


def platform_link(layout: PublishRoot, registry: str, repository: str, tag: str,
                  directory: str) -> Path:
    """The link of `tag` under `.multiarch/<directory>/` (a platform or alias directory name)."""
    relative = layout.tag_link(registry, repository, tag).relative_to(layout.root)
    return layout.root / MULTIARCH_DIR / directory / relative


@dataclass
class PlatformLinks:
    """What moving (or removing) one tag changes under `.multiarch/`: only what differs."""

    aliases: list[tuple[Path, str]] = field(default_factory=list)
    links: list[tuple[Path, str]] = field(default_factory=list)
    removals: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.aliases or self.links or self.removals)

    def write(self) -> None:
        for link, target in self.aliases + self.links:
            replace_symlink(link, target)
        for link in self.removals:
            remove_symlink(link)


def plan_platform_links(layout: PublishRoot, index: RepositoryView, tag: str) -> PlatformLinks:
    """The per-platform links of `tag` as `index` (already updated) says it is now: one per
    platform published for its current digest; links of other platforms, or of a tag that is
    gone, are removed."""
    plan = PlatformLinks()
    current = index.current(tag)
    wanted: dict[str, Path] = {}
    if current is not None:
        for platform in published_platforms(index, current):
            path = index.path_of(current, platform)
            if path is not None:
                wanted[dir_name(platform)] = layout.root / path
                alias = alias_name(platform)
                if alias is not None:
                    plan.aliases += _changed(layout.root / MULTIARCH_DIR / alias, dir_name(platform))
    for name, tree in sorted(wanted.items()):
        link = platform_link(layout, index.registry, index.repository, tag, name)
        plan.links += _changed(link, os.path.relpath(tree, link.parent))
    for name in _platform_dirs(layout):
        link = platform_link(layout, index.registry, index.repository, tag, name)
        if name not in wanted and link.is_symlink():
            plan.removals.append(link)
    return plan


def published_platforms(index: RepositoryView, digest: Digest) -> list[str]:
    """The platforms (`linux/amd64`) recorded for a top-level digest (an index or a manifest)."""
    record = index.record(digest)
    if record is None:
        return []
    return sorted(record.platforms) if record.platforms else [record.platform or ""]


def _platform_dirs(layout: PublishRoot) -> list[str]:
    top = layout.root / MULTIARCH_DIR
    if not top.is_dir():
        return []
    # Aliases are symlinks to platform directories: a link is removed through its real directory.
    return sorted(entry.name for entry in top.iterdir() if entry.is_dir() and not entry.is_symlink())


def _changed(link: Path, target: str) -> list[tuple[Path, str]]:
    return [] if link.is_symlink() and os.readlink(link) == target else [(link, target)]
