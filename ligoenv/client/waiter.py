"""`ligoenv wait`: poll the publish index until a digest is published, with backoff and a deadline.

A publish root or CVMFS mount is checked directly (ligoenv.store.published); a ligoenv server answers
`/v1/status`, which also says when its job failed, so the wait ends at once with its error; a
static mirror only has the index, so there the index naming the digest is the sign.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ligoenv.oci.errors import LigoenvError
from ligoenv.oci.platform import Platform
from ligoenv.oci.reference import Reference
from ligoenv.store.errors import PublishError, PublishIndexError

FIRST_DELAY = 0.2
MAX_DELAY = 5.0
REQUEST_TIMEOUT = 10.0


class WaitTimedOut(LigoenvError):
    """The image was not published within the time given."""

    temporary = True


@dataclass(frozen=True)
class Checked:
    published: bool
    path: str | None  # a local path, or the path relative to the publish root behind a URL


def wait_published(location: str, ref: Reference, *, platform: Platform | None, timeout: float,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> Checked:
    """Return once `ref` (pinned) is published at `location`; WaitTimedOut or PublishError if not."""
    check = _http_check if location.startswith(("http://", "https://")) else _local_check
    deadline = clock() + timeout
    delay = FIRST_DELAY
    while True:
        try:
            checked = check(location, ref, platform)
        except PublishIndexError as error:
            if not error.temporary:
                raise
            checked = Checked(False, None)  # a mirror restarting: keep waiting
        if checked.published:
            return checked
        left = deadline - clock()
        if left <= 0:
            raise WaitTimedOut(f"{ref} was not published at {location} within "
                               f"{_seconds(timeout)}")
        sleep(min(delay, left))
        delay = min(delay * 1.5, MAX_DELAY)


def _local_check(location: str, ref: Reference, platform: Platform | None) -> Checked:
    from ligoenv.store.index.reader import LocalIndexReader
    from ligoenv.store.published import publication
    from ligoenv.store.publishroot import PublishRoot

    layout = PublishRoot(Path(location.removeprefix("file://")).expanduser())
    index = LocalIndexReader(layout.root).get(ref.registry, ref.repository)  # read afresh
    state = publication(layout, index, ref, platform)
    return Checked(state.published, str(layout.root / state.path) if state.published and state.path else None)


def _http_check(location: str, ref: Reference, platform: Platform | None) -> Checked:
    import requests

    params = {"ref": str(ref), **({"platform": str(platform)} if platform else {})}
    url = location.rstrip("/") + "/v1/status"
    try:
        response = requests.get(url, params=params, timeout=REQUEST_TIMEOUT)
    except requests.RequestException as error:
        raise PublishIndexError(f"{location} is unreachable ({type(error).__name__})",
                                temporary=True) from None
    if response.status_code == 404:
        return _mirror_check(location, ref)
    if response.status_code != 200:
        raise PublishIndexError(f"{url} answered HTTP {response.status_code}",
                                temporary=response.status_code >= 500 or response.status_code == 429)
    try:
        answer = response.json()
        job = answer.get("job") or {}
        published, path = bool(answer["published"]), answer.get("path")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PublishIndexError(f"{url} did not answer a status") from None
    if not published and job.get("state") == "failed":
        raise PublishError(f"the server could not publish {ref} (job {job.get('id')}): "
                           f"{job.get('error') or 'no error recorded'}")
    return Checked(published, path)


def _mirror_check(location: str, ref: Reference) -> Checked:
    """A static mirror: the index naming the digest (as the tag's current one) is all it can tell."""
    from ligoenv.store.index import open_index_reader

    index = open_index_reader(location).get(ref.registry, ref.repository)
    assert ref.digest is not None
    if index.record(ref.digest) is None:
        return Checked(False, None)
    if ref.tag is not None and index.current(ref.tag) != ref.digest:
        return Checked(False, None)
    return Checked(True, index.path_of(ref.digest))


def _seconds(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


def parse_duration(text: str) -> float:
    """`90`, `90s`, `10m`, `2h` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m or 1h")
    return value * units[unit]


__all__ = ["Checked", "WaitTimedOut", "parse_duration", "wait_published"]
