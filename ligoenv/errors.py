"""The one error hierarchy of ligoenv: every error a user can see derives from LigoenvError.

Each error carries a message a user can act on and whether it is temporary (worth retrying).
The CLI boundaries map errors to exit codes in one place (`exit_code`).
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


class ConfigError(UsageError):
    """A configuration file or setting that is missing or invalid."""


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


class LockfileError(LigoenvError):
    """A lockfile that is unreadable, corrupt or invalid against its schema."""


class PublishIndexError(LigoenvError):
    """A digest manifest index that is unreadable or invalid."""


class HistoryTooShort(NotFound):
    """The tag history does not reach back to the requested time."""


class RuntimeNotFound(LigoenvError):
    """No container runtime that can run the image is installed."""

    exit_code = 4


class PublishError(LigoenvError):
    """Publishing an image failed; nothing partial is visible."""


class QueueUnavailable(LigoenvError):
    """The job queue cannot durably accept or hand out work right now."""

    temporary = True
