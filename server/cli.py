"""The `ligoenv-server` command: run the roles (all in one, or each alone) and manage jobs."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ligoenv.errors import LigoenvError

from .config import ServerConfig, default_config, default_state_dir, load_config
from .model import Action, JobState, PublishRequest

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Publish registry images to CVMFS or a directory, with a tag history.")
_state = {"debug": False}

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Server config (TOML). Default: $LIGOENV_SERVER_CONFIG, else built-in "
    "defaults (SQLite queue and publish root under the state directory).")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _state["debug"] = debug


def _config(path: Path | None, **defaults: Any) -> ServerConfig:
    if path is None and defaults:
        import os

        if not os.environ.get("LIGOENV_SERVER_CONFIG"):
            state = defaults.pop("state_dir", None) or default_state_dir()
            return default_config(Path(state), **{k: v for k, v in defaults.items() if v})
    return load_config(path)


def _logging(config: ServerConfig) -> None:
    from .logs import configure_logging, url_secrets

    configure_logging(config.log, redact=url_secrets(config))


@app.command()
def serve(config: ConfigOption = None,
          host: Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(help="Listen port (default 8080).")] = None,
          state_dir: Annotated[Path | None, typer.Option(help="State directory for the built-in "
                                                         "defaults.")] = None,
          registry: Annotated[str | None, typer.Option(help="Registry host the built-in "
                                                       "endpoint publishes from.")] = None) -> None:
    """Relay, queue and worker in one process (the embedded defaults need no config file)."""
    cfg = _config(config, state_dir=state_dir, registry_host=registry, host=host, port=port)
    _logging(cfg)
    from .app import create_server_app

    _say_where(cfg)
    _uvicorn(create_server_app(cfg), host or cfg.relay.host, port or cfg.relay.port)


@app.command()
def relay(config: ConfigOption = None) -> None:
    """Only the relay (and the read API): webhooks in, jobs to the configured queue."""
    cfg = _config(config)
    _logging(cfg)
    from .app import create_server_app

    _uvicorn(create_server_app(cfg, run_workers=False), cfg.relay.host, cfg.relay.port)


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
           concurrency: Annotated[int | None, typer.Option(help="Worker threads.")] = None) -> None:
    """Only workers: claim jobs, publish, until SIGTERM (the job in hand is finished first)."""
    cfg = _config(config)
    _logging(cfg)
    from .app import publisher_from, queue_from, worker_pool

    if concurrency:
        from dataclasses import replace

        cfg = replace(cfg, worker=replace(cfg.worker, concurrency=concurrency))
    queue = queue_from(cfg)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threads = worker_pool(cfg, queue, publisher_from(cfg)).run(stop)
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(0.5)
    queue.close()


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
    from .app import publisher_from, queue_from

    if enqueue:
        queue = queue_from(cfg)
        result = queue.enqueue(request)
        queue.close()
        _print({"job_id": result.job_id, "created": result.created}, as_json,
               f"job {result.job_id} {'queued' if result.created else 'already pending'}")
        return
    from .worker import Worker

    outcome = Worker(cfg, None, publisher_from(cfg)).process(request)
    _print(outcome, as_json, _describe(outcome))


@app.command()
def jobs(config: ConfigOption = None,
         state: Annotated[JobState | None, typer.Option(help="Only jobs in this state.")] = None,
         limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List jobs (newest first) with their state, attempts and last error."""
    from .app import queue_from

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
    from .app import queue_from

    queue = queue_from(_config(config))
    job = queue.retry(job_id)
    queue.close()
    typer.echo(f"job {job.id} is {job.state} again")


@app.command("check-config")
def check_config(config: ConfigOption = None) -> None:
    """Validate the configuration and print what is in effect (secrets shown as ***)."""
    cfg = _config(config)
    typer.echo(f"relay: http://{cfg.relay.host}:{cfg.relay.port}")
    for endpoint in cfg.relay.endpoints:
        typer.echo(f"  {endpoint.path}  {endpoint.kind} from {endpoint.registry_host} "
                   f"(auth {endpoint.auth.type})")
    typer.echo(f"queue: {_redact_url(cfg.queue.url)}")
    typer.echo(f"publisher: {cfg.publisher.backend} at {cfg.publisher.root} "
               f"(layout {cfg.publisher.layout}; {', '.join(map(str, cfg.publisher.platforms))})")


def _redact_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _say_where(cfg: ServerConfig) -> None:
    from .app import state_paths

    for name, path in state_paths(cfg).items():
        print(f"ligoenv-server: {name}: {path}", file=sys.stderr)
    for endpoint in cfg.relay.endpoints:
        print(f"ligoenv-server: webhook endpoint http://{cfg.relay.host}:{cfg.relay.port}"
              f"{endpoint.path} ({endpoint.kind} from {endpoint.registry_host})", file=sys.stderr)


def _uvicorn(asgi: Any, host: str, port: int) -> None:
    import uvicorn

    # log_config=None: uvicorn's access log goes through our handler, which redacts secrets.
    uvicorn.run(asgi, host=host, port=port, log_config=None, access_log=False,
                timeout_graceful_shutdown=None)


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
