"""`ligoenv wait` against a real registry whose webhooks reach a real `ligoenv-server serve`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ligoenv.client.waiter import parse_duration
from ligoenv.oci.digest import Digest
from testbed.images import build_busybox_image, files_layer, push_image
from testbed.stack import Stack, new_stack

LIGOENV = str(Path(sys.executable).parent / "ligoenv")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = new_stack(tmp_path_factory.mktemp("wait"))
    stack.start("serve")
    yield stack
    stack.stop_all()
    stack.registry.stop()


def _wait(userenv: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([LIGOENV, "wait", *args], env=userenv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("through", ["root", "server"])
def test_wait_returns_once_the_pushed_image_is_published(stack: Stack, userenv: dict[str, str],
                                                         through: str) -> None:
    image = build_busybox_image(f"wait-{through}")
    digest = Digest.of_bytes(image.manifest_bytes())
    ref = f"{stack.registry.host}/ci/analysis:{through}@{digest}"
    index = str(stack.root) if through == "root" else stack.relay_url
    waiting = _wait(userenv, ref, "--index", index, "--timeout", "60s")  # started before the push
    push_image(stack.registry.host, "ci/analysis", through, image)
    out, err = waiting.communicate(timeout=90)
    assert (waiting.returncode, err) == (0, "")
    tree = f".images/{digest.hex[:2]}/{digest.hex}"
    assert out == (f"{stack.root / tree}\n" if through == "root" else f"{tree}\n")
    link = stack.root / stack.registry.host / f"ci/analysis:{through}"
    assert link.resolve() == (stack.root / tree).resolve()


def test_wait_without_a_digest_asks_the_registry(stack: Stack, userenv: dict[str, str]) -> None:
    image = build_busybox_image("wait-tag")
    digest = push_image(stack.registry.host, "ci/tagged", "v2", image)
    done = subprocess.run([LIGOENV, "wait", f"{stack.registry.host}/ci/tagged:v2", "--index",
                           str(stack.root), "--timeout", "60s"], env=userenv, capture_output=True,
                          text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{stack.root}/.images/{digest.hex[:2]}/{digest.hex}\n"
    assert done.stderr == f"ligoenv: waiting for {stack.registry.host}/ci/tagged:v2@{digest}\n"


def test_wait_times_out_cleanly(stack: Stack, userenv: dict[str, str]) -> None:
    never = Digest.of_bytes(b"never pushed")
    ref = f"{stack.registry.host}/ci/never:v1@{never}"
    done = subprocess.run([LIGOENV, "wait", ref, "--index", stack.relay_url, "--timeout", "1s"],
                          env=userenv, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"ligoenv: error: {stack.registry.host}/ci/never:v1@{never} was not published "
                           f"at {stack.relay_url} within 1 s\n")


def test_wait_stops_at_once_when_the_server_failed_the_job(stack: Stack, userenv: dict[str, str]) -> None:
    odd = files_layer({"data": "x"}, "application/vnd.example.not-a-layer")
    image = build_busybox_image("unpublishable", extra_layers=[odd])
    digest = push_image(stack.registry.host, "ci/broken", "v1", image)
    done = subprocess.run([LIGOENV, "wait", f"{stack.registry.host}/ci/broken:v1@{digest}", "--index",
                           stack.relay_url, "--timeout", "120s"], env=userenv, capture_output=True,
                          text=True, timeout=150, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"ligoenv: error: the server could not publish "
                                  f"{stack.registry.host}/ci/broken:v1@{digest} (job ")
    assert "unsupported layer media type 'application/vnd.example.not-a-layer'" in done.stderr
    assert done.stderr.count("\n") == 1


def test_wait_needs_an_index_and_a_duration(userenv: dict[str, str]) -> None:
    done = subprocess.run([LIGOENV, "wait", "lab/app:v1"], env=userenv, capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stderr) == (
        2, "ligoenv: error: wait needs a publish index: pass --index LOCATION or set LIGOENV_INDEX\n")
    done = subprocess.run([LIGOENV, "wait", "lab/app:v1", "--index", "/x", "--timeout", "soon"],
                          env=userenv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "is not a duration such as 90s, 10m or 1h" in done.stderr


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "10m", "1.5h")] == [90, 90, 600, 5400]
    with pytest.raises(ValueError):
        parse_duration("-3m")
