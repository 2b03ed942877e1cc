"""Image references, parsed and normalised the way Docker does.

`ubuntu` is `docker.io/library/ubuntu:latest`, served by `registry-1.docker.io`;
`host:port/...` and `localhost/...` name a registry; `name:tag@sha256:...` pins the digest
and keeps the tag for information. The user's original string is kept for display.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

# Used with fullmatch only: `$` would also match before a final newline.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?"
)
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. `str()` gives the canonical form, which parses back equal."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None
    original: str = field(default="", compare=False, hash=False)

    @classmethod
    def parse(cls, text: str) -> Reference:
        original = text
        text = text.strip()
        if not text:
            raise InvalidReference("empty image reference")
        name, tag, digest = _split(text, original)
        registry, repository = _split_registry(name, original)
        _check_repository(repository, original)
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, repository, tag, digest, original)

    @classmethod
    def parse_exact(cls, text: str) -> Reference:
        """Like `parse`, for a name taken from a payload or a file: nothing around it is dropped,
        so "v1\\n" or "v1\\u00a0" is no tag "v1" (names that differ must not meet)."""
        if text != text.strip():
            raise InvalidReference(f"invalid reference {text!r}: white space around the name")
        return cls.parse(text)

    @property
    def api_host(self) -> str:
        """The host that serves the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def is_pinned(self) -> bool:
        return self.digest is not None

    @property
    def reference(self) -> str:
        """What goes after `/manifests/` in the registry API: the digest if pinned, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        assert self.tag is not None
        return self.tag

    @property
    def in_repository(self) -> str:
        """`repository:tag`, or `repository@sha256:...` when pinned: how messages name it."""
        return in_repository(self.repository, self.reference)

    def with_digest(self, digest: Digest) -> Reference:
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag)

    def pinned_str(self) -> str:
        """`registry/repository@sha256:...`, the form ligoenv runs and prints."""
        if self.digest is None:
            raise InvalidReference(f"{self} is not pinned to a digest")
        return f"{self.name}@{self.digest}"

    def display(self) -> str:
        return self.original or str(self)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def in_repository(repository: str, reference: str) -> str:
    """A tag or digest (what goes after `/manifests/`) written after its repository as a
    reference writes it: `lab/app:v1`, `lab/app@sha256:...`."""
    return f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"


def _split(text: str, original: str) -> tuple[str, str | None, Digest | None]:
    digest: Digest | None = None
    if "@" in text:
        text, _, digest_text = text.partition("@")
        try:
            digest = Digest.parse(digest_text)
        except InvalidReference as error:
            raise InvalidReference(f"invalid reference {original!r}: {error}") from None
    tag: str | None = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(
                f"invalid reference {original!r}: tag {tag!r} must be 1-128 characters of "
                "letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            )
    return text, tag, digest


def _split_registry(name: str, original: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    looks_like_host = "." in first or ":" in first or first == "localhost" or first != first.lower()
    if slash and looks_like_host:
        if not _HOST.fullmatch(first):
            raise InvalidReference(f"invalid reference {original!r}: bad registry host {first!r}")
        registry, repository = first.lower(), rest
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _check_repository(repository: str, original: str) -> None:
    if not repository:
        raise InvalidReference(f"invalid reference {original!r}: no repository name")
    if repository != repository.lower():
        raise InvalidReference(
            f"invalid reference {original!r}: repository names must be lowercase"
        )
    for component in repository.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise InvalidReference(
                f"invalid reference {original!r}: path component {component!r} must be "
                "lowercase letters and digits, separated by '.', '_', '__' or '-'"
            )
    if len(repository) > _MAX_NAME:
        raise InvalidReference(
            f"invalid reference {original!r}: repository name longer than {_MAX_NAME} characters"
        )
