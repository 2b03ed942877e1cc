"""The errors of the layers above the OCI core: configuration, lockfiles, the index, runtimes,
publishing and the queue. All derive from `ligoenv.oci.errors.LigoenvError`."""

from __future__ import annotations

from ligoenv.oci.errors import LigoenvError, NotFound, UsageError


class ConfigError(UsageError):
    """A configuration file or setting that is missing or invalid."""


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
