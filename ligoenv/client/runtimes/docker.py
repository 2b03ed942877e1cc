"""Docker and Podman: `run --rm` the image by digest with the working directory bind-mounted."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ligoenv.client.runtimes.base import RunPlan, Runtime

# Where Docker Engine, Docker Desktop, Colima, OrbStack and Rancher Desktop put their socket.
ENGINE_SOCKETS = ("/var/run/docker.sock", "~/.docker/run/docker.sock", "~/.colima/default/docker.sock",
                  "~/.orbstack/run/docker.sock", "~/.rd/docker.sock")


class Docker(Runtime):
    """`docker run --rm [-i] [-t] -v $PWD:$PWD -w $PWD [-v ...] [-e K=V] [--gpus all] [--platform P]
    REF@DIGEST CMD`.

    A container starts from the image's environment only, so --cleanenv needs no flag here.
    """

    name = "docker"
    install_hint = ("install Docker (https://docs.docker.com/get-docker/) or Podman, "
                    "or choose another --runtime")

    def ready(self, environ: Mapping[str, str]) -> bool:
        """A docker client without an engine to talk to cannot run anything: `auto` moves on.

        Checked without running `docker info` (which costs a round trip to the engine): an
        explicit DOCKER_HOST or context counts, else one of the usual sockets must exist.
        """
        if environ.get("DOCKER_HOST") or environ.get("DOCKER_CONTEXT"):
            return True
        return any(os.path.exists(Path(socket).expanduser()) for socket in ENGINE_SOCKETS)

    def command(self, plan: RunPlan) -> list[str]:
        argv = [self.executable, "run", "--rm"]
        if plan.request.stdin_open:
            argv.append("-i")
        if plan.request.tty:
            argv.append("-t")
        cwd = plan.request.cwd
        argv += ["-v", f"{cwd}:{cwd}", "-w", plan.request.workdir or cwd]
        for bind in plan.request.binds:
            argv += ["-v", str(bind)]
        for name, value in plan.request.env:
            argv += ["-e", f"{name}={value}"]
        if plan.request.gpu:
            argv += ["--gpus", "all"]
        platform = self.platform(plan)
        if platform:
            argv += ["--platform", platform]
        return [*argv, plan.pinned, *plan.request.command]

    def platform(self, plan: RunPlan) -> str | None:
        """The --platform to ask for, if any.

        On an Apple silicon Mac an image without an arm64 variant still runs, emulated, but
        only when asked for linux/amd64 explicitly.
        """
        if plan.platform_explicit:
            return str(plan.platform)
        arm64 = any(p.startswith("linux/arm64") for p in plan.image_platforms)
        if plan.request.host.is_macos_arm64 and plan.image_platforms and not arm64:
            return "linux/amd64"
        return None


class Podman(Docker):
    """Docker's command line, without a daemon: installed is ready."""

    name = "podman"
    install_hint = ("install Podman (https://podman.io/docs/installation) or Docker, "
                    "or choose another --runtime")

    def ready(self, environ: Mapping[str, str]) -> bool:
        return True
