"""Worker processes that end with their driver.

A benchmark's worker processes each hold a model and its data (~1.3 GB). When the driver is killed
(SIGKILL, the OOM killer) it gets no chance to stop them, and they would go on computing results
nobody will read — and keep multiprocessing's resource tracker, whose pipe they hold, alive too.
:func:`worker_initializer` is a process pool's ``initializer`` that prevents this. It lives here,
away from the heavy modules, so a spawned worker reaches it before importing torch: the worker
watches its driver from the start of its life, not from the end of its imports.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

#: Seconds between a worker's checks that its driver still runs.
PARENT_POLL_SECONDS = 0.5
#: The watching thread's name, as ``top -H`` and ``/proc/<pid>/task/<tid>/comm`` show it (15 bytes at most).
WATCH_THREAD_NAME = "medequity-watch"
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def worker_initializer(threads: int, parent_pid: int) -> None:
    """A process pool's initializer: end with ``parent_pid`` (:func:`die_with_parent`), then use
    ``threads`` threads for torch and BLAS (the pool's processes share the cores instead of each
    taking all of them: oversubscription is slow)."""
    die_with_parent(parent_pid)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def die_with_parent(parent_pid: int, *, interval: float = PARENT_POLL_SECONDS) -> None:
    """End this process when ``parent_pid``, its parent, ends — however it ends.

    Linux: the kernel sends SIGTERM at the parent's death (``prctl(PR_SET_PDEATHSIG)``). Everywhere,
    and for a parent that died before that was set: a daemon thread checks every ``interval``
    seconds that the parent is still this process's parent (an orphan is adopted by another
    process) and exits at once when it is not.
    """
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent is already gone

    def watch() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_NAME, WATCH_THREAD_NAME.encode()[:15], 0, 0, 0)
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)  # nobody will read this process's results

    threading.Thread(target=watch, name=WATCH_THREAD_NAME, daemon=True).start()


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl  # noqa: B018 - a libc without prctl (unusual): fall back to the watching thread
    except (OSError, AttributeError):
        return None
    return libc
