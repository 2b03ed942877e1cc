"""The wheel: schemas inside, the server as `ligoenv_server`, no top-level `server` module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("ligoenv-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names if not name.startswith("ligoenv-")}
    assert tops == {"ligoenv", "ligoenv_server"}
    for schema in ("lockfile", "index", "job", "server-config", "webhooks/distribution",
                   "webhooks/dockerhub", "webhooks/harbor", "webhooks/generic"):
        assert f"ligoenv/schemafiles/{schema}.schema.json" in names
    assert "ligoenv/store/schemas.py" in names and "ligoenv_server/cli.py" in names
    metadata = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "ligoenv = ligoenv.cli.main:main" in entry_points
    assert "ligoenv-server = ligoenv_server.cli:main" in entry_points
