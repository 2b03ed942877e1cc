"""doctor on a site: the bind points of the lockfile's published trees, and binds they cannot take."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testbed.clientkit import Cli, Pushed, write_index

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Capture = pytest.CaptureFixture[str]


def test_doctor_shows_the_bind_points_of_locked_trees(cli: Cli, images: dict[str, Pushed],
                                                      tmp_path: Path, capsys: Capture) -> None:
    old = images["old"]
    root = tmp_path / "root"
    tree = root / ".images" / old.digest.hex[:2] / old.digest.hex
    assert cli("pull", "--output", str(tree), old.ref) == 0
    write_index(root, old, [(old.digest, T0)])
    assert cli("lock", "--index", str(root), "--name", f"lal={old.ref}") == 0
    (tree / "opt").mkdir()  # the image's own directory is a place to bind onto too
    cli.environ.update(LIGOENV_INDEX=str(root),
                       APPTAINER_BIND="/data/strain:/gpfs:ro,/scratch,/home/me:/opt",
                       SINGULARITY_BIND="/lustre")
    capsys.readouterr()
    assert cli("doctor", "--json", "--registry", "127.0.0.1:9") == 0
    trees = json.loads(capsys.readouterr().out)["trees"]
    assert trees == {"lal": {
        "path": str(tree),
        "bind_points": ["/cvmfs", "/srv", "/hdfs", "/gpfs", "/dev", "/proc", "/sys", "/tmp",
                        "/var/tmp", "/home"],
        "binds_without_mount_point": ["/scratch", "/lustre"]}}
    assert cli("doctor", "--registry", "127.0.0.1:9") == 0
    text = capsys.readouterr().out
    assert f"tree of lal: {tree}\n  bind points: /cvmfs /srv /hdfs /gpfs" in text
    assert "warning: /scratch (APPTAINER_BIND) has no directory in this tree" in text
