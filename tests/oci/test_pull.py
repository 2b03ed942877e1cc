"""pull() and the layer cache against the real registry: trees, platforms, refusals, downloads once."""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ligoenv.oci.cache import CorruptCacheEntry, LayerCache
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import (
    DigestMismatch,
    LigoenvError,
    NotFound,
    PlatformNotFound,
    RegistryError,
    UnsafeArchive,
    UnsupportedImage,
    UsageError,
)
from ligoenv.oci.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Descriptor
from ligoenv.oci.platform import Platform
from ligoenv.oci.pull import Downloads, pull, remove_tree, resolve_image
from ligoenv.oci.reference import Reference
from ligoenv.oci.registry import Progress, RegistryClient
from ligoenv.oci.unpack import UnpackOptions
from testbed import hostile
from testbed.forked import in_child
from testbed.httpstub import Reply, Stub
from testbed.images import (
    ARM64,
    build_busybox_image,
    build_multiplatform_images,
    busybox_layer,
    files_layer,
    push_image,
    push_nested_index,
    push_umoci_image,
)
from testbed.ocibuild import LAYER_GZIP, LAYER_TAR, LAYER_ZSTD, Entry, Image, Layer, canonical_json
from testbed.registry import RegistryProcess
from testbed.throttle import ThrottledProxy
from testbed.trees import frozen_facts
from tests.oci.conftest import blob_file


class CountingClient(RegistryClient):
    """A real client that records which blobs it downloaded."""

    def __init__(self, registry: str) -> None:
        super().__init__(registry, anonymous=True)
        self.downloads: list[Digest] = []

    def download_blob(self, repository: str, descriptor: Descriptor, dest: Path,
                      progress: Progress | None = None, **kwargs: Any) -> None:
        self.downloads.append(descriptor.digest)
        super().download_blob(repository, descriptor, dest, progress, **kwargs)


def ref_on(registry: RegistryProcess, text: str) -> Reference:
    return Reference.parse(f"{registry.host}/{text}")


def leftovers(directory: Path) -> list[str]:
    """Hidden staging or scratch directories that a pull must not leave behind."""
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


def three_layer_image(tag: str) -> Image:
    overlay = Layer.from_entries([
        Entry("etc", "dir", mode=0o755),
        Entry("etc/motd", data=b"second version\n"),
        Entry("etc/.wh.remove-me"),
        Entry("opt", "dir", mode=0o755),
        Entry("opt/run.sh", data=b"#!/bin/sh\necho run\n", mode=0o755),
    ])
    return build_busybox_image(tag, {"etc/motd": "first version\n", "etc/remove-me": "gone soon\n"},
                               extra_layers=[overlay])


def test_pull_multi_layer_image(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    pushed = push_image(registry.host, repo, "v1", three_layer_image("multi"))
    target = tmp_path / "rootfs"
    seen: list[tuple[int, int]] = []
    pulled = pull(ref_on(registry, f"{repo}:v1"), target, cache=LayerCache(tmp_path / "cache"),
                  progress=lambda done, total: seen.append((done, total)))
    assert (target / "etc/motd").read_text() == "second version\n"
    assert not (target / "etc/remove-me").exists()
    assert (target / "etc/ligoenv-image-tag").read_text() == "multi\n"
    assert os.readlink(target / "bin/sh") == "busybox"
    assert (target / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert os.access(target / "opt/run.sh", os.X_OK)
    assert pulled.reference == ref_on(registry, f"{repo}:v1@{pushed}")
    assert (pulled.top_digest, pulled.top_media_type) == (pushed, OCI_MANIFEST)
    assert pulled.manifest.digest == pushed and pulled.platform == Platform("linux", "amd64")
    assert pulled.platforms == {} and len(pulled.layers) == 3
    assert [r.diff_id for r in pulled.layers] == list(pulled.config.diff_ids)
    total = pulled.manifest.total_size - pulled.manifest.config.size
    assert seen[-1] == (total, total)
    assert leftovers(tmp_path) == []


def test_pull_through_a_paced_link_makes_the_same_tree(registry: RegistryProcess, repo: str,
                                                      tmp_path: Path) -> None:
    """The benchmarks' network link (testbed.throttle) relays every byte, in parallel."""
    push_image(registry.host, repo, "v1", three_layer_image("paced"))
    direct, paced = tmp_path / "direct", tmp_path / "paced"
    pull(ref_on(registry, f"{repo}:v1"), direct, cache=LayerCache(tmp_path / "cache-direct"))
    with ThrottledProxy(registry.host, rate=50e6) as link:
        pull(Reference.parse(f"{link.host}/{repo}:v1"), paced, cache=LayerCache(tmp_path / "cache-paced"))
    facts = frozen_facts(paced), frozen_facts(direct)
    for each in facts:
        del each["."]  # the staging directory's own mtime: when it was made
    assert facts[0] == facts[1]


def test_pull_index_default_and_chosen_platform(registry: RegistryProcess, repo: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    top = push_image(registry.host, repo, "multi", build_multiplatform_images("multi"))
    ref = ref_on(registry, f"{repo}:multi")
    monkeypatch.setattr(Platform, "host", classmethod(lambda cls: Platform("linux", "amd64")))
    default = pull(ref, tmp_path / "amd64")
    arm = pull(ref, tmp_path / "arm64", platform=ARM64)
    assert default.top_digest == arm.top_digest == top and arm.top_media_type == OCI_INDEX
    assert (default.platform, arm.platform) == (Platform("linux", "amd64"), ARM64)
    assert default.platforms == arm.platforms == {"linux/amd64": default.manifest.digest,
                                                  "linux/arm64": arm.manifest.digest}
    assert arm.config.architecture == "arm64"
    assert (tmp_path / "arm64/etc/ligoenv-image-tag").read_text() == "multi\n"


def test_platform_listed_twice_maps_to_the_manifest_pulled(registry: RegistryProcess, repo: str,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = build_busybox_image("first"), build_busybox_image("second")
    push_image(registry.host, repo, "twice", [first, second])
    monkeypatch.setattr(Platform, "host", classmethod(lambda cls: Platform("linux", "amd64")))
    pulled = pull(ref_on(registry, f"{repo}:twice"), tmp_path / "out")
    assert (tmp_path / "out/etc/ligoenv-image-tag").read_text() == "first\n"
    assert pulled.platforms == {"linux/amd64": pulled.manifest.digest}


def test_missing_platform_lists_the_available_ones(registry: RegistryProcess, client: RegistryClient,
                                                   repo: str, tmp_path: Path) -> None:
    top = push_image(registry.host, repo, "multi", build_multiplatform_images("p"))
    with pytest.raises(PlatformNotFound) as caught:
        pull(ref_on(registry, f"{repo}:multi"), tmp_path / "out", platform=Platform.parse("linux/s390x"))
    assert str(caught.value) == (f"no image for platform linux/s390x in index {top.short}; "
                                 "available: linux/amd64, linux/arm64")
    assert not (tmp_path / "out").exists()
    resolved = resolve_image(client, ref_on(registry, f"{repo}:multi"), ARM64)
    assert resolved.platform == ARM64 and resolved.top_digest == top


def test_single_platform_image_and_another_platform(registry: RegistryProcess, repo: str,
                                                    tmp_path: Path) -> None:
    push_image(registry.host, repo, "v1", build_busybox_image("single"))
    with pytest.raises(PlatformNotFound, match=r"is a single-platform image for linux/amd64; "
                                                r"linux/arm64 was requested"):
        pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out", platform=ARM64)
    assert os.listdir(tmp_path) == []


def test_pull_docker_schema2_image_and_list(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    push_image(registry.host, repo, "d", build_busybox_image("docker"), docker=True)
    push_image(registry.host, repo, "list", build_multiplatform_images("docker"), docker=True)
    single = pull(ref_on(registry, f"{repo}:d"), tmp_path / "d")
    listed = pull(ref_on(registry, f"{repo}:list"), tmp_path / "list", platform=ARM64)
    assert (single.top_media_type, listed.top_media_type) == (DOCKER_MANIFEST, DOCKER_LIST)
    assert (tmp_path / "d/etc/ligoenv-image-tag").read_text() == "docker\n"
    assert (tmp_path / "list/bin/busybox").exists()


def test_pull_zstd_and_uncompressed_layers(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    image = Image([busybox_layer(LAYER_ZSTD), files_layer({"data/plain.txt": "tar\n"}, LAYER_TAR)])
    push_image(registry.host, repo, "v1", image)
    pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out")
    assert (tmp_path / "out/data/plain.txt").read_text() == "tar\n"
    assert os.readlink(tmp_path / "out/bin/sh") == "busybox"


def test_pull_image_built_by_umoci(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    pushed = push_umoci_image(registry.host, repo, "u1", tmp_path / "build", {"etc/motd": "umoci\n"})
    pulled = pull(ref_on(registry, f"{repo}:u1"), tmp_path / "out")
    assert pulled.top_digest == pushed
    assert (tmp_path / "out/etc/motd").read_text() == "umoci\n"
    assert os.readlink(tmp_path / "out/bin/sh") == "busybox"


# -- refusals leave nothing behind -----------------------------------------------------------


def test_tampered_layer_is_refused_and_nothing_is_left(registry: RegistryProcess, repo: str,
                                                       tmp_path: Path) -> None:
    image = build_busybox_image("tampered", {"etc/unique": repo})
    push_image(registry.host, repo, "v1", image)
    top = image.layers[1]
    stored = blob_file(registry, top.digest)
    stored.write_bytes(stored.read_bytes()[:-1] + bytes([stored.read_bytes()[-1] ^ 0xFF]))
    cache = LayerCache(tmp_path / "cache")
    with pytest.raises(DigestMismatch, match=f"blob {top.digest.short} of {repo}: expected {top.digest}"):
        pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out", cache=cache)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert not cache.path_for(top.digest).exists()
    # the base layer's download was cancelled, or had finished: never half there
    assert set(os.listdir(cache.path_for(top.digest).parent)) <= {image.layers[0].digest.hex}


def test_wrong_diff_id_is_refused_and_nothing_is_left(registry: RegistryProcess, repo: str,
                                                      tmp_path: Path) -> None:
    honest = files_layer({"etc/claim": "the config lies about me\n"})
    lying = Layer(honest.blob, honest.media_type, Digest.of_bytes(b"something else"))
    push_image(registry.host, repo, "v1", Image([busybox_layer(), lying]))
    client = CountingClient(registry.host)
    with pytest.raises(DigestMismatch, match="uncompressed layer: expected diff_id"):
        pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out", client=client)
    assert os.listdir(tmp_path) == []
    assert sorted(client.downloads) == sorted([busybox_layer().digest, honest.digest])  # not retried


def test_expansion_cap_counts_all_layers_of_the_image(registry: RegistryProcess, repo: str,
                                                      tmp_path: Path) -> None:
    layers = [files_layer({"a": "x" * 100_000}), files_layer({"b": "y" * 100_000})]
    push_image(registry.host, repo, "v1", Image(layers))
    with pytest.raises(UnsafeArchive, match="the layers expand to more than 150000 bytes"):
        pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out",
             options=UnpackOptions(max_expanded_bytes=150_000))
    assert os.listdir(tmp_path) == []
    pulled = pull(ref_on(registry, f"{repo}:v1"), tmp_path / "fits",
                  options=UnpackOptions(max_expanded_bytes=250_000))
    assert sum(report.expanded_bytes for report in pulled.layers) <= 250_000


def test_a_layer_of_absurd_expansion_ratio_is_refused(registry: RegistryProcess, repo: str,
                                                      tmp_path: Path) -> None:
    sparse = hostile.sparse_file(2**40)
    bomb = Layer(gzip.compress(sparse, mtime=0), LAYER_GZIP, Digest.of_bytes(sparse))
    push_image(registry.host, repo, "v1", Image([busybox_layer(), bomb]))
    with pytest.raises(UnsafeArchive, match="max_expansion_ratio"):
        pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out",
             options=UnpackOptions(max_expansion_ratio=1000))
    assert os.listdir(tmp_path) == []


def test_config_with_too_few_diff_ids_is_refused(registry: RegistryProcess, client: RegistryClient,
                                                 repo: str, tmp_path: Path) -> None:
    image = build_busybox_image("short")
    config = image.config_bytes().replace(f',"{image.layers[1].diff_id}"'.encode(), b"")
    data = json.loads(image.manifest_bytes())
    data["config"].update(digest=str(Digest.of_bytes(config)), size=len(config))
    manifest = canonical_json(data)
    for blob in [*(layer.blob for layer in image.layers), config]:
        client.push_blob(repo, blob)
    client.push_manifest(repo, "v1", manifest, OCI_MANIFEST)
    with pytest.raises(RegistryError, match="is malformed: its config lists 1 diff_ids for 2 layers"):
        pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_remove_tree_opens_locked_directories_and_accepts_a_missing_one(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "locked/inner").mkdir(parents=True)
    (tree / "locked/inner/file").write_text("x")
    (tree / "locked/inner").chmod(0)
    (tree / "locked").chmod(0o500)
    remove_tree(tree)
    assert os.listdir(tmp_path) == []
    remove_tree(tree)  # already gone: nothing to do


def test_target_must_be_new_or_empty(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full/file").write_text("keep me")
    with pytest.raises(UsageError, match="already exists and is not an empty directory"):
        pull(ref_on(registry, f"{repo}:never-pushed"), tmp_path / "full")
    push_image(registry.host, repo, "v1", build_busybox_image("empty"))
    (tmp_path / "empty").mkdir()
    pull(ref_on(registry, f"{repo}:v1"), tmp_path / "empty")
    assert (tmp_path / "empty/bin/busybox").exists()


# -- a failure or Ctrl-C stops the other downloads ---------------------------------------------


def stub_image(stub: Stub, layers: list[Layer], replies: dict[Digest, Reply]) -> Reference:
    """`stub.host/lab/app:v1` serves an image of `layers`; `replies` replace some layers' answers."""
    image = Image(layers)
    stub.on("GET", "/v2/lab/app/manifests/v1",
            Reply(200, {"Content-Type": OCI_MANIFEST}, image.manifest_bytes()))
    stub.on("GET", f"/v2/lab/app/blobs/{Digest.of_bytes(image.config_bytes())}",
            Reply(200, {}, image.config_bytes()))
    for layer in layers:
        reply = replies.get(layer.digest, Reply(200, {}, layer.blob))
        stub.on("GET", f"/v2/lab/app/blobs/{layer.digest}", reply)
    return Reference.parse(f"{stub.host}/lab/app:v1")


def pull_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("ligoenv-pull")]


def test_a_missing_layer_stops_the_other_downloads(stub: Stub, tmp_path: Path) -> None:
    slow, missing = files_layer({"slow": os.urandom(300).hex()}), files_layer({"gone": "g"})
    ref = stub_image(stub, [slow, missing], {
        slow.digest: Reply(200, {}, slow.blob, trickle=0.05),  # half a minute to send in full
        missing.digest: Reply(404, {}, b"", wait=stub.trickling)})  # once the slow one flows
    with pytest.raises(NotFound, match=f"blob {missing.digest.short} of lab/app not found"):
        pull(ref, tmp_path / "out", cache=LayerCache(tmp_path / "cache"))
    assert pull_threads() == []
    assert stub.hung_up.wait(10) and stub.aborted == [f"/v2/lab/app/blobs/{slow.digest}"]
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists()
    assert os.listdir(tmp_path / "cache/blobs/sha256") == []


def test_a_layer_is_applied_while_the_next_one_downloads(stub: Stub, tmp_path: Path) -> None:
    """The second layer's blob is served only once the first layer's file is in the staging
    tree (or after 10 s): a pull that downloaded every layer before unpacking would have the
    second one in its cache by the time the first is applied."""
    first, second = files_layer({"first": "1"}), files_layer({"second": "2"})
    first_applied = threading.Event()
    ref = stub_image(stub, [first, second], {second.digest: Reply(200, {}, second.blob,
                                                                  wait=first_applied)})
    seen = watch_for(tmp_path / ".out.partial-*/first", first_applied, stub,
                     tmp_path / "cache/blobs/sha256" / second.digest.hex)
    pull(ref, tmp_path / "out", cache=LayerCache(tmp_path / "cache"))
    assert seen == [False]
    assert (tmp_path / "out/first").read_text() == "1" and (tmp_path / "out/second").read_text() == "2"


@pytest.mark.parametrize("media_type", [LAYER_GZIP, LAYER_ZSTD, LAYER_TAR], ids=["gzip", "zstd", "tar"])
def test_a_layer_is_applied_while_it_downloads(stub: Stub, tmp_path: Path, media_type: str) -> None:
    """The blob stops halfway until the layer's first file is in the staging tree (or for
    10 s): a pull that waited for the whole blob would have it in its cache by then."""
    # 10 MB: the zstd reader hands over 4 MB of output at a time
    layer = files_layer({"a-first": "1", "z-big": os.urandom(10 << 20)}, media_type)
    first_applied = threading.Event()
    ref = stub_image(stub, [layer], {layer.digest: Reply(200, {}, layer.blob,
                                                         pause_at=len(layer.blob) // 2,
                                                         resume=first_applied)})
    seen = watch_for(tmp_path / ".out.partial-*/a-first", first_applied, stub,
                     tmp_path / "cache/blobs/sha256" / layer.digest.hex)
    pull(ref, tmp_path / "out", cache=LayerCache(tmp_path / "cache"))
    assert seen == [False]
    assert (tmp_path / "out/a-first").read_text() == "1"
    assert (tmp_path / "out/z-big").stat().st_size == 10 << 20


def test_a_followed_download_that_fails_its_digest_leaves_nothing(stub: Stub, tmp_path: Path) -> None:
    """Unpacked as it arrives, a tampered blob is found at its end: the pull fails with the
    digest's error and neither the tree nor the blob stays."""
    layer = files_layer({"a-first": "1", "z-big": os.urandom(3 << 20)})
    tampered = bytearray(layer.blob)
    tampered[len(tampered) // 2] ^= 0x01  # inside z-big's data: the archive still reads
    ref = stub_image(stub, [layer], {layer.digest: Reply(200, {}, bytes(tampered))})
    with pytest.raises(DigestMismatch, match=f"blob {layer.digest.short} of lab/app: expected"):
        pull(ref, tmp_path / "out", cache=LayerCache(tmp_path / "cache"))
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists()
    assert os.listdir(tmp_path / "cache/blobs/sha256") == []


def test_a_hostile_entry_stops_the_pull_without_waiting_for_the_rest(stub: Stub,
                                                                     tmp_path: Path) -> None:
    """The layer climbs out with '..' in its first entry; the rest of its blob would take
    minutes to trickle in: the pull refuses it at once and hangs up."""
    layer = Layer.from_entries([Entry("../escape", data=b"x"), Entry("filler", data=os.urandom(50_000))])
    ref = stub_image(stub, [layer], {layer.digest: Reply(200, {}, layer.blob, trickle=0.005)})
    with pytest.raises(UnsafeArchive, match="climbs out of the image"):
        pull(ref, tmp_path / "out", cache=LayerCache(tmp_path / "cache"))
    assert stub.hung_up.wait(10) and stub.aborted == [f"/v2/lab/app/blobs/{layer.digest}"]
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists()
    assert os.listdir(tmp_path / "cache/blobs/sha256") == []


def watch_for(pattern: Path, event: threading.Event, stub: Stub, blob: Path) -> list[bool]:
    """Once a file matches `pattern`, note whether `blob` is in the cache yet and set `event`."""
    seen: list[bool] = []

    def watch() -> None:
        while not stub.stopping.is_set() and not event.is_set():
            if list(pattern.parent.parent.glob(f"{pattern.parent.name}/{pattern.name}")):
                seen.append(blob.exists())
                event.set()
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    return seen


def test_ctrl_c_stops_the_downloads(stub: Stub, tmp_path: Path) -> None:
    # Ctrl-C raises KeyboardInterrupt even where the test run inherited SIGINT ignored (a
    # background job of a non-interactive shell starts so, and Python then keeps ignoring it).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_stops_the_downloads(stub, tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_stops_the_downloads(stub: Stub, tmp_path: Path) -> None:
    slow = files_layer({"slow": os.urandom(300).hex()})
    ref = stub_image(stub, [slow], {slow.digest: Reply(200, {}, slow.blob, trickle=0.05)})
    main = threading.main_thread().ident
    assert main is not None

    def interrupt_once(done: int, total: int) -> None:
        if done > 0 and not interrupted.is_set():  # a download is running: press Ctrl-C
            interrupted.set()
            signal.pthread_kill(main, signal.SIGINT)

    interrupted = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        pull(ref, tmp_path / "out", progress=interrupt_once)
    assert pull_threads() == []
    assert stub.hung_up.wait(10) and stub.aborted == [f"/v2/lab/app/blobs/{slow.digest}"]
    assert os.listdir(tmp_path) == []


# -- the cache ---------------------------------------------------------------------------------


def test_shared_layer_is_downloaded_once(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    first, second = build_busybox_image("first"), build_busybox_image("second")
    push_image(registry.host, f"{repo}/one", "v1", first)
    push_image(registry.host, f"{repo}/two", "v1", second)
    cache, client = LayerCache(tmp_path / "cache"), CountingClient(registry.host)
    pull(ref_on(registry, f"{repo}/one:v1"), tmp_path / "a", cache=cache, client=client)
    pull(ref_on(registry, f"{repo}/two:v1"), tmp_path / "b", cache=cache, client=client)
    pull(ref_on(registry, f"{repo}/two:v1"), tmp_path / "c", cache=cache, client=client)
    assert sorted(client.downloads) == sorted([busybox_layer().digest, first.layers[1].digest,
                                               second.layers[1].digest])
    assert cache.path_for(busybox_layer().digest).read_bytes() == busybox_layer().blob


def test_concurrent_threads_download_once(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    layer = files_layer({"etc/threads": "x" * 100_000})
    descriptor = Descriptor(layer.media_type, layer.digest, len(layer.blob))
    client = CountingClient(registry.host)
    client.push_blob(repo, layer.blob)
    cache = LayerCache(tmp_path / "cache")
    barrier, paths = threading.Barrier(6), []

    def fetch() -> None:
        barrier.wait()
        paths.append(cache.ensure(client, repo, descriptor))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.downloads == [layer.digest]
    assert len(paths) == 6 and {p.read_bytes() for p in paths} == {layer.blob}


ENSURE = """
import sys
from pathlib import Path
from ligoenv.oci.cache import CorruptCacheEntry, LayerCache
from ligoenv.oci.digest import Digest
from ligoenv.oci.manifest import Descriptor
from tests.oci.test_pull import CountingClient
host, repo, digest, size, root = sys.argv[1:]
client = CountingClient(host)
sys.stdin.readline()  # start together
descriptor = Descriptor("application/octet-stream", Digest.parse(digest), int(size))
LayerCache(Path(root)).ensure(client, repo, descriptor)
print(len(client.downloads))
"""


def test_concurrent_processes_download_once(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    layer = files_layer({"etc/processes": os.urandom(2_000_000).hex()})
    RegistryClient(registry.host).push_blob(repo, layer.blob)
    args = [sys.executable, "-c", ENSURE, registry.host, repo, str(layer.digest), str(len(layer.blob)),
            str(tmp_path / "cache")]
    root = Path(__file__).resolve().parent.parent.parent
    processes = [subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root, text=True)
                 for _ in range(3)]
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    counts = [int(process.communicate(timeout=60)[0]) for process in processes]
    assert sorted(counts) == [0, 0, 1]
    assert LayerCache(tmp_path / "cache").path_for(layer.digest).read_bytes() == layer.blob


@pytest.mark.parametrize("media_type", [LAYER_GZIP, LAYER_TAR])
def test_corrupted_cache_entry_is_evicted_and_fetched_again(registry: RegistryProcess, repo: str,
                                                           tmp_path: Path, media_type: str) -> None:
    image = build_busybox_image("corrupt-cache", {"etc/unique": repo}, media_type=media_type)
    push_image(registry.host, repo, "v1", image)
    cache, client = LayerCache(tmp_path / "cache"), CountingClient(registry.host)
    pull(ref_on(registry, f"{repo}:v1"), tmp_path / "first", cache=cache, client=client)
    top = image.layers[1]
    path = cache.path_for(top.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only the digest can tell
    path.write_bytes(bytes(data))
    client.downloads.clear()
    pull(ref_on(registry, f"{repo}:v1"), tmp_path / "second", cache=cache, client=client)
    assert client.downloads == [top.digest]
    assert path.read_bytes() == top.blob
    assert (tmp_path / "second/etc/unique").read_text() == repo
    assert leftovers(tmp_path) == []


def test_corrupted_cache_entry_is_fetched_once_only(registry: RegistryProcess, repo: str,
                                                    tmp_path: Path) -> None:
    """A cached blob that is corrupt again after a fresh download is reported, not retried forever."""
    image = build_busybox_image("corrupt-twice", {"etc/unique": repo})
    push_image(registry.host, repo, "v1", image)
    top = image.layers[1]
    cache = LayerCache(tmp_path / "cache")

    class Corrupting(CountingClient):
        def download_blob(self, repository: str, descriptor: Descriptor, dest: Path,
                          progress: Progress | None = None, **kwargs: Any) -> None:
            # Not followed (as a download by another process is not): each copy is read back
            # from the cache.
            kwargs.pop("growing", None)
            super().download_blob(repository, descriptor, dest, progress, **kwargs)
            if descriptor.digest == top.digest:  # a disk that flips a bit of every copy
                data = bytearray(dest.read_bytes())
                data[-1] ^= 0x01
                dest.write_bytes(bytes(data))

    client = Corrupting(registry.host)
    with pytest.raises(DigestMismatch, match=f"cached blob {top.digest.short}: expected {top.digest}"):
        pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out", cache=cache, client=client)
    assert client.downloads.count(top.digest) == 2
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert not cache.path_for(top.digest).exists()


def cached(tmp_path: Path, blob: bytes, layer: Layer) -> tuple[LayerCache, Descriptor, Path]:
    """A cache holding `blob` (maybe not the layer's true bytes) as the layer's entry."""
    cache = LayerCache(tmp_path / "cache")
    path = cache.path_for(layer.digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(blob)
    return cache, Descriptor(layer.media_type, layer.digest, len(layer.blob)), path


def test_cache_open_evicts_a_corrupt_entry_only(tmp_path: Path) -> None:
    layer = files_layer({"etc/entry": "z" * 5000})
    cache, descriptor, path = cached(tmp_path, layer.blob[:-1] + b"?", layer)
    with pytest.raises(CorruptCacheEntry, match=f"cached blob {layer.digest.short}: expected"), \
            cache.open(descriptor) as reader:
        reader.read(10)  # the rest is drained, and checked, when the block ends
    assert not path.exists()
    with pytest.raises(CorruptCacheEntry, match="is no longer in"), cache.open(descriptor):
        pass
    path.write_bytes(layer.blob)
    with pytest.raises(DigestMismatch, match="not the cache's fault") as caught, cache.open(descriptor):
        raise DigestMismatch("not the cache's fault")
    assert not isinstance(caught.value, CorruptCacheEntry) and path.exists()


def test_cache_keeps_a_good_copy_another_process_put_there(tmp_path: Path) -> None:
    layer = files_layer({"etc/entry": "w" * 5000})
    cache, descriptor, path = cached(tmp_path, layer.blob[:-1] + b"?", layer)
    with pytest.raises(CorruptCacheEntry), cache.open(descriptor) as reader:
        reader.read(10)
        (tmp_path / "good").write_bytes(layer.blob)
        os.replace(tmp_path / "good", path)
    assert path.read_bytes() == layer.blob


def test_truncated_cache_entry_is_fetched_again(registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    layer = files_layer({"etc/truncated": "y" * 5000})
    descriptor = Descriptor(layer.media_type, layer.digest, len(layer.blob))
    client = CountingClient(registry.host)
    client.push_blob(repo, layer.blob)
    cache = LayerCache(tmp_path / "cache")
    path = cache.path_for(layer.digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(layer.blob[:10])
    assert cache.ensure(client, repo, descriptor).read_bytes() == layer.blob
    assert client.downloads == [layer.digest]


def test_a_file_that_cannot_be_written_stops_the_pull_and_leaves_nothing(
        registry: RegistryProcess, repo: str, tmp_path: Path) -> None:
    """The first write that fails (here: over a file size limit) ends the pull with an error
    naming that file, and nothing of it stays."""
    files = [Entry(f"data/f{i:03d}", data=bytes([i]) * (100 << 10)) for i in range(40)]
    push_image(registry.host, repo, "v1", Image([Layer.from_entries(files)]))
    cache = LayerCache(tmp_path / "cache")
    pull(ref_on(registry, f"{repo}:v1"), tmp_path / "first", cache=cache)  # the layer is cached

    def over_the_limit() -> str:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
        try:
            pull(ref_on(registry, f"{repo}:v1"), tmp_path / "out", cache=cache)
        except LigoenvError as err:
            return str(err)
        return "pulled"

    message = in_child(over_the_limit)
    assert message.startswith(f"cannot unpack 'data/f000' into {tmp_path}/.out.partial-")
    assert message.endswith(": File too large")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_an_index_inside_an_index_is_a_permanent_named_error(
        registry: RegistryProcess, client: RegistryClient, tmp_path: Path) -> None:
    outer, inner = push_nested_index(registry.host, "tests/nested", "v1")
    ref = Reference.parse(f"{registry.host}/tests/nested:v1")
    with pytest.raises(UnsupportedImage) as caught:
        pull(ref, tmp_path / "tree", platform=Platform("linux", "amd64"), client=client)
    assert str(caught.value) == (f"{ref.display()}: index {outer.short} points at another index "
                                 f"({inner.short}), which ligoenv does not support")
    assert not caught.value.temporary
    assert not (tmp_path / "tree").exists()


def test_downloads_let_a_layer_be_read_while_the_next_ones_arrive(
        registry: RegistryProcess, client: RegistryClient, repo: str, tmp_path: Path) -> None:
    pushed = push_image(registry.host, repo, "v1", three_layer_image("downloads"))
    layers = resolve_image(client, ref_on(registry, f"{repo}@{pushed}")).manifest.layers
    cache = LayerCache(tmp_path / "cache")
    with Downloads(client, repo, layers, cache) as downloads:
        downloads.wait(layers[0])
        assert cache.has(layers[0])
    assert all(cache.has(layer) for layer in layers)  # leaving waits for the others

    missing = Descriptor(LAYER_GZIP, Digest.of_bytes(b"never pushed"), 12)
    with pytest.raises(NotFound), Downloads(client, repo, [missing, *layers], cache) as downloads:
        downloads.wait(missing)
    assert not cache.has(missing)
