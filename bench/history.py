"""How the digest index scales with history: a repository with 10 years of 100 nightly tags
(365,000 events and as many digest records) beside the same repository with one tag.

The index is built with the project's own code (`ligoenv.store.index.writer.convert`: the files a
publisher would write, written here without fsync to save time). Then, interleaved, each
operation runs as a fresh process several times against both repositories and the medians are
compared:

  publish (tag move)   the directory publisher moving a tag to an already published digest
  resolve              `ligoenv resolve REF --index ROOT`
  resolve --at         `ligoenv resolve REF --at <7 years back> --index ROOT`
  history --limit 10   `ligoenv history REF --limit 10 --index ROOT`
  read API             GET /v1/resolve?ref=REF of a running read API (one server per run)

and the bytes the publish process wrote (`wchar` of /proc/self/io). Targets: every long/short
ratio <= 1.25, <= 64 KiB written per publish, resolve from the index <= 50 ms.

    .venv/bin/python bench/history.py [--years 10] [--tags 100] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import VENV_BIN, WORK
from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import OCI_MANIFEST
from ligoenv.store.index import DigestRecord, RepositoryIndex, TagEvent
from ligoenv.store.index.writer import IndexChange, convert
from ligoenv.store.times import format_time

REGISTRY = "registry.example.org"
LONG, SHORT = "bench/long", "bench/short"
TAG = "nightly-000"
END = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
LIGOENV = str(VENV_BIN / "ligoenv")
PYTHON = str(VENV_BIN / "python")
MOVE_DIGESTS = 8  # the publish benchmark moves the tag among these (their trees exist)


def digest(name: str) -> Digest:
    return Digest.of_bytes(name.encode())


def record(d: Digest, when: datetime) -> DigestRecord:
    return DigestRecord(d, OCI_MANIFEST, {"linux/amd64": d}, "linux/amd64", digest(f"{d}/config"),
                        (digest(f"{d}/layer"),), 123_456_789, f".images/{d.hex[:2]}/{d.hex}", when)


def write_fast(change: IndexChange, made: set[Path]) -> int:
    """The files of `change`, written without fsync (building only); returns bytes written."""
    total = 0
    for relative, text in change.writes:
        path = change.root / relative
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_text(text)
        total += len(text)
    return total


def build(root: Path, years: int, tags: int) -> None:
    """Both repositories, one tag at a time so that memory stays small."""
    days = 365 * years
    start = END - timedelta(days=days)
    made: set[Path] = set()
    written = 0
    began = time.perf_counter()
    for n in range(tags):
        tag = f"nightly-{n:03d}"
        index = RepositoryIndex.empty(REGISTRY, LONG)
        for day in range(days):
            when = start + timedelta(days=day, minutes=n)
            d = digest(f"{tag}/{day}")
            index.digests[str(d)] = record(d, when)
            index.tags.setdefault(tag, []).append(TagEvent(d, when, None, "webhook:bench"))
        events = index.tags[tag]
        index.tags[tag] = [TagEvent(e.digest, e.since, events[i + 1].since if i + 1 < len(events)
                                    else None, e.source) for i, e in enumerate(events)]
        written += write_fast(convert(root, index), made)
        print(f"  built {tag}: {days} events ({written / 1e6:.0f} MB so far, "
              f"{time.perf_counter() - began:.0f} s)", file=sys.stderr)
    short = RepositoryIndex.empty(REGISTRY, SHORT)
    d = digest(f"{TAG}/0")
    short.record_image(record(d, start))
    short.move_tag(TAG, d, start, "webhook:bench")
    write_fast(convert(root, short), made)
    for i in range(MOVE_DIGESTS):
        d = digest(f"move/{i}")
        (root / ".images" / d.hex[:2] / d.hex).mkdir(parents=True, exist_ok=True)
    (root / ".built").write_text(f"{years} {tags}\n")


def publish_child(root: str, repository: str, number: str) -> None:
    """One tag move through the directory publisher (run as its own process)."""
    from ligoenv.store.index.reader import open_reader
    from ligoenv_server.publishers.directory import DirectoryPublisher
    from ligoenv_server.publishers.staged import StagedImage, StagedPlatform

    # A move to a digest the tag is not on now, at the current time: always a real tag move,
    # however many times the benchmark has run against this index.
    current = open_reader(root).get(REGISTRY, repository).current(TAG)
    moves = [digest(f"move/{(int(number) + k) % MOVE_DIGESTS}") for k in range(2)]
    d = moves[0] if moves[0] != current else moves[1]
    when = datetime.now(UTC)
    platform = StagedPlatform("linux/amd64", d, record(d, when), None)
    image = StagedImage(REGISTRY, repository, TAG, d, OCI_MANIFEST, (platform,), "webhook:bench",
                        when)
    outcome = DirectoryPublisher(Path(root)).publish(image)
    assert outcome.tag_moved
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    print(io["wchar"])


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed, done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_api(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    code = ("import uvicorn, sys\nfrom pathlib import Path\n"
            "from starlette.applications import Starlette\n"
            "from ligoenv.store.publishroot import PublishRoot\n"
            "from ligoenv_server.readapi import read_routes\n"
            f"app = Starlette(routes=read_routes(PublishRoot(Path({str(root)!r}))))\n"
            f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning')\n")
    process = subprocess.Popen([PYTHON, "-c", code])
    url = f"http://127.0.0.1:{port}"
    import requests

    for _ in range(200):
        try:
            requests.get(url + "/v1/repositories?registry=x", timeout=1)
            return process, url
        except requests.RequestException:
            time.sleep(0.05)
    raise SystemExit("bench: the read API did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    root = WORK / f"history-{args.years}y-{args.tags}t"
    marker = root / ".built"
    if not marker.exists() or marker.read_text() != f"{args.years} {args.tags}\n":
        print(f"building {args.years} years x {args.tags} tags in {root} ...", file=sys.stderr)
        build(root, args.years, args.tags)
    back = 0.7 * args.years  # 7 years back in a decade of history
    at = format_time(END - timedelta(days=365 * back))
    ops = {
        "resolve": lambda repo, i: [LIGOENV, "resolve", "--index", str(root),
                                    f"{REGISTRY}/{repo}:{TAG}"],
        f"resolve --at ({back:g} years back)": lambda repo, i: [LIGOENV, "resolve", "--index", str(root),
                                                        "--at", at, f"{REGISTRY}/{repo}:{TAG}"],
        "history --limit 10": lambda repo, i: [LIGOENV, "history", "--limit", "10", "--index",
                                               str(root), f"{REGISTRY}/{repo}:{TAG}"],
        "publish (tag move)": lambda repo, i: [PYTHON, __file__, "_publish", str(root), repo,
                                               str(i)],
    }
    samples: dict[tuple[str, str], list[float]] = {}
    wrote: dict[str, list[int]] = {LONG: [], SHORT: []}
    server, url = read_api(root)
    import requests

    session = requests.Session()
    try:
        for i in range(args.runs):
            order = (LONG, SHORT) if i % 2 else (SHORT, LONG)
            for name, argv in ops.items():
                for repo in order:
                    elapsed, out = timed(argv(repo, i))
                    samples.setdefault((name, repo), []).append(elapsed)
                    if name.startswith("publish"):
                        wrote[repo].append(int(out.strip()))
            for repo in order:
                start = time.perf_counter()
                answer = session.get(f"{url}/v1/resolve", params={"ref": f"{REGISTRY}/{repo}:{TAG}"},
                                     timeout=30)
                samples.setdefault(("read API /v1/resolve", repo), []).append(
                    time.perf_counter() - start)
                assert answer.status_code == 200, answer.text
    finally:
        server.terminate()
        server.wait()
    events = 365 * args.years * args.tags
    print(f"\nindex history: {args.years} years x {args.tags} nightly tags = {events:,} events "
          f"and digest records, beside one tag; medians of {args.runs} fresh processes, "
          "interleaved\n")
    print(f"| operation | 1 tag | {args.years} years x {args.tags} tags | ratio |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    for name in [*ops, "read API /v1/resolve"]:
        short, long = (statistics.median(samples[(name, r)]) * 1000 for r in (SHORT, LONG))
        worst = max(worst, long / short)
        print(f"| {name} | {short:.1f} ms | {long:.1f} ms | {long / short:.2f}x |")
    per_publish = {r: statistics.median(w) for r, w in wrote.items()}
    print(f"| bytes written per publish | {per_publish[SHORT] / 1024:.1f} KiB | "
          f"{per_publish[LONG] / 1024:.1f} KiB | {per_publish[LONG] / per_publish[SHORT]:.2f}x |")
    resolve = statistics.median(samples[("resolve", LONG)]) * 1000
    print(f"\nworst long/short ratio {worst:.2f}x (target <= 1.25x); "
          f"{max(per_publish.values()) / 1024:.1f} KiB per publish (target <= 64 KiB); "
          f"resolve from the long index {resolve:.0f} ms (target <= 50 ms)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_publish":
        publish_child(*sys.argv[2:5])
    else:
        os.environ.setdefault("LIGOENV_BENCH_DIR", str(WORK))
        main()
