"""Apptainer and Singularity: run the unpacked tree (CVMFS or a local copy), else `docker://REF@DIGEST`."""

from __future__ import annotations

from collections.abc import Mapping

from ligoenv.client.runtimes.base import RunPlan, Runtime

INSTALL_HINT = ("install Apptainer (https://apptainer.org/docs/admin/main/installation.html) "
                "or choose another --runtime")


class Apptainer(Runtime):
    """`apptainer exec [--cleanenv] [--nv] [--bind ...] [--pwd DIR] IMAGE CMD...`.

    Binds from APPTAINER_BIND/SINGULARITY_BIND stay in the environment, where apptainer reads them.
    """

    name = "apptainer"
    install_hint = INSTALL_HINT
    env_prefix = "APPTAINERENV_"

    def command(self, plan: RunPlan) -> list[str]:
        argv = [self.executable, "exec" if plan.request.command else "run"]
        if plan.request.cleanenv:
            argv.append("--cleanenv")
        if plan.request.gpu:
            argv.append("--nv")
        for bind in plan.request.binds:
            argv += ["--bind", str(bind)]
        if plan.request.workdir:
            argv += ["--pwd", plan.request.workdir]
        argv.append(self.target(plan))
        return argv + list(plan.request.command)

    def environment(self, plan: RunPlan, environ: Mapping[str, str]) -> dict[str, str]:
        """Ours, plus `<PREFIX>NAME=value` for each --env.

        Not `--env NAME=value`: apptainer splits that option's values as CSV, so a value holding
        `,` or `"` would arrive cut or mangled. These variables pass even with --cleanenv.
        """
        env = dict(environ)
        env.update({self.env_prefix + name: value for name, value in plan.request.env})
        return env

    def target(self, plan: RunPlan) -> str:
        if plan.tree is not None:
            return str(plan.tree)
        # Given an index, apptainer fetches the host's platform: an explicit --platform is
        # honoured by naming that platform's manifest instead.
        image = plan.image.with_digest(plan.platform_digest) if plan.platform_digest else plan.image
        return f"docker://{image.pinned_str()}"


class Singularity(Apptainer):
    """SingularityCE and older Singularity: the same command line as Apptainer."""

    name = "singularity"
    install_hint = INSTALL_HINT
    env_prefix = "SINGULARITYENV_"
