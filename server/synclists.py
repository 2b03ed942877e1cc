"""Image lists that `ligoenv-server sync` reconciles: OSG `docker_images.txt` and DUCC wishlists.

Both become `ImageList`s of `ListEntry`s (registry, repository, a tag or a `*` pattern, maybe a
digest). A bad line fails alone: it is kept as a `ListProblem` and the rest of the list is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import InvalidReference
from ligoenv.oci.reference import Reference
from ligoenv.store.errors import ConfigError

FORMATS = ("auto", "osg", "ducc")
MAX_LIST_BYTES = 8 << 20
# A tag pattern: tag characters plus `*`, the only wildcard (as in cvmfs-singularity-sync).
_PATTERN = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9_.*-]{0,127}")
_DUCC_FIELDS = ("version", "user", "cvmfs_repo", "output_format", "input")


@dataclass(frozen=True)
class ListEntry:
    """One line of a list: `tag` is a tag, or a pattern when it holds `*`."""

    registry: str
    repository: str
    tag: str
    digest: Digest | None
    where: str  # "docker_images.txt:12", for messages

    @property
    def is_pattern(self) -> bool:
        return "*" in self.tag

    def matches(self, tag: str) -> bool:
        regex = ".*".join(re.escape(part) for part in self.tag.split("*"))
        return re.fullmatch(regex, tag) is not None

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class ListProblem:
    where: str
    message: str


@dataclass(frozen=True)
class ImageList:
    name: str  # jobs get the source `sync:<name>`
    entries: tuple[ListEntry, ...]
    problems: tuple[ListProblem, ...] = ()
    untag_missing: bool = False


def read_list(path: Path, name: str, *, format: str = "auto", untag_missing: bool = False) -> ImageList:
    """Read a list file; ConfigError when the file as a whole cannot be used."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_LIST_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read image list {path}: {error.strerror or error}") from None
    if len(raw) > MAX_LIST_BYTES:
        raise ConfigError(f"image list {path} is larger than {MAX_LIST_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"image list {path} is not UTF-8 text") from None
    kind = format if format != "auto" else ("ducc" if path.suffix in (".yaml", ".yml") else "osg")
    parse = parse_ducc if kind == "ducc" else parse_osg
    entries, problems = parse(text, path.name)
    return ImageList(name, tuple(entries), tuple(problems), untag_missing)


def parse_osg(text: str, label: str) -> tuple[list[ListEntry], list[ListProblem]]:
    """`[registry/]namespace/repo[:tag]` per line, `#` starts a comment; Docker Hub by default."""
    entries, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        where = f"{label}:{number}"
        try:
            entries.append(parse_entry(item, where))
        except InvalidReference as error:
            problems.append(ListProblem(where, str(error)))
    return entries, problems


def parse_ducc(text: str, label: str) -> tuple[list[ListEntry], list[ListProblem]]:
    """A DUCC wishlist (version 1): `input` is a list of image URLs such as
    `https://registry.hub.docker.com/library/fedora:latest`. `user`, `cvmfs_repo` and
    `output_format` concern DUCC's thin images and repository, and are not used here."""
    import yaml

    try:
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{label}: not valid YAML: {_first_line(error)}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{label}: a DUCC wishlist is a mapping with {', '.join(_DUCC_FIELDS)}")
    if document.get("version") != 1:
        raise ConfigError(f"{label}: version: {document.get('version')!r} is not supported, "
                          "only version 1")
    inputs = document.get("input")
    if not isinstance(inputs, list):
        raise ConfigError(f"{label}: input: expected a list of image URLs")
    entries, problems = [], []
    for i, item in enumerate(inputs):
        where = f"{label}:input[{i}]"
        if not isinstance(item, str):
            problems.append(ListProblem(where, f"{item!r} is not an image URL"))
            continue
        try:
            entries.append(parse_entry(_strip_scheme(item), where))
        except InvalidReference as error:
            problems.append(ListProblem(where, str(error)))
    return entries, problems


def parse_entry(text: str, where: str) -> ListEntry:
    """`[registry/]repo[:tag-or-pattern][@digest]`; the tag defaults to `latest`."""
    name, _, digest_text = text.partition("@")
    tag = "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    if "*" in tag and (digest_text or not _PATTERN.fullmatch(tag)):
        raise InvalidReference(f"{text!r}: a tag pattern may hold tag characters and '*' "
                               "only, and no digest")
    probe = "latest" if "*" in tag else tag
    suffix = f"@{digest_text}" if digest_text else ""
    ref = Reference.parse(f"{name}:{probe}{suffix}")
    return ListEntry(ref.registry, ref.repository, tag, ref.digest, where)


def _strip_scheme(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if scheme not in ("http", "https"):
        raise InvalidReference(f"{url!r}: expected an http(s):// image URL")
    if "/" not in rest:
        raise InvalidReference(f"{url!r}: no repository after the registry")
    return rest


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
