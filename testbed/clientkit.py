"""Helpers of the client tests: images pushed to the real registry, real index files, the CLI in-process."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ligoenv.cli.common import Invocation
from ligoenv.cli.main import run as cli_run
from ligoenv.cli.main import typer_main
from ligoenv.client.runtimes.base import Host
from ligoenv.client.runtimes.process import run_command
from ligoenv.oci.digest import Digest
from ligoenv.oci.errors import LigoenvError
from ligoenv.oci.manifest import OCI_INDEX, OCI_MANIFEST
from ligoenv.store.index import DigestRecord, RepositoryIndex
from ligoenv.store.index.writer import convert
from ligoenv.store.publishroot import PublishRoot
from testbed.ocibuild import Image

STANDINS = Path(__file__).resolve().parent / "standins"
RUNTIME_NAMES = ("apptainer", "singularity", "docker", "podman")


@dataclass(frozen=True)
class Pushed:
    """An image in the registry: its reference by tag, top digest and per-platform manifests."""

    registry: str
    repository: str
    tag: str
    digest: Digest
    images: tuple[Image, ...]
    platforms: dict[str, Digest] = field(default_factory=dict, hash=False)

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def pinned(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}"

    def config(self, platform: str) -> Digest:
        image = next(i for i in self.images if str(i.platform) == platform)
        return Digest.of_bytes(image.config_bytes())


def pushed(registry: str, repository: str, tag: str, digest: Digest, images: list[Image]) -> Pushed:
    platforms = {str(i.platform): Digest.of_bytes(i.manifest_bytes()) for i in images}
    return Pushed(registry, repository, tag, digest, tuple(images), platforms)


def records(image: Pushed, root: PublishRoot | None, when: datetime) -> list[DigestRecord]:
    """Index records for `image` (an index and its manifests, or one manifest)."""
    out = []
    for item in image.images:
        manifest = Digest.of_bytes(item.manifest_bytes())
        path = root.relative_image_path(manifest) if root else None
        out.append(DigestRecord(
            digest=manifest, media_type=OCI_MANIFEST, platforms={str(item.platform): manifest},
            platform=str(item.platform), config=Digest.of_bytes(item.config_bytes()),
            layers=tuple(layer.digest for layer in item.layers), size=1, path=path, published=when))
    if len(image.images) > 1:
        out.append(DigestRecord(digest=image.digest, media_type=OCI_INDEX,
                                platforms=dict(image.platforms), published=when))
    return out


def write_index(root: Path, image: Pushed, history: list[tuple[Digest, datetime]],
                extra: tuple[Pushed, ...] = (), trees: bool = False) -> RepositoryIndex:
    """A real index of `image`'s repository under publish root `root`; its tag moves along `history`.

    `trees=True` also makes an (empty) directory for each published platform tree.
    """
    layout = PublishRoot(root)
    index = RepositoryIndex.empty(image.registry, image.repository)
    for item in [image, *extra]:
        for record in records(item, layout, history[0][1]):
            index.record_image(record)
            if trees and record.path:
                (root / record.path).mkdir(parents=True, exist_ok=True)
    for digest, when in history:
        index.move_tag(image.tag, digest, when, "webhook:test")
    convert(root, index).apply()
    return index


def standin_path(tmp_path: Path, names: tuple[str, ...] = RUNTIME_NAMES, real: tuple[str, ...] = ()) -> str:
    """A PATH with stand-ins for `names` and links to the real programs `real` (e.g. bwrap)."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).symlink_to(STANDINS / name)
    for name in real:
        found = shutil.which(name)
        assert found, f"{name} is not installed"
        (directory / name).symlink_to(found)
    return str(directory)


def standin_calls(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


@dataclass
class Cli:
    """Runs the `ligoenv` command line in-process in `environ`; exec becomes a child process.

    Programs (runtimes, stand-ins) are looked up on `environ["PATH"]`, as exec would.
    """

    environ: dict[str, str]
    host: Host | None = None
    clock: Callable[[], datetime] | None = None

    def __call__(self, *args: str) -> int:
        return cli_run(list(args), self.invocation(args))

    def typer(self, *args: str) -> int:
        """The same command line, but never through a fast path."""
        inv = self.invocation(args)
        try:
            return typer_main(list(args), inv)
        except LigoenvError as error:
            sys.stderr.write(f"ligoenv: error: {error}\n")
            return error.exit_code

    def invocation(self, args: Sequence[str]) -> Invocation:
        inv = Invocation(environ=self.environ, executor=self.execute, which=self.which, host=self.host,
                         args=list(args))
        if self.clock is not None:
            inv.clock = self.clock
        return inv

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.environ.get("PATH", os.defpath))

    def execute(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        return run_command([self.which(argv[0]) or argv[0], *argv[1:]], env)
