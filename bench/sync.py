"""Benchmark `ligoenv-server sync`: a list whose one wildcard expands to 2,000 tags on a local
registry, none of them changed since the index recorded them. Targets: <= 10 s, <= 1 request
per tag. Requests are counted from the registry's own access log. Peer: `skopeo inspect --raw`
per tag (what a list-driven publisher without a digest index must do), on a sample of tags.

    .venv/bin/python bench/sync.py [--tags 2000] [--rate 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import VENV_BIN
from ligoenv.oci.manifest import OCI_MANIFEST
from ligoenv.oci.registry import RegistryClient
from ligoenv.store.index import DigestRecord, RepositoryIndex
from ligoenv.store.index.writer import convert
from ligoenv.store.publishroot import PublishRoot
from ligoenv_server.config import load_config
from ligoenv_server.sync import Syncer
from ligoenv_server.synclists import read_list
from ligoenv_server.synctimer import publisher_tags
from testbed.ocibuild import Entry, Image, Layer
from testbed.registry import RegistryProcess

REPOSITORY = "bench/sync"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s to the registry")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sample", type=int, default=50, help="tags for the skopeo peer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ligoenv-bench-sync-") as scratch:
        work = Path(scratch)
        registry = RegistryProcess(work / "registry", access_log=True).start()
        try:
            measure(work, registry, args)
        finally:
            registry.stop()


def measure(work: Path, registry: RegistryProcess, args: argparse.Namespace) -> None:
    tags = [f"t{i:05d}" for i in range(args.tags)]
    started = time.perf_counter()
    digest = push_tags(registry, tags)
    print(f"setup: {len(tags)} tags of one image pushed in {time.perf_counter() - started:.1f} s")
    config_path = write_config(work, registry.host, args)
    config = load_config(config_path)
    record_index(config.publisher.root, registry.host, tags, digest)
    image_list = work / "docker_images.txt"
    image_list.write_text(f"# every tag of the benchmark repository\n{registry.host}/{REPOSITORY}:*\n")

    before, registry_cpu = registry.requests(), cpu_seconds(registry)
    began, cpu = time.perf_counter(), time.process_time()
    report = Syncer(config, publisher_tags(config), None).run([read_list(image_list, "bench")])
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    registry_cpu = cpu_seconds(registry) - registry_cpu
    time.sleep(0.3)  # the access log is written after the answer
    counted = registry.requests() - before
    if report.counters()["changed"] or report.failures:
        raise SystemExit(f"expected no changes and no failures: {report.summary()}")

    before = registry.requests()
    began = time.perf_counter()
    out = subprocess.run([str(VENV_BIN / "ligoenv-server"), "sync", str(image_list), "--config",
                          str(config_path), "--json", "--dry-run"], check=True,
                         capture_output=True, text=True).stdout
    cli_seconds = time.perf_counter() - began
    time.sleep(0.3)
    cli_counted = registry.requests() - before
    cli_report = json.loads(out)

    peer_seconds, peer_requests = skopeo_sample(registry, tags[: args.sample])
    per_tag_peer = peer_seconds / len(tags[: args.sample])
    print(f"\nsync of one wildcard over {len(tags)} unchanged tags "
          f"(rate {args.rate:g}/s, concurrency {args.concurrency}):")
    print(f"  in-process:   {seconds:6.2f} s   {counted} requests in the registry log "
          f"({counted / len(tags):.4f} per tag; the report counted {report.requests})")
    print(f"                CPU: sync {cpu:.2f} s, registry {registry_cpu:.2f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  command line: {cli_seconds:6.2f} s   {cli_counted} requests "
          f"({cli_counted / len(tags):.4f} per tag; seen {cli_report['seen']})")
    print(f"  skopeo inspect --raw, {args.sample} tags: {peer_seconds:.2f} s, "
          f"{peer_requests / args.sample:.1f} requests per tag; for {len(tags)} tags "
          f"~{per_tag_peer * len(tags):.0f} s (extrapolated) = "
          f"{per_tag_peer * len(tags) / seconds:.0f}x sync's time")
    print(f"  targets: <= 10 s ({'met' if seconds <= 10 else 'MISSED'}), <= 1 request per tag "
          f"({'met' if counted <= len(tags) else f'{counted - len(tags)} over: the tag-list pages'})")


def push_tags(registry: RegistryProcess, tags: list[str]) -> str:
    """One small image, pushed once, then its manifest under every tag (one PUT each)."""
    layer = Layer.from_entries([Entry("etc", "dir", mode=0o755),
                                Entry("etc/bench", data=b"sync benchmark\n", mode=0o644)])
    image = Image(layers=[layer])
    with RegistryClient(registry.host, anonymous=True) as client:
        client.push_blob(REPOSITORY, layer.blob)
        client.push_blob(REPOSITORY, image.config_bytes())
        raw = image.manifest_bytes()
        with ThreadPoolExecutor(8) as pool:
            digests = set(pool.map(lambda tag: str(client.push_manifest(REPOSITORY, tag, raw, OCI_MANIFEST)),
                                   tags))
    (digest,) = digests
    return digest


def record_index(root: Path, host: str, tags: list[str], digest: str) -> None:
    """The index as a sync that found nothing to do would leave it: every tag at `digest`."""
    from ligoenv.oci.digest import Digest

    layout = PublishRoot(root)
    index = RepositoryIndex.empty(host, REPOSITORY)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    manifest = Digest.parse(digest)
    index.record_image(DigestRecord(manifest, OCI_MANIFEST, {"linux/amd64": manifest},
                                    platform="linux/amd64", path=layout.relative_image_path(manifest),
                                    published=when))
    for tag in tags:
        index.move_tag(tag, manifest, when, "bench")
    convert(root, index).apply()


def write_config(work: Path, host: str, args: argparse.Namespace) -> Path:
    path = work / "server.toml"
    path.write_text(f"""
state_dir = "{work / 'state'}"

[registries.local]
host = "{host}"
requests_per_second = {args.rate}

[publisher]
root = "{work / 'publish'}"

[sync]
concurrency = {args.concurrency}
""")
    return path


def cpu_seconds(registry: RegistryProcess) -> float:
    """User + system CPU time the registry process has used so far."""
    assert registry.process is not None
    fields = Path(f"/proc/{registry.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def skopeo_sample(registry: RegistryProcess, tags: list[str]) -> tuple[float, int]:
    before = registry.requests()
    began = time.perf_counter()
    for tag in tags:
        subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                        f"docker://{registry.host}/{REPOSITORY}:{tag}"], check=True, capture_output=True)
    seconds = time.perf_counter() - began
    time.sleep(0.3)
    return seconds, registry.requests() - before


if __name__ == "__main__":
    main()
