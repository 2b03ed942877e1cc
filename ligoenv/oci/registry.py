"""RegistryClient: the only code that talks HTTP to a registry (Distribution API v2).

Every manifest and blob that comes back is checked against its digest before anyone uses it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType

import requests

from ligoenv.oci.atomicfile import fsync_dir
from ligoenv.oci.credentials import Credentials, find_credentials
from ligoenv.oci.digest import Digest, VerifyingReader
from ligoenv.oci.errors import DigestMismatch, InvalidReference, LigoenvError, NotFound, RegistryError
from ligoenv.oci.growing import GrowingBlob
from ligoenv.oci.httperrors import error_text
from ligoenv.oci.manifest import ACCEPT_HEADER, Descriptor, ImageIndex, ImageManifest, parse_manifest
from ligoenv.oci.reference import DOCKER_HUB, DOCKER_HUB_API, Reference, in_repository
from ligoenv.oci.transport import Body, FileSlice, Pacer, RetryPolicy, Transport

MAX_MANIFEST_BYTES = 4 << 20
MAX_SMALL_BLOB_BYTES = 32 << 20  # configs; layers go through download_blob or open_blob
Progress = Callable[[int], None]


class DownloadCancelled(LigoenvError):
    """A download stopped because its caller asked (another layer of the same pull failed)."""


class RegistryClient:
    """A client for one registry (`registry` as in a Reference, e.g. `docker.io` or `host:5000`)."""

    def __init__(self, registry: str, *, insecure: bool | None = None, timeout: float = 30.0,
                 retries: int = 3, credentials: Credentials | None = None, anonymous: bool = False,
                 insecure_registries: Iterable[str] = (), transport: Transport | None = None,
                 pacer: Pacer | None = None) -> None:
        self.registry = registry
        if transport is None:
            lookup: Credentials | Callable[[], Credentials | None] | None = credentials
            if credentials is None and not anonymous:
                lookup = functools.partial(find_credentials, registry)  # run only when challenged
            transport = Transport(registry, host=DOCKER_HUB_API if registry == DOCKER_HUB else registry,
                                  insecure=insecure, timeout=timeout,
                                  retry=RetryPolicy(retries=retries), credentials=lookup,
                                  insecure_hosts=insecure_registries, pacer=pacer)
        self.transport = transport

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def ping(self) -> int:
        """The status of the API root (/v2/): the registry answers. AuthError when it wants
        credentials we do not have, which still means it is reachable."""
        response = self.transport.request("GET", "/v2/")
        response.close()
        return response.status_code

    # -- manifests -------------------------------------------------------------------------

    def resolve(self, ref: Reference) -> Digest:
        """The manifest digest `ref` names now: HEAD (not counted as a pull), GET if HEAD gives none."""
        self._check_registry(ref)
        response = self._request("HEAD", ref.repository, f"manifests/{ref.reference}",
                                 headers={"Accept": ACCEPT_HEADER})
        response.close()
        self._expect(response, (200,), f"manifest {ref.in_repository}")
        header = _header_digest(response)
        if header is None:
            return self.fetch_manifest(ref).digest
        if ref.digest is not None and header != ref.digest:
            raise DigestMismatch(f"registry {self.registry} reports {header} for {ref}")
        return header

    def fetch_manifest(self, ref: Reference) -> ImageManifest | ImageIndex:
        """GET a manifest or index; its digest is the hash of the exact bytes served."""
        self._check_registry(ref)
        what = f"manifest {ref.in_repository}"
        response = self._request("GET", ref.repository, f"manifests/{ref.reference}",
                                 headers={"Accept": ACCEPT_HEADER}, stream=True)
        with contextlib.closing(response):
            self._expect(response, (200,), what)
            raw = self._read_capped(response, MAX_MANIFEST_BYTES, what)
        digest = Digest.of_bytes(raw, ref.digest.algorithm if ref.digest else "sha256")
        if ref.digest is not None and digest != ref.digest:
            raise DigestMismatch(f"{what}: registry {self.registry} served content with digest {digest}")
        header = _header_digest(response)
        if header is not None and header != Digest.of_bytes(raw, header.algorithm):
            raise DigestMismatch(f"{what}: content does not match the Docker-Content-Digest {header}")
        return parse_manifest(raw, digest, response.headers.get("Content-Type", ""))

    def push_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> Digest:
        """PUT a manifest under a tag or its digest; returns its digest."""
        digest = Digest.of_bytes(raw)
        response = self._request("PUT", repository, f"manifests/{reference}", push=True, body=raw,
                                 headers={"Content-Type": media_type})
        response.close()
        self._expect(response, (200, 201), f"manifest {in_repository(repository, reference)}")
        header = _header_digest(response)
        if header is not None and header != digest:
            raise DigestMismatch(f"registry {self.registry} stored manifest {digest} as {header}")
        return digest

    def delete_manifest(self, repository: str, digest: Digest) -> None:
        response = self._request("DELETE", repository, f"manifests/{digest}", push=True)
        response.close()
        if response.status_code == 405:
            raise RegistryError(f"registry {self.registry} does not allow deleting manifests")
        self._expect(response, (200, 202), f"manifest {repository}@{digest}")

    def list_tags(self, repository: str, *, limit: int | None = None) -> list[str]:
        """All tags of `repository`, following the registry's pagination (`Link`) on this
        registry only; more than `limit` tags is an error rather than an endless walk."""
        tags: list[str] = []
        path, seen = f"/v2/{repository}/tags/list", set[str]()
        while path:
            seen.add(path)
            response = self.transport.request("GET", path, scope=_scope(repository))
            self._expect(response, (200,), f"repository {repository}")
            tags.extend(str(tag) for tag in (response.json().get("tags") or []))
            if limit is not None and len(tags) > limit:
                raise RegistryError(f"repository {repository} on registry {self.registry} has more "
                                    f"than {limit} tags: list fewer, or raise the limit")
            path = self._next_page(response, repository, seen)
        return tags

    def _next_page(self, response: requests.Response, repository: str, seen: set[str]) -> str:
        path = response.links.get("next", {}).get("url", "")
        if not path:
            return ""
        url = urllib.parse.urljoin(self.transport.base_url + "/", path)
        if not url.startswith(self.transport.base_url + "/"):
            raise RegistryError(f"registry {self.registry} sent the next page of the tags of "
                                f"{repository} to another host: not followed")
        if url in seen:
            raise RegistryError(f"registry {self.registry} sent the tags of {repository} in a loop")
        return url

    # -- blobs -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_blob(self, repository: str, descriptor: Descriptor) -> Iterator[VerifyingReader]:
        """A verifying stream over a blob: read (or drain) it to the end to run the check."""
        what = f"blob {descriptor.digest.short} of {repository}"
        # identity: a gzip layer must arrive as stored, not re-encoded or decoded on the way
        response = self._request("GET", repository, f"blobs/{descriptor.digest}", stream=True,
                                 headers={"Accept-Encoding": "identity"})
        with contextlib.closing(response):
            self._expect(response, (200,), what)
            yield VerifyingReader(self.transport.stream_body(response, what), descriptor.digest,
                                  descriptor.size, what)

    def fetch_blob(self, repository: str, descriptor: Descriptor) -> bytes:
        """A small blob such as a config, verified, in memory."""
        if descriptor.size > MAX_SMALL_BLOB_BYTES:
            raise RegistryError(f"blob {descriptor.digest.short} of {repository} is too large to "
                                f"hold in memory ({descriptor.size} bytes)")
        with self.open_blob(repository, descriptor) as reader:
            return reader.read()

    def download_blob(self, repository: str, descriptor: Descriptor, dest: Path,
                      progress: Progress | None = None, cancel: threading.Event | None = None,
                      growing: GrowingBlob | None = None) -> None:
        """Stream a blob to `dest` through a temp file beside it; never leaves an unverified file.

        Setting `cancel` stops the download before its next chunk with DownloadCancelled.
        `growing` is told of the temp file and of each chunk written to it, for a reader that
        follows the download (it reports the end itself: see Downloads).
        """
        what = f"download of blob {descriptor.digest.short} of {repository}"
        _stop_if(cancel, what)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        if growing is not None:
            growing.started(fd)
        try:
            with os.fdopen(fd, "wb") as out, self.open_blob(repository, descriptor) as reader:
                # A chunk is whatever has arrived, so a slow download sees `cancel` promptly too.
                while chunk := reader.read(1 << 20):
                    _stop_if(cancel, what)
                    out.write(chunk)
                    if growing is not None:
                        out.flush()  # in the file, for the reader that follows it
                        growing.grew(len(chunk))
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            os.replace(name, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
        fsync_dir(dest.parent)

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        response = self._request("HEAD", repository, f"blobs/{digest}")
        response.close()
        if response.status_code == 404:
            return False
        self._expect(response, (200,), f"blob {digest.short} of {repository}")
        return True

    def push_blob(self, repository: str, data: bytes | Path | FileSlice,
                  digest: Digest | None = None) -> Digest:
        """Upload a blob monolithically (POST then PUT), unless the registry already has it.

        The registry checks the content against `digest` (required for a FileSlice).
        """
        if digest is None:
            if isinstance(data, FileSlice):
                raise ValueError("push_blob needs the digest of a file slice")
            digest = _digest_of(data)
        if self.blob_exists(repository, digest):
            return digest
        what = f"upload of blob {digest.short} to {repository}"
        started = self._request("POST", repository, "blobs/uploads/", push=True)
        started.close()
        self._expect(started, (202,), what)
        location = urllib.parse.urljoin(self.transport.base_url + "/", started.headers["Location"])
        body: Body = data
        response = self.transport.request(
            "PUT", location, scope=_scope(repository, push=True), body=body,
            params={"digest": str(digest)}, headers={"Content-Type": "application/octet-stream"})
        response.close()
        self._expect(response, (201,), what)
        return digest

    # -- helpers ---------------------------------------------------------------------------

    def _request(self, method: str, repository: str, tail: str, *, push: bool = False,
                 headers: dict[str, str] | None = None, body: Body = None,
                 stream: bool = False) -> requests.Response:
        return self.transport.request(method, f"/v2/{repository}/{tail}", scope=_scope(repository, push),
                                      headers=headers, body=body, stream=stream)

    def _expect(self, response: requests.Response, ok: Iterable[int], what: str) -> None:
        status = response.status_code
        if status in ok:
            return
        detail = error_text(response) if response.request.method != "HEAD" else ""
        if status == 404:
            raise NotFound(f"{what} not found on registry {self.registry}"
                           + (f" ({detail})" if detail else ""))
        raise RegistryError(f"registry {self.registry} answered {status} {response.reason} "
                            f"for {what}" + (f": {detail}" if detail else ""))

    def _read_capped(self, response: requests.Response, cap: int, what: str) -> bytes:
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise RegistryError(f"{what}: {length} bytes is more than the {cap} a manifest may have")
        data = self.transport.read_body(response, what, cap + 1)
        if len(data) > cap:
            raise RegistryError(f"{what}: more than the {cap} bytes a manifest may have")
        return data

    def _check_registry(self, ref: Reference) -> None:
        if ref.registry != self.registry:
            raise InvalidReference(f"{ref} is not on registry {self.registry}")


def client_for(ref: Reference, insecure_registries: Iterable[str] = (), *, timeout: float = 30.0,
               retries: int = 3) -> RegistryClient:
    """A client for `ref`'s registry: plain HTTP for loopback hosts and those listed as insecure."""
    listed = set(insecure_registries)
    insecure = True if ref.registry in listed else None
    return RegistryClient(ref.registry, insecure=insecure, timeout=timeout, retries=retries,
                          insecure_registries=listed)


def _stop_if(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise DownloadCancelled(f"{what} cancelled")


def _scope(repository: str, push: bool = False) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


def _header_digest(response: requests.Response) -> Digest | None:
    value = response.headers.get("Docker-Content-Digest")
    if not value:
        return None
    try:
        return Digest.parse(value.strip())
    except InvalidReference:
        return None  # a malformed hint is no hint: the bytes decide




def _digest_of(data: bytes | Path) -> Digest:
    if isinstance(data, bytes):
        return Digest.of_bytes(data)
    hasher = hashlib.sha256()
    with data.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return Digest("sha256", hasher.hexdigest())


