"""The README's demo runs end to end and cleans up after itself."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_the_whole_pipeline() -> None:
    before = set(Path(tempfile.gettempdir()).glob("ligoenv-demo-*"))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True,
                            text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for step in range(1, 9):
        assert f"==> {step}/8" in out
    assert "analysis 1.0: matched-filter search" in out
    # After the tag moved: the lockfile still runs 1.0, the tag itself now 2.0.
    assert out.index("\n  1.0\n") < out.index("\n  2.0\n")
    assert "Demo complete" in out
    # Only this run's directory counts: another demo running beside it may come and go.
    assert set(Path(tempfile.gettempdir()).glob("ligoenv-demo-*")) <= before
