"""Choosing a runtime: by name, or automatically in the order that needs the least work.

Auto order: Apptainer/Singularity on an unpacked tree already on disk (CVMFS or a local publish
root); Apptainer/Singularity with `docker://REF@DIGEST`; Docker/Podman; bubblewrap on a local copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping

from ligoenv.client.runtimes.apptainer import Apptainer, Singularity
from ligoenv.client.runtimes.base import Runtime
from ligoenv.client.runtimes.bwrap import Bwrap
from ligoenv.client.runtimes.docker import Docker, Podman
from ligoenv.oci.errors import UsageError
from ligoenv.store.errors import RuntimeNotFound

RUNTIMES: dict[str, type[Runtime]] = {
    "apptainer": Apptainer, "singularity": Singularity, "docker": Docker, "podman": Podman,
    "bwrap": Bwrap,
}
AUTO_ORDER = ("apptainer", "singularity", "docker", "podman", "bwrap")
Which = Callable[[str], str | None]


def runtime_named(name: str, which: Which = shutil.which) -> Runtime:
    """The runtime called `name`; the error names the valid choices."""
    try:
        return RUNTIMES[name](which=which)
    except KeyError:
        raise UsageError(
            f"unknown runtime {name!r}: choose one of auto, {', '.join(RUNTIMES)}"
        ) from None


def select_runtime(name: str, which: Which = shutil.which,
                   environ: Mapping[str, str] | None = None) -> Runtime:
    """`name` if it is installed, or for `auto` the first installed one in AUTO_ORDER.

    Apptainer comes first either way: it runs a published tree when there is one and
    `docker://REF@DIGEST` otherwise, so the choice does not depend on where the image is.
    A Docker client with no engine to reach is passed over (Podman needs no daemon).
    """
    if name != "auto":
        runtime = runtime_named(name, which)
        if not runtime.available():
            raise runtime.not_found()
        return runtime
    environ = os.environ if environ is None else environ
    for candidate in AUTO_ORDER:
        runtime = runtime_named(candidate, which)
        if runtime.available() and runtime.ready(environ):
            return runtime
    raise RuntimeNotFound(
        f"no container runtime found: looked on PATH for {', '.join(AUTO_ORDER)} (and for a "
        "Docker engine socket); install "
        "Apptainer (https://apptainer.org/docs/admin/main/installation.html), Docker "
        "(https://docs.docker.com/get-docker/) or bubblewrap (`apt install bubblewrap`)"
    )
