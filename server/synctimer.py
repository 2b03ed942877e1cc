"""Where sync runs: the lists a config names or a command line gives, once or on a timer.

`serve` and `worker` start a `SyncTimer` when `[sync]` names lists and an interval; the
reports go to the log and to `on_report` (for metrics).
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ligoenv.oci.errors import LigoenvError
from ligoenv.store.errors import ConfigError

from .config import ServerConfig, SyncListConfig
from .jobs import JobSink
from .sync import PublishedTags, Syncer, SyncReport
from .synclists import ImageList, ListProblem, read_list

log = logging.getLogger(__name__)
Report = Callable[[SyncReport], None]


def open_lists(configs: Sequence[SyncListConfig]) -> list[ImageList]:
    """Read each list; one that cannot be read becomes a list with that one problem."""
    out = []
    for item in configs:
        try:
            out.append(read_list(item.path, item.name, format=item.format,
                                 untag_missing=item.untag_missing))
        except ConfigError as error:
            out.append(ImageList(item.name, (), (ListProblem(str(item.path), str(error)),)))
    return out


def choose_lists(config: ServerConfig, given: Sequence[str], *,
                 untag_missing: bool = False) -> list[SyncListConfig]:
    """The lists a command line names: a configured list's name, or a file (named after it,
    `untag_missing` as given); none given means every configured list."""
    if not given:
        if not config.sync.lists:
            raise ConfigError("no lists to sync: give list files, or name them in [[sync.lists]]")
        return list(config.sync.lists)
    by_name = {item.name: item for item in config.sync.lists}
    chosen = []
    for text in given:
        if text in by_name:
            chosen.append(by_name[text])
            continue
        path = Path(text)
        if not path.is_file():
            known = ", ".join(sorted(by_name)) or "none configured"
            raise ConfigError(f"{text}: neither a list file nor a list in [[sync.lists]] ({known})")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.") or "list"
        chosen.append(SyncListConfig(name, path, untag_missing=untag_missing))
    return chosen


def publisher_tags(config: ServerConfig) -> PublishedTags:
    from .publishers.factory import publisher_from

    return PublishedTags(publisher_from(config).read_index)


class SyncTimer:
    """Runs the configured lists every `interval` seconds plus up to `jitter` (the first run
    after the jitter alone, so a restart catches up at once)."""

    def __init__(self, config: ServerConfig, sink: JobSink, *, on_report: Report | None = None,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.config, self.sink = config, sink
        self.on_report = on_report
        self.last_report: SyncReport | None = None
        self._uniform = uniform  # jitter, not secrets: random is right here

    @property
    def enabled(self) -> bool:
        return bool(self.config.sync.lists) and self.config.sync.interval > 0

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self._loop, args=(stop,), name="sync-timer", daemon=True)
        thread.start()
        return thread

    def run_once(self) -> SyncReport | None:
        try:
            report = Syncer(self.config, publisher_tags(self.config), self.sink).run(
                open_lists(self.config.sync.lists))
        except LigoenvError as error:  # e.g. the queue is down: the next run tries again
            log.error("sync failed: %s", error)
            return None
        (log.warning if report.failures else log.info)(report.summary())
        for failure in report.failures:
            log.warning("sync: %s: %s", failure.what, failure.error)
        self.last_report = report
        if self.on_report is not None:
            self.on_report(report)
        return report

    def _loop(self, stop: threading.Event) -> None:
        settings = self.config.sync
        delay = self._uniform(0.0, settings.jitter)
        while not stop.wait(delay):
            self.run_once()
            delay = settings.interval + self._uniform(0.0, settings.jitter)
