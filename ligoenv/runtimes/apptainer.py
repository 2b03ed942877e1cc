"""Apptainer and Singularity: run the unpacked tree (CVMFS or a local copy), else `docker://REF@DIGEST`."""

from __future__ import annotations

from ligoenv.runtimes.base import RunPlan, Runtime

INSTALL_HINT = ("install Apptainer (https://apptainer.org/docs/admin/main/installation.html) "
                "or choose another --runtime")


class Apptainer(Runtime):
    """`apptainer exec [--cleanenv] [--nv] [--bind ...] [--env K=V] [--pwd DIR] IMAGE CMD...`.

    Binds from APPTAINER_BIND/SINGULARITY_BIND stay in the environment, where apptainer reads them.
    """

    name = "apptainer"
    install_hint = INSTALL_HINT

    def command(self, plan: RunPlan) -> list[str]:
        argv = [self.executable, "exec" if plan.command else "run"]
        if plan.cleanenv:
            argv.append("--cleanenv")
        if plan.gpu:
            argv.append("--nv")
        for bind in plan.binds:
            argv += ["--bind", str(bind)]
        for name, value in plan.env:
            argv += ["--env", f"{name}={value}"]
        if plan.workdir:
            argv += ["--pwd", plan.workdir]
        argv.append(self.target(plan))
        return argv + list(plan.command)

    def target(self, plan: RunPlan) -> str:
        if plan.tree is not None:
            return str(plan.tree)
        return f"docker://{plan.pinned}"


class Singularity(Apptainer):
    """SingularityCE and older Singularity: the same command line as Apptainer."""

    name = "singularity"
    install_hint = INSTALL_HINT
