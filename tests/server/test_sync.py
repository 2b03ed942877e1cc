"""Sync against the real registry and a real SQLite queue: wildcards, changes enqueued once,
untags only when asked, an unreachable registry failing alone, one request per tag."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_MANIFEST
from ligoenv.oci.registry import RegistryClient
from ligoenv_server import metrics
from ligoenv_server.config import ServerConfig, SyncListConfig, load_config
from ligoenv_server.jobs import Action, JobState, PublishRequest
from ligoenv_server.pipeline import RequestProcessor
from ligoenv_server.publishers.factory import publisher_from
from ligoenv_server.queue import SqlQueue
from ligoenv_server.sync import Syncer, SyncReport
from ligoenv_server.synclists import ImageList, parse_osg
from ligoenv_server.synctimer import SyncTimer, publisher_tags
from testbed.images import build_busybox_image, push_image
from testbed.indexfiles import read_index
from testbed.registry import RegistryProcess, free_port
from testbed.stack import SERVER, new_stack, server_config, wait_for
from tests.server.test_metrics import samples

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture()
def config(tmp_path: Path, registry: RegistryProcess) -> ServerConfig:
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    extra = f"""
[registries.down]
host = "{down}"

[sync]
requests_per_second = 500
concurrency = 4
max_tags = 50
"""
    return load_config(server_config(tmp_path, registry.host, free_port(), extra=extra))


@pytest.fixture()
def queue(config: ServerConfig) -> SqlQueue:
    opened = SqlQueue(config.queue.url)
    yield opened  # type: ignore[misc]
    opened.close()


def listing(text: str, name: str = "site", untag_missing: bool = False) -> ImageList:
    entries, problems = parse_osg(text, name)
    return ImageList(name, tuple(entries), tuple(problems), untag_missing)


def publish(config: ServerConfig, registry: RegistryProcess, repository: str, tag: str) -> Digest:
    """Push an image and publish it (as a webhook would have), so the index knows the tag."""
    digest = push_image(registry.host, repository, tag, build_busybox_image(f"{repository}:{tag}"))
    RequestProcessor(config, publisher_from(config)).process(PublishRequest(
        registry=registry.host, repository=repository, tag=tag, digest=str(digest),
        source="distribution:local", received_at=NOW))
    return digest


def run(config: ServerConfig, queue: SqlQueue | None, *lists: ImageList, dry_run: bool = False) -> SyncReport:
    return Syncer(config, publisher_tags(config), queue).run(list(lists), dry_run=dry_run)


def test_wildcard_picks_up_a_tag_pushed_without_a_webhook(config: ServerConfig, queue: SqlQueue,
                                                          registry: RegistryProcess) -> None:
    old = publish(config, registry, "sync/wild", "v1.0")
    new = push_image(registry.host, "sync/wild", "v1.1", build_busybox_image("v1.1"))
    push_image(registry.host, "sync/wild", "v2.0", build_busybox_image("v2.0"))  # not listed
    report = run(config, queue, listing(f"{registry.host}/sync/wild:v1.*\n"))
    assert report.counters() == {"seen": 2, "changed": 1, "enqueued": 1, "failed": 0, "requests": 3}
    (job,) = queue.list()
    assert (job.request.tag, job.request.digest, job.request.source, job.request.action) == \
        ("v1.1", str(new), "sync:site", Action.PUBLISH)
    assert old != new


def test_published_job_records_sync_in_the_history(config: ServerConfig, queue: SqlQueue,
                                                   registry: RegistryProcess) -> None:
    push_image(registry.host, "sync/history", "latest", build_busybox_image("history"))
    run(config, queue, listing(f"{registry.host}/sync/history\n", name="osg"))
    (job,) = queue.list()
    RequestProcessor(config, publisher_from(config)).process(job.request)
    index = publisher_from(config).read_index(registry.host, "sync/history")
    assert index is not None
    assert [e.source for e in index.history("latest")] == ["sync:osg"]
    assert run(config, queue, listing(f"{registry.host}/sync/history\n")).counters()["changed"] == 0


def test_changed_tag_is_enqueued_once(config: ServerConfig, queue: SqlQueue,
                                      registry: RegistryProcess) -> None:
    publish(config, registry, "sync/moved", "nightly")
    moved = push_image(registry.host, "sync/moved", "nightly", build_busybox_image("tomorrow"))
    lists = listing(f"{registry.host}/sync/moved:nightly\n")
    first, second = run(config, queue, lists), run(config, queue, lists)
    assert [(c.upstream, c.created) for c in first.changes] == [(moved, True)]
    assert [(c.upstream, c.created, c.job_id) for c in second.changes] == \
        [(moved, False, first.changes[0].job_id)]
    assert second.summary().startswith("sync site: seen 1, changed 1, enqueued 0, failed 0")
    assert [j.state for j in queue.list()] == [JobState.PENDING]


def test_outcomes_are_counted_for_metrics(config: ServerConfig, queue: SqlQueue,
                                          registry: RegistryProcess) -> None:
    publish(config, registry, "sync/counted", "same")
    publish(config, registry, "sync/counted", "moved")
    push_image(registry.host, "sync/counted", "moved", build_busybox_image("moved on"))
    lists = listing(f"{registry.host}/sync/counted:same\n{registry.host}/sync/counted:moved\n"
                    "not/configured:v1\n")

    def outcome(result: str) -> float:
        return samples(metrics.exposition()).get(
            ("ligoenv_sync_outcomes_total", (("result", result),)), 0)

    before = {r: outcome(r) for r in ("current", "queued", "already_pending", "failed")}
    run(config, queue, lists)
    run(config, queue, lists)
    run(config, queue, lists, dry_run=True)  # a dry run counts nothing
    assert {r: outcome(r) - n for r, n in before.items()} == \
        {"current": 2, "queued": 1, "already_pending": 1, "failed": 2}


def test_unreachable_registry_fails_alone(config: ServerConfig, queue: SqlQueue,
                                          registry: RegistryProcess) -> None:
    down = config.registries["down"].host
    push_image(registry.host, "sync/alive", "v1", build_busybox_image("alive"))
    one_at_a_time = replace(config, sync=replace(config.sync, concurrency=1))
    report = run(one_at_a_time, queue, listing(f"{down}/lab/gone:v1\n{down}/lab/gone:v2\n"
                                               f"{registry.host}/sync/alive:v1\nnot/configured:v1\n"))
    assert [c.tag for c in report.changes] == ["v1"] and report.changes[0].created
    failed = {f.what: f.error for f in report.failures}
    assert sorted(failed) == [f"{down}/lab/gone:v1", f"{down}/lab/gone:v2",
                              "docker.io/not/configured:v1"]
    assert "unreachable" in failed[f"{down}/lab/gone:v1"]
    assert "not configured: add a [registries.NAME] section" in failed["docker.io/not/configured:v1"]
    # the second entry of the dead registry was not tried again (one request at a time here)
    assert sum("skipped: " in error for error in failed.values()) == 1


def test_untags_only_when_the_list_says_so(config: ServerConfig, queue: SqlQueue,
                                           registry: RegistryProcess) -> None:
    gone = publish(config, registry, "sync/untag", "rc1")
    kept = publish(config, registry, "sync/untag", "rc2")
    with RegistryClient(registry.host, anonymous=True) as client:  # the tag is deleted upstream
        client.delete_manifest("sync/untag", gone)
    quiet = run(config, queue, listing(f"{registry.host}/sync/untag:rc*\n"))
    assert quiet.changes == [] and quiet.failures == []
    report = run(config, queue, listing(f"{registry.host}/sync/untag:rc*\n", untag_missing=True))
    assert [(c.tag, c.action, c.created) for c in report.changes] == [("rc1", Action.UNTAG, True)]
    (job,) = queue.list()
    assert job.request.action is Action.UNTAG and job.request.digest is None
    assert run(config, queue, listing(f"{registry.host}/sync/untag:rc2\n")).changes == []
    assert kept != gone


def test_dry_run_enqueues_nothing(config: ServerConfig, queue: SqlQueue,
                                  registry: RegistryProcess) -> None:
    push_image(registry.host, "sync/dry", "v1", build_busybox_image("dry"))
    report = run(config, None, listing(f"{registry.host}/sync/dry:v1\n"), dry_run=True)
    assert [(c.tag, c.job_id, c.created) for c in report.changes] == [("v1", None, False)]
    assert report.summary().endswith("(dry run: nothing enqueued)")
    assert queue.list() == []


def test_one_request_per_tag_when_nothing_changed(config: ServerConfig, queue: SqlQueue,
                                                  registry: RegistryProcess) -> None:
    for tag in ("a", "b", "c", "d"):
        publish(config, registry, "sync/count", tag)
    report = run(config, queue, listing(f"{registry.host}/sync/count:*\n{registry.host}/sync/count:a\n"))
    # one tag-list page plus one HEAD per tag; `a` listed twice is asked once
    assert report.counters() == {"seen": 4, "changed": 0, "enqueued": 0, "failed": 0, "requests": 5}


def test_too_many_tags_fails_the_entry(config: ServerConfig, queue: SqlQueue,
                                       registry: RegistryProcess) -> None:
    image = build_busybox_image("many")
    push_image(registry.host, "sync/many", "t0", image)
    with RegistryClient(registry.host, anonymous=True) as client:
        for i in range(1, 11):
            client.push_manifest("sync/many", f"t{i}", image.manifest_bytes(), OCI_MANIFEST)
    few = replace(config, sync=replace(config.sync, max_tags=10))
    report = run(few, queue, listing(f"{registry.host}/sync/many:*\n"))
    assert report.seen == 0 and "more than 10 tags" in report.failures[0].error


def test_timer_runs_the_configured_lists(config: ServerConfig, queue: SqlQueue, tmp_path: Path,
                                         registry: RegistryProcess) -> None:

    push_image(registry.host, "sync/timer", "v1", build_busybox_image("timer"))
    (tmp_path / "images.txt").write_text(f"{registry.host}/sync/timer:v1\n")
    cfg = replace(config, sync=replace(config.sync, lists=(
        SyncListConfig("timed", tmp_path / "images.txt"), SyncListConfig("lost", tmp_path / "no.txt"))))
    seen: list[SyncReport] = []
    report = SyncTimer(cfg, queue, on_report=seen.append).run_once()
    assert report is not None and seen == [report]
    assert report.counters()["enqueued"] == 1
    assert [f.what for f in report.failures] == [str(tmp_path / "no.txt")]


def test_cli_sync_json_and_exit_status(config: ServerConfig, tmp_path: Path,
                                       registry: RegistryProcess) -> None:
    push_image(registry.host, "sync/cli", "v1", build_busybox_image("cli"))
    images = tmp_path / "docker_images.txt"
    images.write_text(f"# a site list\n{registry.host}/sync/cli:v1\n{registry.host}/sync/cli:nope\n")
    done = subprocess.run([str(SERVER), "sync", str(images), "--config", str(tmp_path / "server.toml"),
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr  # an entry failed; the other was still enqueued
    answer = json.loads(done.stdout)
    assert (answer["lists"], answer["seen"], answer["enqueued"], answer["failed"]) == \
        (["docker_images"], 2, 1, 1)
    assert answer["changes"][0]["image"] == f"{registry.host}/sync/cli:v1"
    assert answer["failures"] == [{"what": f"{registry.host}/sync/cli:nope", "error":
                                   f"docker_images.txt:3: tag nope not found on registry {registry.host}"}]


def test_serve_syncs_on_a_timer_what_no_webhook_announced(tmp_path: Path) -> None:
    """The real stack: a registry that sends no webhooks, `serve` with a [sync] list of it."""
    quiet = RegistryProcess(tmp_path / "quiet").start()
    try:
        (tmp_path / "images.txt").write_text(f"{quiet.host}/lab/quiet:*\n")
        extra = f"""
[registries.quiet]
host = "{quiet.host}"

[sync]
interval = 1
jitter = 0

[[sync.lists]]
name = "quiet"
path = "{tmp_path / 'images.txt'}"
"""
        stack = new_stack(tmp_path, extra=extra)
        try:
            stack.start("serve")
            digest = push_image(quiet.host, "lab/quiet", "v1", build_busybox_image("quiet"))

            def published() -> bool:
                index = read_index(stack.root, quiet.host, "lab/quiet")
                link = stack.root / quiet.host / "lab/quiet:v1"
                return bool(index and index.current("v1") == digest and link.is_symlink())

            wait_for(published, "the timer's sync to publish lab/quiet:v1")
            index = read_index(stack.root, quiet.host, "lab/quiet")
            assert index is not None and [e.source for e in index.history("v1")] == ["sync:quiet"]
            assert '"sync quiet: seen 1, changed 1, enqueued 1, failed 0' in stack.log_text()
        finally:
            stack.stop_all()
            stack.registry.stop()
    finally:
        quiet.stop()
