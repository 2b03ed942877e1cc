"""The `ligoenv-server` command: run the roles (all in one, or each alone) and manage jobs."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ligoenv.oci.errors import LigoenvError, UsageError
from ligoenv.oci.hosts import is_loopback
from ligoenv.store.errors import ConfigError

from .config import (
    CONFIG_ENV,
    AuthType,
    ServerConfig,
    default_config,
    default_state_dir,
    load_config,
)
from .jobs import Action, JobState, PublishRequest
from .queue.urls import redact_url
from .worker import DEFAULT_DRAIN_SECONDS

if TYPE_CHECKING:
    from .listen import ConnectionLimits

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Publish registry images to CVMFS or a directory, with a tag history.")
_state = {"debug": False}

DrainOption = Annotated[float, typer.Option(
    help="On SIGTERM, wait this long for the jobs in hand, then release them to the queue.")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Server config (TOML). Default: $LIGOENV_SERVER_CONFIG, else built-in "
    "defaults (SQLite queue and publish root under the state directory).")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _state["debug"] = debug


_NO_ENDPOINTS = ("no [[relay.endpoints]]: the relay accepts no webhook; add one "
                 "(docs/server-config.example.toml shows every kind)")


def _config(path: Path | None) -> ServerConfig:
    return load_config(path)


def _listening_config(cfg: ServerConfig) -> ServerConfig:
    """A config the relay may serve: one without webhook endpoints would listen for nothing."""
    if not cfg.relay.endpoints:
        raise ConfigError(_NO_ENDPOINTS)
    return cfg


def _serve_config(path: Path | None, host: str | None, port: int | None, state_dir: Path | None,
                  registry: str | None) -> ServerConfig:
    """The config `serve` runs: a file (--config or $LIGOENV_SERVER_CONFIG) or the built-in
    defaults; --host/--port override either, and are checked like the file's own values."""
    if path is not None or os.environ.get(CONFIG_ENV):
        if state_dir is not None or registry is not None:
            raise UsageError("--state-dir and --registry shape the built-in defaults; with a "
                             "config file, set state_dir and [registries] there")
        cfg = load_config(path)
    else:
        cfg = default_config(state_dir or default_state_dir(),
                             registry_host=registry or "127.0.0.1:5000")
    relay = replace(cfg.relay, host=host or cfg.relay.host, port=port or cfg.relay.port)
    open_endpoints = [e.path for e in relay.endpoints if e.auth.type is AuthType.NONE]
    if open_endpoints and not is_loopback(relay.host):
        raise ConfigError(f"endpoint {open_endpoints[0]} has no authentication, so the relay may "
                          f"only listen on loopback, not {relay.host}: configure a secret")
    return _listening_config(replace(cfg, relay=relay))


def _logging(config: ServerConfig) -> None:
    """Logging as configured, SIGHUP reopening the log file, and the shared metrics directory
    checked: every role starts here."""
    from .logs import configure_logging, reopen_on_sighup, url_secrets
    from .metrics import check_multiproc_dir

    check_multiproc_dir()
    reopen_on_sighup(configure_logging(config.log, redact=url_secrets(config)))


@app.command()
def serve(config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(help="Listen port (default 8080).")] = None,
          state_dir: Annotated[Path | None, typer.Option(help="State directory for the built-in "
                                                         "defaults.")] = None,
          registry: Annotated[str | None, typer.Option(help="Registry host the built-in "
                                                       "endpoint publishes from.")] = None,
          drain_timeout: DrainOption = DEFAULT_DRAIN_SECONDS) -> None:
    """Relay, queue and worker in one process (the embedded defaults need no config file)."""
    cfg = _serve_config(config, host, port, state_dir, registry)
    _logging(cfg)
    from .roles import create_server_app

    _say_where(cfg)
    _uvicorn(create_server_app(cfg, drain_seconds=drain_timeout), cfg.relay.host, cfg.relay.port,
             _limits(cfg))


@app.command()
def relay(config: ConfigOption = None) -> None:
    """Only the relay (and the read API): webhooks in, jobs to the configured queue."""
    cfg = _listening_config(_config(config))
    _logging(cfg)
    from .roles import create_server_app

    _uvicorn(create_server_app(cfg, run_workers=False), cfg.relay.host, cfg.relay.port,
             _limits(cfg))


@app.command("queue")
def queue_service(config: ConfigOption = None,
                  host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
                  port: Annotated[int, typer.Option(help="Listen port.")] = 8081) -> None:
    """The queue as an HTTP service that relays and workers on other machines use."""
    cfg = _config(config)
    _logging(cfg)
    from .queue import SqlQueue
    from .queue.service import create_queue_app

    if cfg.queue.token is None:
        raise LigoenvError("[queue] token is required to serve the queue over HTTP")
    queue = SqlQueue(cfg.queue.url, max_attempts=cfg.queue.max_attempts,
                     lease_seconds=cfg.queue.lease_seconds)
    _uvicorn(create_queue_app(queue, cfg.queue.token.reveal()), host, port)


@app.command()
def worker(config: ConfigOption = None,
           concurrency: Annotated[int | None, typer.Option(help="Worker threads.")] = None,
           drain_timeout: DrainOption = DEFAULT_DRAIN_SECONDS,
           metrics_port: Annotated[int | None, typer.Option(
               help="Serve /metrics, /healthz and /readyz on this port (off by default).")] = None,
           metrics_host: Annotated[str, typer.Option(
               help="Address of the metrics listener.")] = "127.0.0.1") -> None:
    """Only workers: claim jobs and publish until SIGTERM (the jobs in hand are finished, or
    released to the queue after --drain-timeout)."""
    cfg = _config(config)
    _logging(cfg)
    from .opslistener import OpsListener
    from .publishers.factory import publisher_from
    from .roles import queue_collectors, queue_from, readiness_checks
    from .worker import WorkerPool

    if concurrency:
        cfg = replace(cfg, worker=replace(cfg.worker, concurrency=concurrency))
    queue = queue_from(cfg)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    pool = WorkerPool.build(cfg, queue, publisher_from(cfg))
    listener = None
    if metrics_port is not None:
        listener = OpsListener(metrics_host, metrics_port,
                               readiness_checks(cfg, queue, publishes=True),
                               queue_collectors(queue)).start()
    threads = pool.run(stop)
    from .synctimer import SyncTimer

    timer = SyncTimer(cfg, queue)
    if timer.enabled:
        timer.start(stop)
    while not stop.wait(0.5):
        if not any(t.is_alive() for t in threads):
            raise LigoenvError("every worker thread has stopped")  # never expected: say so
    drained = pool.drain(threads, drain_timeout)
    if listener is not None:
        listener.close()
    queue.close()
    if not drained:
        os._exit(0)  # the jobs in hand were released; their threads must not finish them


@app.command()
def publish(reference: Annotated[str, typer.Argument(help="Image to publish, e.g. "
                                                     "registry.example.org/lvk/lalsuite:nightly")],
            config: ConfigOption = None,
            enqueue: Annotated[bool, typer.Option("--enqueue", help="Queue it for the workers "
                                                  "instead of publishing now.")] = False,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Publish an image by hand (now, in this process; or --enqueue for the workers)."""
    from ligoenv.oci.reference import Reference

    cfg = _config(config)
    _logging(cfg)
    ref = Reference.parse(reference)
    request = PublishRequest(registry=ref.registry, repository=ref.repository, tag=ref.tag,
                             digest=str(ref.digest) if ref.digest else None, source="cli",
                             received_at=datetime.now(UTC), action=Action.PUBLISH)
    from .publishers.factory import publisher_from
    from .roles import queue_from

    if enqueue:
        queue = queue_from(cfg)
        result = queue.enqueue(request)
        queue.close()
        _print({"job_id": result.job_id, "created": result.created}, as_json,
               f"job {result.job_id} {'queued' if result.created else 'already pending'}")
        return
    from .pipeline import RequestProcessor

    outcome = RequestProcessor(cfg, publisher_from(cfg)).process(request)
    _print(outcome, as_json, _describe(outcome))


@app.command()
def jobs(config: ConfigOption = None,
         state: Annotated[JobState | None, typer.Option(help="Only jobs in this state.")] = None,
         limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List jobs (newest first) with their state, attempts and last error."""
    from .roles import queue_from

    queue = queue_from(_config(config))
    found = queue.list(state=state, limit=limit)
    queue.close()
    if as_json:
        typer.echo(json.dumps([job.to_json() for job in found], indent=2))
        return
    typer.echo(f"{'ID':>6}  {'STATE':8} {'TRIES':>5}  {'IMAGE':50} LAST ERROR")
    for job in found:
        r = job.request
        image = f"{r.registry}/{r.repository}" + (f":{r.tag}" if r.tag else "") + \
            (f"@{r.digest[:19]}" if r.digest else "")
        typer.echo(f"{job.id:>6}  {job.state:8} {job.attempts:>5}  {image:50} {job.last_error or ''}")


@app.command()
def retry(job_id: Annotated[int, typer.Argument(help="A failed job's id (see `jobs`).")],
          config: ConfigOption = None) -> None:
    """Requeue a failed job (its attempts start again)."""
    from .roles import queue_from

    queue = queue_from(_config(config))
    job = queue.retry(job_id)
    queue.close()
    if job.state is JobState.PENDING:
        typer.echo(f"job {job.id} is pending again")
    else:  # an identical request was already pending: that one will do the work
        typer.echo(f"job {job.id} is {job.state}: {json.dumps(job.result)}")


@app.command("sync")
def sync_lists(lists: Annotated[list[str] | None, typer.Argument(
                   metavar="[LIST]...", help="List files (OSG docker_images.txt, or a DUCC wishlist "
                   "*.yaml) or names of [[sync.lists]]; default: every configured list.")] = None,
               config: ConfigOption = None,
               dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be "
                                                     "enqueued; enqueue nothing.")] = False,
               untag_missing: Annotated[bool, typer.Option(
                   "--untag-missing", help="For list files given here: record listed tags that "
                   "are gone upstream as untags (images are kept).")] = False,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Compare the tags of image lists with the index and enqueue what differs (what webhooks
    missed). Exits 1 when an entry failed; the others are still done."""
    cfg = _config(config)
    _logging(cfg)
    from .roles import queue_from
    from .sync import Syncer
    from .synctimer import choose_lists, open_lists, publisher_tags

    chosen = open_lists(choose_lists(cfg, lists or [], untag_missing=untag_missing))
    queue = None if dry_run else queue_from(cfg)
    try:
        report = Syncer(cfg, publisher_tags(cfg), queue).run(chosen, dry_run=dry_run)
    finally:
        if queue is not None:
            queue.close()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for change in report.changes:
            state = "" if dry_run else (f" (job {change.job_id}" +
                                        ("" if change.created else ", already pending") + ")")
            typer.echo(f"{change.action} {change.registry}/{change.repository}:{change.tag} "
                       f"{_short(change.current)} -> {_short(change.upstream)}{state}")
        for failure in report.failures:
            typer.echo(f"failed: {failure.what}: {failure.error}", err=True)
        typer.echo(report.summary())
    if report.failures:
        raise typer.Exit(1)


@app.command()
def gc(config: ConfigOption = None,
       dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go and why; "
                                             "remove nothing.")] = False,
       as_json: Annotated[bool, typer.Option("--json", help="Every digest's verdict as JSON.")] = False
       ) -> None:
    """Remove image trees no tag, pin or [gc] rule keeps (the index keeps their history and
    records when each was collected). Exits 1 when a remaining tree is incomplete."""
    cfg = _config(config)
    _logging(cfg)
    from .gcpolicy import GcPolicy
    from .gcrun import KILL_ENV, GarbageCollector, kill_point
    from .publishers.factory import publisher_from

    policy = GcPolicy(grace=timedelta(days=cfg.gc.grace_days), keep_last=cfg.gc.keep_last,
                      keep_tags=cfg.gc.keep_tags, max_trees=cfg.gc.max_trees)
    collector = GarbageCollector(publisher_from(cfg), policy,
                                 on_step=kill_point(os.environ.get(KILL_ENV)))
    report = collector.run(dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for verdict in report.plan.verdicts:
            if verdict.collect:
                typer.echo(f"{'would collect' if dry_run else 'collected'} {verdict.registry}/"
                           f"{verdict.repository}@{verdict.digest.short}: {verdict.reason}")
        for tree in report.plan.trees:
            if not any(v.tree == tree for v in report.plan.verdicts):
                typer.echo(f"{'would remove' if dry_run else 'removed'} {tree}: no index names it")
        for problem in report.incomplete:
            typer.echo(f"incomplete: {problem}", err=True)
        typer.echo(report.summary())
    if report.incomplete:
        raise typer.Exit(1)


LockfilesArg = Annotated[list[Path], typer.Argument(metavar="LOCKFILE...", help="Lockfiles "
                                                    "(ligoenv lock) whose digests to pin.")]
LabelOption = Annotated[str | None, typer.Option(help="Name of this set of pins (default: the "
                                                 "lockfile's name and a hash of its digests).")]


@app.command("pin")
def pin_lockfiles(lockfiles: LockfilesArg, config: ConfigOption = None,
                  why: Annotated[str, typer.Option(help="Why these digests must stay, e.g. the "
                                                   "paper that cites them.")] = "",
                  by: Annotated[str | None, typer.Option(help="Who pins (default: $USER).")] = None,
                  label: LabelOption = None) -> None:
    """Pin every digest of each lockfile (all platforms): garbage collection never removes them."""
    if not why.strip():
        raise UsageError("say why with --why (e.g. --why 'GWTC-4 paper, arXiv:2601.00001')")
    _pin_command(lockfiles, config, label, why=why.strip(), by=by)


@app.command("unpin")
def unpin_lockfiles(lockfiles: LockfilesArg, config: ConfigOption = None,
                    label: LabelOption = None) -> None:
    """Remove the pins a `pin` of the same lockfiles (or --label) made."""
    _pin_command(lockfiles, config, label, why=None, by=None)


def _pin_command(lockfiles: list[Path], config: Path | None, label: str | None, *,
                 why: str | None, by: str | None) -> None:
    import getpass

    from ligoenv.store.lockfile import read_lockfile

    from .pinning import pin, unpin
    from .publishers.factory import publisher_from

    cfg = _config(config)
    _logging(cfg)
    publisher = publisher_from(cfg)
    for path in lockfiles:
        lockfile = read_lockfile(path, strict=True)
        if why is None:
            used, changes = unpin(publisher, lockfile, path.name, label)
        else:
            used, changes = pin(publisher, lockfile, path.name, by=by or getpass.getuser(), why=why,
                                at=datetime.now(UTC), label=label)
        verb = "pinned" if why is not None else "unpinned"
        for change in changes:
            note = "" if change.changed else (" (already)" if why is not None else " (was not)")
            typer.echo(f"{verb} {change.reference}{note} [{used}]")


@app.command("check-config")
def check_config(config: ConfigOption = None,
                 no_secrets: Annotated[bool, typer.Option(
                     "--no-secrets", help="Check the file's structure without reading the "
                     "*_env variables and *_file files that hold secrets.")] = False) -> None:
    """Validate the configuration and print what is in effect (secrets shown as ***)."""
    cfg = load_config(config, secrets=not no_secrets)
    if not cfg.relay.endpoints:
        print(f"ligoenv-server: warning: {_NO_ENDPOINTS}", file=sys.stderr)
    if no_secrets:
        print("ligoenv-server: secrets in *_env and *_file were not read", file=sys.stderr)
    typer.echo(f"relay: http://{cfg.relay.host}:{cfg.relay.port}")
    for endpoint in cfg.relay.endpoints:
        typer.echo(f"  {endpoint.path}  {endpoint.kind} from {endpoint.registry_host} "
                   f"(auth {endpoint.auth.type})")
    typer.echo(f"queue: {redact_url(cfg.queue.url)}")
    typer.echo(f"publisher: {cfg.publisher.backend} at {cfg.publisher.root} "
               f"(layout {cfg.publisher.layout}; {', '.join(map(str, cfg.publisher.platforms))})")


def _short(digest: object | None) -> str:
    return str(digest)[:19] if digest is not None else "(none)"


index_app = typer.Typer(no_args_is_help=True, help="Manage the publish root's digest index.")
app.add_typer(index_app, name="index")


@index_app.command("migrate")
def index_migrate(config: ConfigOption = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Convert the publish root's index to version 2, in place: per repository atomically,
    resumable, a no-op when done. Refuses while a worker is publishing to the root."""
    from ligoenv.store.index.migrate import migrate_root

    from .publishers.factory import publisher_from

    cfg = _config(config)
    publisher = publisher_from(cfg)
    with publisher.exclusive():
        done = migrate_root(publisher.layout.root,
                            log=lambda line: print(f"ligoenv-server: {line}", file=sys.stderr))
    summary = {"converted": done.converted, "already": done.already,
               "bytes_written": done.bytes_written}
    _print(summary, as_json,
           f"{len(done.converted)} repositories converted, {len(done.already)} already in "
           f"version 2" if done.converted or done.already else "nothing to migrate")


def _say_where(cfg: ServerConfig) -> None:
    where = {"publish root": cfg.publisher.root, "state": cfg.state_dir,
             "layer cache": cfg.worker.cache_dir}
    for name, path in where.items():
        print(f"ligoenv-server: {name}: {path}", file=sys.stderr)
    for endpoint in cfg.relay.endpoints:
        print(f"ligoenv-server: webhook endpoint http://{cfg.relay.host}:{cfg.relay.port}"
              f"{endpoint.path} ({endpoint.kind} from {endpoint.registry_host})", file=sys.stderr)


def _uvicorn(asgi: Any, host: str, port: int, limits: ConnectionLimits | None = None) -> None:
    from .listen import ConnectionLimits, serve

    serve(asgi, host, port, limits or ConnectionLimits())


def _limits(cfg: ServerConfig) -> ConnectionLimits:
    from .listen import ConnectionLimits

    return ConnectionLimits(cfg.relay.max_connections, cfg.relay.header_timeout)


def _describe(outcome: dict[str, Any]) -> str:
    lines = [f"published {outcome['digest']}" + (f" as :{outcome['tag']}" if outcome.get("tag") else "")]
    for platform, path in sorted(outcome.get("paths", {}).items()):
        lines.append(f"  {platform}: {path}")
    if not outcome.get("unpacked"):
        lines.append("  (already published: nothing unpacked)")
    return "\n".join(lines)


def _print(data: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


def main() -> None:
    """Entry point: one line on stderr and a non-zero exit for any ligoenv error."""
    try:
        app()  # usage errors are click's: usage text and exit code 2
    except LigoenvError as error:
        if _state["debug"]:
            raise
        print(f"ligoenv-server: error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    except Exception as error:
        if _state["debug"]:
            raise
        print(f"ligoenv-server: internal error: {error!r} (run with --debug for details)",
              file=sys.stderr)
        raise SystemExit(1) from None
