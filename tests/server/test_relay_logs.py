"""Server logs: one JSON object per line with the request fields, and URL secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ligoenv_server.config import LogConfig
from ligoenv_server.logs import configure_logging, url_secrets
from testbed.relay import relay_config


@pytest.fixture()
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, put back as pytest had it after the test reconfigures it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(LogConfig(format="json", level="info"), stream)
    log = logging.getLogger("ligoenv_server.relay")
    log.debug("not shown at info")
    log.info("queued %s request", "publish", extra={"endpoint": "gitlab", "repository": "lvk/x",
                                                    "tag": "nightly", "digest": None, "job_id": 7})
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert set(record) == {"ts", "level", "msg", "logger", "endpoint", "repository", "tag", "job_id"}
    assert (record["level"], record["msg"], record["job_id"]) == ("info", "queued publish request", 7)


def test_text_lines_carry_the_fields(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging(LogConfig(format="text", level="debug"), stream)
    logging.getLogger("ligoenv_server.worker").debug("claimed", extra={"job_id": 3})
    assert stream.getvalue().rstrip().endswith("DEBUG ligoenv_server.worker: claimed job_id=3")


def test_url_secrets_are_redacted_from_access_logs(root_logger: logging.Logger, tmp_path: Path) -> None:
    config = relay_config(tmp_path)
    stream = io.StringIO()
    configure_logging(LogConfig(format="json"), stream, redact=url_secrets(config))
    # The line uvicorn's access logger writes for a Docker Hub delivery (under another logger
    # name, because uvicorn reconfigures its own loggers when a test starts it).
    logging.getLogger("tests.access").info('%s - "%s %s HTTP/%s" %d', "192.0.2.7:4711", "POST",
                                           "/hooks/dockerhub/hub-path-secret", "1.1", 202)
    output = stream.getvalue()
    assert "hub-path-secret" not in output
    assert json.loads(output)["msg"] == '192.0.2.7:4711 - "POST /hooks/dockerhub/*** HTTP/1.1" 202'


@pytest.mark.parametrize("style", ["json", "text"])
def test_uvicorns_coloured_copy_of_the_message_is_not_a_field(root_logger: logging.Logger,
                                                               style: str) -> None:
    stream = io.StringIO()
    configure_logging(LogConfig(format=style), stream)
    # What uvicorn logs as it starts (the logger name aside: see above).
    logging.getLogger("tests.uvicorn").info(
        "Started server process [%d]", 4711,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    output = stream.getvalue()
    assert "color_message" not in output and "\x1b" not in output and "\\u001b" not in output
    if style == "json":
        assert json.loads(output)["msg"] == "Started server process [4711]"
    else:
        assert output.rstrip().endswith("INFO tests.uvicorn: Started server process [4711]")
