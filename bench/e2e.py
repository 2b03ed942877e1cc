"""Benchmark: the server end to end, push to published tree, and the webhooks/s the relay accepts.

latency    a real registry notifies a real `ligoenv-server serve` (SQLite queue, directory
           publisher); images of ~5 MB, ~50 MB and ~300 MB (generated, each a new digest) are
           pushed one at a time, timed from the manifest PUT returning to the index naming the
           digest for the tag and the tag link resolving to the complete tree (polled every 20 ms).
webhooks   `ligoenv-server relay` alone (no workers: jobs stay pending) takes a bounded burst of
           Distribution envelopes from a second process on loopback; every 202 must be a pending
           job after the relay is SIGKILLed. SQLite (synchronous=FULL), then PostgreSQL (fsync on).

Images are cached under $LIGOENV_BENCH_DIR/e2e (default /var/tmp/ligoenv-bench/e2e).
Run: .venv/bin/python bench/e2e.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import WORK, LayerFile, fresh, generated_layer, image_blobs, percentile
from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_MANIFEST
from ligoenv.oci.registry import RegistryClient
from ligoenv_server.jobs import JobState
from ligoenv_server.queue import SqlQueue
from testbed.images import busybox_layer
from testbed.postgres import DATABASE, PostgresCluster
from testbed.registry import free_port
from testbed.stack import SECRET, SERVER, Stack, new_stack, server_config, wait_for

GENERATOR = 1  # bump when the generated content changes, so cached images are rebuilt
ID_FILE = "etc/ligoenv-bench-id"
POLL = 0.020
UNPACKED_CERN_CH = 15 * 60.0  # seconds from push to availability (published figure)
LIGO_PIPELINE_5GB = 13 * 60.0  # seconds to publish a 5 GB image (published figure)


@dataclass(frozen=True)
class SizeClass:
    name: str
    size: int  # uncompressed bytes of generated data
    layers: int  # generated layers, on top of the shared busybox base layer
    count: int
    quick: int
    target: float | None = None  # seconds, push to published


CLASSES = (SizeClass("small", 5_000_000, 1, 10, 3), SizeClass("50mb", 50_000_000, 2, 5, 2, 5.0),
           SizeClass("300mb", 300_000_000, 4, 3, 1))


@dataclass(frozen=True)
class BenchImage:
    name: str  # also the tag it is pushed as
    kind: str  # its size class, or "warmup"
    layers: tuple[LayerFile, ...]

    @property
    def compressed(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def uncompressed(self) -> int:
        return sum(layer.uncompressed for layer in self.layers)


@dataclass(frozen=True)
class Sample:
    image: BenchImage
    digest: str
    push_seconds: float
    latency: float  # manifest PUT returned -> published and indexed
    pushed_at: datetime


# -- images ------------------------------------------------------------------------------

def build_images(work: Path, plan: list[tuple[SizeClass, int]]) -> list[BenchImage]:
    """A warm-up image then `count` images per class, built in parallel once and cached."""
    base = work / "base.tar.gz"
    blob = busybox_layer().blob
    base.write_bytes(blob)
    base_layer = LayerFile(base, Digest.of_bytes(blob).hex, busybox_layer().diff_id.hex, len(blob),
                           0)
    wanted = [("warmup-0", "warmup", 1_000_000, 1)]
    wanted += [(f"{c.name}-{i}", c.name, c.size, c.layers) for c, n in plan for i in range(n)]
    with ProcessPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(_cached_layers, work, *spec) for spec in wanted]
        return [BenchImage(spec[0], spec[1], (base_layer, *f.result()))
                for spec, f in zip(wanted, futures, strict=True)]


def _cached_layers(work: Path, name: str, kind: str, size: int, count: int) -> list[LayerFile]:
    where = work / f"g{GENERATOR}-{name}"
    meta = where / "layers.json"
    if meta.exists():
        return [LayerFile(Path(d["path"]), d["digest"], d["diff_id"], d["size"], d["uncompressed"])
                for d in json.loads(meta.read_text())]
    print(f"generating {name} ({size / 1e6:.0f} MB in {count} layers)...", file=sys.stderr, flush=True)
    fresh(where)
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    layers = []
    for i in range(count):
        extra = {ID_FILE: f"{name}\n".encode()} if i == count - 1 else None
        layers.append(generated_layer(where / f"layer{i}.tar.gz", seed + i, size // count,
                                      f"opt/bench/{name}/l{i}", extra))
    meta.write_text(json.dumps([{**vars(layer), "path": str(layer.path)} for layer in layers]))
    return layers


# -- latency -----------------------------------------------------------------------------

def measure_latency(work: Path, images: list[BenchImage]) -> tuple[list[Sample], list[dict[str, Any]]]:
    stack = new_stack(fresh(work / "stack"))
    try:
        stack.start("serve")
        with RegistryClient(stack.registry.host, anonymous=True, timeout=120) as client:
            samples = []
            for image in images:
                sample = push_and_wait(stack, client, image)
                print(f"  {image.name:10} {image.compressed / 1e6:6.1f} MB pushed in "
                      f"{sample.push_seconds:5.2f} s, published {sample.latency:6.3f} s later",
                      file=sys.stderr, flush=True)
                samples.append(sample)
        return [s for s in samples if s.image.kind != "warmup"], jobs_of(stack)
    finally:
        stack.stop_all()
        stack.registry.stop()


def push_and_wait(stack: Stack, client: RegistryClient, image: BenchImage) -> Sample:
    repository = f"bench/{image.kind}"
    started = time.perf_counter()
    for layer in image.layers:
        client.push_blob(repository, layer.path, Digest.parse(f"sha256:{layer.digest}"))
    config, manifest = image_blobs(image.layers, cmd=("/bin/sh",))
    client.push_blob(repository, config)
    digest = client.push_manifest(repository, image.name, manifest, OCI_MANIFEST)
    pushed, pushed_at = time.perf_counter(), datetime.now(UTC)
    check = _published(stack, repository, image.name, str(digest))
    deadline = pushed + 300
    while not check():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{image.name} not published after 300 s: see {stack.workdir}/serve.log")
        time.sleep(POLL)
    return Sample(image, str(digest), pushed - started, time.perf_counter() - pushed, pushed_at)


def _published(stack: Stack, repository: str, tag: str, digest: str) -> Callable[[], bool]:
    link = stack.root / stack.registry.host / f"{repository}:{tag}"

    def check() -> bool:
        # The tag link moves last, so look at it first: it is the cheaper test.
        try:
            if (link / ID_FILE).read_text() != f"{tag}\n":
                return False
        except OSError:
            return False
        index = stack.index(repository)
        current = index.current(tag) if index else None
        return str(current) == digest and (link / ".singularity.d" / "runscript").is_file()

    return check


def jobs_of(stack: Stack) -> list[dict[str, Any]]:
    out = subprocess.run([str(SERVER), "jobs", "--config", str(stack.config), "--json",
                          "--limit", "10000"], check=True, capture_output=True, text=True).stdout
    return list(json.loads(out))


def pieces(sample: Sample, jobs: list[dict[str, Any]]) -> tuple[float, float, float] | None:
    """(webhook delivery, queue wait, worker) seconds from the job's record, when found."""
    for job in jobs:
        request = job["request"]
        if job["state"] == "done" and request["tag"] == sample.image.name \
                and request["digest"] == sample.digest:
            created = datetime.fromisoformat(job["created_at"])
            done = datetime.fromisoformat(job["updated_at"])
            work = float(job["result"]["seconds"])
            started = (done - created).total_seconds() - work
            return (created - sample.pushed_at).total_seconds(), started, work
    return None


# -- webhooks/s --------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadResult:
    backend: str
    sent: int
    accepted: int
    errors: dict[str, int]
    seconds: float
    latencies: list[float]
    pending: int  # pending jobs found after the relay was killed

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


def measure_webhooks(work: Path, backend: str, queue_url: str, count: int, seconds: float,
                     concurrency: int) -> LoadResult:
    port = free_port()
    config = server_config(fresh(work / f"relay-{backend}"), "127.0.0.1:5000", port,
                           queue_url=queue_url)
    log = (config.parent / "relay.log").open("ab")
    relay = subprocess.Popen([str(SERVER), "relay", "--config", str(config)], stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _healthy(port), "the relay to answer", 20)
        spawn = multiprocessing.get_context("spawn")
        results = spawn.Queue()
        loader = spawn.Process(target=load_process, args=(port, count, seconds, concurrency, results))
        loader.start()
        statuses, latencies, elapsed = results.get(timeout=seconds + 60)
        loader.join(10)
    finally:
        relay.send_signal(signal.SIGKILL)  # no clean shutdown: what was acknowledged must be on disk
        relay.wait()
        log.close()
    with SqlQueue(queue_url) as queue:
        pending = queue.counts()[JobState.PENDING]
    accepted = statuses.pop("202", 0)
    return LoadResult(backend, accepted + sum(statuses.values()), accepted, statuses, elapsed,
                      latencies, pending)


def _healthy(port: int) -> bool:
    import requests

    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def load_process(port: int, count: int, seconds: float, concurrency: int,
                 results: Any) -> None:
    """The load generator (runs in its own process): keep-alive connections on loopback."""
    bodies = [envelope(i) for i in range(count)]
    results.put(asyncio.run(_load(port, bodies, seconds, concurrency)))


def envelope(i: int) -> bytes:
    """A Distribution notification of one tagged manifest push, unique by repository and tag."""
    digest = f"sha256:{i:064x}"
    repository = f"bench/load{i % 50}"
    event = {
        "id": f"00000000-0000-4000-8000-{i:012d}", "timestamp": datetime.now(UTC).isoformat(),
        "action": "push",
        "target": {"mediaType": OCI_MANIFEST, "size": 1234, "digest": digest, "length": 1234,
                   "repository": repository, "tag": f"build-{i}",
                   "url": f"http://127.0.0.1:5000/v2/{repository}/manifests/{digest}"},
        "request": {"id": f"10000000-0000-4000-8000-{i:012d}", "addr": "127.0.0.1:40000",
                    "host": "127.0.0.1:5000", "method": "PUT", "useragent": "skopeo/1.9.3"},
        "actor": {}, "source": {"addr": "bench:5000", "instanceID": "bench"},
    }
    return json.dumps({"events": [event]}).encode()


async def _load(port: int, bodies: list[bytes], seconds: float,
                concurrency: int) -> tuple[dict[str, int], list[float], float]:
    head = ("POST /hooks/registry HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/vnd.docker.distribution.events.v1+json\r\n"
            f"Authorization: Bearer {SECRET}\r\nContent-Length: ")
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    next_index = itertools.count()
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline and (i := next(next_index)) < len(bodies):
            body = bodies[i]
            start = time.perf_counter()
            writer.write(f"{head}{len(body)}\r\n\r\n".encode() + body)
            try:
                status = await asyncio.wait_for(_response(reader), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
                statuses[type(error).__name__] += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append(time.perf_counter() - start)
            statuses[status] += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return dict(statuses), latencies, time.perf_counter() - started


async def _response(reader: asyncio.StreamReader) -> str:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = head.split(" ", 2)[1]
    length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                   if line.lower().startswith("content-length:")), 0)
    await reader.readexactly(length)
    return status


class DurablePostgres(PostgresCluster):
    """The test cluster, but with fsync on: the test one turns it off, which is no durability."""

    def start(self) -> DurablePostgres:
        self.sockets.mkdir()
        if self.as_root:
            import shutil

            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                  "--auth-local=trust", "--auth-host=trust")
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t",
                  "30", "start")
        self.started = True
        self.create_database(DATABASE)
        return self


# -- report ------------------------------------------------------------------------------

def report_latency(samples: list[Sample], jobs: list[dict[str, Any]]) -> None:
    print(f"\npush -> published and indexed (`ligoenv-server serve`: SQLite queue, directory "
          f"publisher, 1 worker; one push at a time after a warm-up push; polled every "
          f"{POLL * 1e3:.0f} ms; {os.cpu_count()} cores)")
    print(f"{'image':8} {'n':>3} {'MB gz/raw':>11} {'p50 s':>7} {'p95 s':>7} {'max s':>7} "
          f"{'webhook':>8} {'queued':>7} {'worker':>7} {'raw MB/s':>8}")
    for size_class in CLASSES:
        mine = [s for s in samples if s.image.kind == size_class.name]
        if not mine:
            continue
        latency = [s.latency for s in mine]
        parts = [p for p in (pieces(s, jobs) for s in mine) if p is not None]
        medians = [percentile([p[k] for p in parts], 0.5) for k in range(3)]
        gz, raw = mine[0].image.compressed / 1e6, mine[0].image.uncompressed / 1e6
        print(f"{size_class.name:8} {len(mine):>3} {gz:5.0f}/{raw:<5.0f} "
              f"{percentile(latency, 0.5):7.2f} {percentile(latency, 0.95):7.2f} {max(latency):7.2f} "
              f"{medians[0]:8.3f} {medians[1]:7.3f} {medians[2]:7.2f} "
              f"{raw / percentile(latency, 0.5):8.0f}")
    print("(medians from `ligoenv-server jobs --json`: webhook = PUT returned -> job created "
          "(< 0: the registry notified before answering), queued = created -> claimed, "
          "worker = claimed -> done)")
    for size_class in CLASSES:
        latency = [s.latency for s in samples if s.image.kind == size_class.name]
        if latency:
            print(_latency_line(size_class, latency, samples))


def _latency_line(size_class: SizeClass, latency: list[float], samples: list[Sample]) -> str:
    p50 = percentile(latency, 0.5)
    line = f"{size_class.name} image: p50 {p50:.2f} s, p95 {percentile(latency, 0.95):.2f} s ("
    if size_class.target is not None:
        met = "met" if percentile(latency, 0.95) < size_class.target else "MISSED"
        line += f"target < {size_class.target:.0f} s: {met}, {size_class.target / p50:.1f}x margin at p50; "
    line += f"~{UNPACKED_CERN_CH / p50:.0f}x faster than the 15 min of unpacked.cern.ch)"
    if size_class.name == "300mb":
        raw = sum(s.image.uncompressed for s in samples if s.image.kind == size_class.name)
        rate = raw / sum(latency)
        line += (f"\n  at {rate / 1e6:.0f} MB/s a 5 GB image would take ~{5e9 / rate:.0f} s vs the "
                 f"{LIGO_PIPELINE_5GB / 60:.0f} min of the original LIGO pipeline (linear extrapolation "
                 f"of these few-large-file images, not measured)")
    return line


def report_webhooks(results: list[LoadResult], count: int, seconds: float, concurrency: int) -> None:
    print(f"\nwebhooks accepted with durable enqueue (relay only, no workers; load from a second "
          f"process: {concurrency} keep-alive connections, at most {count} envelopes or {seconds:.0f} s)")
    print(f"{'queue':26} {'sent':>6} {'202/s':>7} {'errors':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'pending after SIGKILL':>22}")
    for r in results:
        durable = "= 202s, ok" if r.pending == r.accepted else f"!= {r.accepted} 202s: LOST"
        print(f"{r.backend:26} {r.sent:>6} {r.rate:7.0f} {sum(r.errors.values()):>7} "
              f"{percentile(r.latencies, 0.5) * 1e3:7.1f} {percentile(r.latencies, 0.99) * 1e3:7.1f} "
              f"{max(r.latencies, default=0) * 1e3:7.0f} "
              f"{r.pending:>8} {durable}")
        if r.errors:
            print(f"  errors: {r.errors}")
    for r in results:
        met = "met" if r.rate >= 500 else "MISSED"
        print(f"webhooks/s, {r.backend}: {r.rate:.0f}/s (target >= 500/s: {met}, {r.rate / 500:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (3 small, 2 x 50 MB, 1 x 300 MB)")
    parser.add_argument("--webhooks", type=int, default=5000, help="envelopes to send at most")
    parser.add_argument("--seconds", type=float, default=30.0, help="load for at most this long")
    parser.add_argument("--concurrency", type=int, default=16, help="load connections")
    parser.add_argument("--skip", choices=("latency", "webhooks", "postgres"), action="append",
                        default=[], help="leave a part out (repeatable)")
    args = parser.parse_args()
    work = WORK / "e2e"
    work.mkdir(parents=True, exist_ok=True)
    if "latency" not in args.skip:
        plan = [(c, c.quick if args.quick else c.count) for c in CLASSES]
        images = build_images(work, plan)
        print("pushing...", file=sys.stderr, flush=True)
        samples, jobs = measure_latency(work, images)
        report_latency(samples, jobs)
    if "webhooks" not in args.skip:
        run_webhooks(work, args)


def run_webhooks(work: Path, args: argparse.Namespace) -> None:
    load = (args.webhooks, args.seconds, args.concurrency)
    sqlite_url = f"sqlite:///{fresh(work / 'queue-sqlite') / 'queue.db'}"
    results = [measure_webhooks(work, "sqlite synchronous=FULL", sqlite_url, *load)]
    if "postgres" not in args.skip:
        cluster = DurablePostgres()
        try:
            cluster.start()
            results.append(measure_webhooks(work, "postgresql 15 fsync=on", cluster.url(), *load))
        finally:
            cluster.stop()
    report_webhooks(results, *load)


if __name__ == "__main__":
    main()
