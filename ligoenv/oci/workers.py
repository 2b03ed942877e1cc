"""Running independent tasks on a few threads, all or nothing: the first failure (or Ctrl-C)
cancels the tasks not yet started and is raised once the running ones have ended."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed


def run_all(tasks: Sequence[Callable[[], object]], threads: int, name: str) -> None:
    """Run every task, at most `threads` at a time, in threads named `name-N`."""
    if not tasks:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(tasks))),
                            thread_name_prefix=name) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
