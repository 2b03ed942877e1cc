"""The root of ligoenv's one error hierarchy, and the errors of the OCI core.

Each error carries a message a user can act on and whether it is temporary (worth retrying).
The CLI boundaries map errors to exit codes in one place (`exit_code`). The errors of the layers
above (configuration, lockfiles, the index, publishing, the queue) extend these in
`ligoenv.store.errors`.
"""

from __future__ import annotations


class LigoenvError(Exception):
    """Base class. `temporary` says whether trying again later may succeed."""

    temporary: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, temporary: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if temporary is not None:
            self.temporary = temporary

    def __str__(self) -> str:
        return self.message


class UsageError(LigoenvError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class InvalidReference(UsageError):
    """An image reference or digest that does not parse."""


class RegistryError(LigoenvError):
    """A registry answered with an error, or could not be reached."""


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached or keeps failing: worth retrying later."""

    temporary = True


class AuthError(RegistryError):
    """The registry refused our credentials, or wants some we do not have."""


class NotFound(LigoenvError):
    """A repository, tag, digest, environment or file that does not exist."""

    exit_code = 3


class DigestMismatch(LigoenvError):
    """Content whose digest or size differs from what was claimed: never used."""


class ArchiveError(LigoenvError):
    """An image archive that is damaged, altered, incomplete or not an image archive at all."""


class UnsafeArchive(LigoenvError):
    """A layer archive that tries to write outside its target or to exhaust the disk."""


class UnsupportedImage(RegistryError):
    """An image built in a way ligoenv does not handle (an index inside an index): trying again
    cannot help."""


class PlatformNotFound(NotFound):
    """No manifest in an index matches the requested platform."""
