"""Server logging: plain text for people, or one JSON object per line for log collectors.

Context goes in `extra=` (endpoint, repository, tag, digest, job_id, ...) and becomes fields.
Secrets never reach a record: config values print as `***` and auth headers are never logged.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ligoenv.store.errors import ConfigError

from .config import AuthType, LogConfig, Secret, ServerConfig

# Attributes every LogRecord has; anything else on a record came from `extra=`. Uvicorn adds
# `color_message`, its message again with ANSI colour codes: not a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message"}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_") and value is not None}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "msg", "logger", <extra fields>}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        data.update(extra_fields(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, sort_keys=False)


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: message key=value ...`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{key}={value}" for key, value in extra_fields(record).items())
        return f"{text} {fields}" if fields else text


# The job a thread is working on: its fields go on every record that thread logs, including
# those of the core (pull, unpack) that knows nothing of jobs.
_job_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "ligoenv_job_fields", default=None)


@contextlib.contextmanager
def job_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Within the block, records logged by this thread carry `fields` (e.g. job_id, digest);
    the yielded dict may be updated as more is learned (the digest once resolved)."""
    current = {k: v for k, v in fields.items() if v is not None}
    token = _job_fields.set(current)
    try:
        yield current
    finally:
        _job_fields.reset(token)


class JobFields(logging.Filter):
    """Adds the thread's job fields to each record that does not already carry them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_job_fields.get() or {}).items():
            if value is not None and getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class Redactor(logging.Filter):
    """Replaces secrets that can appear in log lines not of our making, such as the URL-path
    secret of a Docker Hub endpoint in a web server's access log, with `***`."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        super().__init__()
        self.values = [secret.reveal() for secret in secrets]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.values:
            message = record.getMessage()
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True

    def redact(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text


def url_secrets(config: ServerConfig) -> list[Secret]:
    """The secrets that travel in request URLs, hence in access logs."""
    return [e.auth.secret for e in config.relay.endpoints
            if e.auth.type is AuthType.URL_SECRET and e.auth.secret is not None]


class ReopeningFileHandler(logging.FileHandler):
    """Appends to a log file, and opens it again by name on `reopen()`: after logrotate moved
    the file away and sent SIGHUP, new lines go to the new file."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8")

    def reopen(self) -> None:
        self.acquire()
        try:
            old, self.stream = self.stream, self._open()
            if old is not None:
                old.close()
        finally:
            self.release()


def reopen_on_sighup(handler: logging.Handler) -> None:
    """Make SIGHUP reopen `handler`'s log file (nothing when logging to stderr)."""
    if not isinstance(handler, ReopeningFileHandler):
        return
    # Not in the signal handler itself: it may interrupt this very handler while it holds its
    # lock in the main thread. A short thread waits for the lock instead.
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
        target=handler.reopen, name="log-reopen", daemon=True).start())


def configure_logging(config: LogConfig, stream: TextIO | None = None, *,
                      redact: Iterable[Secret] = ()) -> logging.Handler:
    """Send the root logger to the configured file, else to `stream` (stderr), in the configured
    format, with `redact`ed secrets replaced by `***`; returns the handler. Run uvicorn with
    `log_config=None` so that its access log goes through this handler too."""
    handler: logging.Handler
    if config.file is not None:
        try:
            handler = ReopeningFileHandler(config.file)
        except OSError as error:
            raise ConfigError(f"log.file: cannot open {config.file}: {error.strerror}") from None
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.addFilter(JobFields())
    handler.addFilter(Redactor(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(config.level, logging.INFO))
    return handler
