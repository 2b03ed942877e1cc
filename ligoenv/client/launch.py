"""From "run this reference" to a runtime and a plan: resolve by digest, choose, find or pull a tree.

The request travels down unchanged: the plan carries it, with what was resolved beside it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ligoenv.client.runtimes.apptainer import Apptainer
from ligoenv.client.runtimes.base import RunPlan, RunRequest, Runtime
from ligoenv.client.runtimes.bwrap import FRESH_MOUNTS, Bwrap, layered_tops
from ligoenv.client.runtimes.docker import Docker
from ligoenv.client.runtimes.mountpoints import MountPoint, check_binds, inspect, make
from ligoenv.client.runtimes.select import Which, select_runtime
from ligoenv.client.trees import LocalTree, cached_tree, published_tree
from ligoenv.oci.errors import UsageError
from ligoenv.oci.platform import Platform
from ligoenv.store.singularityd import tree_command, tree_env

if TYPE_CHECKING:
    from ligoenv.client.resolve import Resolution, Resolver


def prepare(request: RunRequest, resolver: Resolver, cache: Path, which: Which,
            progress: Callable[[int, int], None] | None = None,
            warn: Callable[[str], None] = lambda _: None,
            environ: Mapping[str, str] | None = None) -> tuple[Runtime, RunPlan]:
    """Resolve the image, choose the runtime and build its plan; pulls a local copy for bwrap."""
    runtime = select_runtime(request.runtime, which, environ)  # before any network: fail fast
    answer = resolver.resolve(request.reference, platform=request.platform, locked=request.locked)
    if answer.locked is not None and answer.environment is not None:
        from ligoenv.client.lockpins import check_pins  # what the lockfile cites is what runs

        check_pins(answer.environment, answer.locked, resolver, cache)
    platform = request.platform or Platform.host()
    tree: LocalTree | None = None
    if isinstance(runtime, Apptainer | Bwrap):
        tree = published_tree(resolver, answer, platform)
    if isinstance(runtime, Bwrap) and tree is None:
        tree = cached_tree(resolver, answer, platform, cache, progress)
    if isinstance(runtime, Docker) and request.host.is_macos_arm64 and not answer.platforms:
        answer = resolver.from_registry(answer.reference, details=True)  # has it an arm64 variant?
    plan = _plan(request, answer, platform, tree)
    if tree is not None:
        # Every runtime given a tree: no mount point may cross one of the image's symlinks.
        fresh = FRESH_MOUNTS if isinstance(runtime, Bwrap) else ()
        binds = check_binds(tree.path, request.binds, fresh)
        if isinstance(runtime, Bwrap):
            plan = _mount_points(plan, tree, binds, warn)
    return runtime, plan


def _plan(request: RunRequest, answer: Resolution, platform: Platform, tree: LocalTree | None) -> RunPlan:
    return RunPlan(
        request=request, image=answer.reference, platform=platform,
        platform_digest=answer.platform_digest(platform)[1] if request.platform else None,
        tree=tree.path if tree else None, image_platforms=tuple(sorted(answer.platforms)),
        image_env=tree_env(tree.path) if tree else (),
        image_command=tree_command(tree.path) if tree else (),
    )


def _mount_points(plan: RunPlan, tree: LocalTree, binds: list[MountPoint],
                  warn: Callable[[str], None]) -> RunPlan:
    """bwrap needs every mount point to exist: make them in our own copy, or lay a published
    (read-only) tree out under a tmpfs `/` where they can be made. The working directory is
    left out, with a note, where it cannot be mounted safely."""
    # An image whose /tmp, /proc or /dev is no real directory gets them fresh on a tmpfs `/`.
    layered = not all(inspect(tree.path, top).present for top in FRESH_MOUNTS)
    cwd = inspect(tree.path, plan.request.cwd, FRESH_MOUNTS)
    if not cwd.safe:
        warn(f"{plan.request.cwd} is not mounted: {cwd.refusal()}; running in /")
        plan = replace(plan, bind_cwd=False)
    wanted = [point for point in (cwd, *binds) if point.safe and point.missing]
    fresh: tuple[str, ...] | None = ()
    if not tree.published:
        unmade = [point for point in wanted if not make(tree.path, point)]
    elif wanted and (fresh := layered_tops(tree.path, [p.destination for p in wanted])) is not None:
        layered, unmade = True, []
    else:
        unmade = wanted
    for bind, point in zip(plan.request.binds, binds, strict=True):
        if point in unmade:
            raise UsageError(f"cannot bind {bind.source} to {bind.destination}: {point.refusal()} "
                             f"at {tree.path}")
    if cwd in unmade:
        warn(f"{plan.request.cwd} is not mounted: {cwd.refusal()}; running in /")
        plan = replace(plan, bind_cwd=False)
    return replace(plan, layered_root=layered, fresh_dirs=fresh or ())
