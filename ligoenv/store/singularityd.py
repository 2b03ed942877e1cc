"""What an image tree's `.singularity.d/` holds: the set `apptainer build --sandbox` writes.

Our own scripts, with the behaviour Apptainer documents: every action sources the env scripts in
name order, the image's `Env` is exported as is, the runscript runs Entrypoint + Cmd like
`docker run`, and `labels.json` holds the image's labels. Older Singularity 3.x runs the action
scripts inside the container, and some tools call them directly, so they must work on their own.
`ligoenv.store.completion` writes these files into a tree; this module says what they contain, and
reads the image's Env and command back for runtimes that do not source them (bwrap).
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from ligoenv.oci.manifest import ImageConfig

ENV_SCRIPT = ".singularity.d/env/10-docker2singularity.sh"
ENVIRONMENT = ".singularity.d/env/90-environment.sh"
RUNSCRIPT = ".singularity.d/runscript"
LABELS = ".singularity.d/labels.json"
ACTIONS = ("exec", "run", "shell", "start", "test")
EXECUTABLE = 0o755
# Links at the tree's root that Apptainer's sandboxes carry, to the files they name.
ROOT_LINKS = {
    "environment": ENVIRONMENT,
    "singularity": RUNSCRIPT,
    **{f".{action}": f".singularity.d/actions/{action}" for action in ("exec", "run", "shell", "test")},
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Sourced first by every action: the image's Env, then the runtime's adjustments, in name order.
_SOURCE_ENV = """\
for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then . "$script"; fi
done
"""

_ACTIONS = {
    "exec": """\
if [ $# -eq 0 ]; then
    echo "exec: no command given" >&2
    exit 1
fi
exec "$@"
""",
    "run": """\
if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript "$@"
fi
echo "this image has no runscript: running /bin/sh" >&2
exec /bin/sh "$@"
""",
    # The shell named by APPTAINER_SHELL (SINGULARITY_SHELL on Singularity), else bash, else sh.
    "shell": """\
wanted="${APPTAINER_SHELL:-${SINGULARITY_SHELL:-}}"
if [ -n "$wanted" ] && [ -x "$wanted" ]; then
    exec "$wanted" "$@"
fi
if [ -x /bin/bash ]; then
    SHELL=/bin/bash
    PS1="Apptainer> "
    export SHELL PS1
    exec /bin/bash --norc "$@"
fi
if [ -x /bin/sh ]; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh "$@"
fi
echo "this image has no /bin/sh" >&2
exit 1
""",
    # An instance's init (PID 1) waits for this signal before the startscript runs.
    "start": """\
kill -CONT 1 2>/dev/null
if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript
fi
""",
    "test": """\
if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test "$@"
fi
echo "this image defines no test" >&2
exit 0
""",
}

_BASE = "#!/bin/sh\n# Base environment of every image; the image's own Env is in 10-docker2singularity.sh.\n"
_ENVIRONMENT = ("#!/bin/sh\n# A definition file's %environment section would go here; "
                "images from a registry have none.\n")
# `--nv` binds the host's GPU libraries into /.singularity.d/libs: they come after the image's.
_BASE_99 = """\
#!/bin/sh
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH=/.singularity.d/libs
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi
if [ -z "${PS1:-}" ]; then
    PS1="Apptainer> "
fi
export LD_LIBRARY_PATH PS1
"""
# Apptainer hands `--env PATH=...` and the PREPEND_PATH / APPEND_PATH variables over in these
# names, so that they apply after the image's PATH has been set.
_RUNTIME_VARS = """\
#!/bin/sh
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PREPEND_PATH:$PATH"
fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="$PATH:$SING_USER_DEFINED_APPEND_PATH"
fi
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PATH"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
"""


def files(config: ImageConfig, labels: Mapping[str, str] | None = None) -> dict[str, tuple[str, int]]:
    """Path below the tree -> (content, mode) of every file of `.singularity.d/`.

    `labels` are added to the image's own in labels.json (and win over them).
    """
    out = {f".singularity.d/actions/{name}": (action_script(name), EXECUTABLE) for name in ACTIONS}
    out.update({
        ".singularity.d/env/01-base.sh": (_BASE, EXECUTABLE),
        ENV_SCRIPT: (env_script(config.env), EXECUTABLE),
        ENVIRONMENT: (_ENVIRONMENT, EXECUTABLE),
        ".singularity.d/env/99-base.sh": (_BASE_99, EXECUTABLE),
        ".singularity.d/env/99-runtimevars.sh": (_RUNTIME_VARS, EXECUTABLE),
        RUNSCRIPT: (runscript(config.entrypoint, config.cmd), EXECUTABLE),
        ".singularity.d/startscript": ("#!/bin/sh\n", EXECUTABLE),
        LABELS: (labels_json({**config.labels, **(labels or {})}), 0o644),
    })
    return out


def action_script(name: str) -> str:
    return f"#!/bin/sh\n# Apptainer action '{name}', written by ligoenv.\n{_SOURCE_ENV}{_ACTIONS[name]}"


def env_script(env: Sequence[str]) -> str:
    """A POSIX sh script exporting the image's `Env` (the image's PATH included), values as is."""
    lines = ["#!/bin/sh", "# Generated by ligoenv from the image config's Env."]
    for item in env:
        name, sep, value = item.partition("=")
        # A name sh cannot export (or an entry without `=`) cannot be expressed: skip it.
        if sep and _ENV_NAME.fullmatch(name):
            lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def runscript(entrypoint: Sequence[str], cmd: Sequence[str]) -> str:
    """Run Entrypoint + Cmd like `docker run`: arguments replace Cmd, never the Entrypoint.

    Arguments pass through as "$@" (no eval), so spaces, quotes and `$` in them are preserved.
    The working directory is the caller's, as with Apptainer (whose `--pwd` chooses another):
    an image's WorkingDir is not applied.
    """
    lines = ["#!/bin/sh", "# Generated by ligoenv from the image config's Entrypoint and Cmd."]
    if cmd:
        lines.append(f"if [ $# -eq 0 ]; then set -- {_words(cmd)}; fi")
    elif not entrypoint:
        lines += ['if [ $# -eq 0 ]; then',
                  '    echo "no command given and the image defines no Entrypoint or Cmd" >&2',
                  "    exit 1", "fi"]
    lines.append(f"exec {_words(entrypoint)} \"$@\"" if entrypoint else 'exec "$@"')
    return "\n".join(lines) + "\n"


def labels_json(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(labels), indent=2, sort_keys=True) + "\n"


def _words(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


def tree_env(tree: Path) -> tuple[str, ...]:
    """The image's Env, read back from the script `complete_tree` wrote (`export NAME='value'`)."""
    try:
        words = shlex.split((tree / ENV_SCRIPT).read_text(encoding="utf-8"), comments=True)
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError, ValueError):
        return ()
    # Values may span lines (quoted newlines), so the script is read as words, not lines.
    return tuple(word for before, word in itertools.pairwise(words)
                 if before == "export" and "=" in word)


def tree_command(tree: Path) -> tuple[str, ...]:
    """The command that runs the image's Entrypoint/Cmd inside the tree, when it has one."""
    return (f"/{RUNSCRIPT}",) if (tree / RUNSCRIPT).is_file() else ()
