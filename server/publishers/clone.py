"""Clone a published tree for a layer chain or an image: hard links, or reflinks where the file
system has them; directories are always made anew, so a clone shares no directory with its source.

A hard-link clone shares every file's inode with its source, which is safe only because nothing
writes through an existing inode: the unpacker unlinks and recreates what a layer changes
(ligoenv.oci.rootfs), completion replaces its files (ligoenv.store.completion), and published trees are
never modified afterwards.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ligoenv.store.errors import PublishError

HARDLINK = "hardlink"
REFLINK = "reflink"


def clone_method(directory: Path) -> str:
    """REFLINK when files in `directory` can share extents (btrfs, XFS), else HARDLINK.

    Reflinked files are inodes of their own, so even a careless writer could not change the
    source; hard links cost less where reflinks are missing (ext4, tmpfs).
    """
    with tempfile.TemporaryDirectory(dir=directory, prefix=".clone-probe-") as probe:
        source = Path(probe) / "a"
        source.write_bytes(b"probe")
        result = subprocess.run(["cp", "--reflink=always", str(source), str(Path(probe) / "b")],
                                capture_output=True, timeout=30, check=False)
    return REFLINK if result.returncode == 0 else HARDLINK


def clone_tree(source: Path, target: Path, method: str = HARDLINK, timeout: float = 3600) -> None:
    """Make `target` (absent) a clone of the tree `source`: same names, types, modes, owners,
    times, extended attributes and hard-link groups."""
    share = ["--reflink=always"] if method == REFLINK else ["--link"]
    argv = ["cp", "--archive", *share, "--no-target-directory", "--", str(source), str(target)]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise PublishError(f"cloning {source} did not finish within {timeout:g} s",
                           temporary=True) from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise PublishError(f"cannot clone {source} to {target}: "
                           f"{lines[-1] if lines else f'cp exited with {result.returncode}'}",
                           temporary=True)
