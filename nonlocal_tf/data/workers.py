"""What each decoding worker process (Grain's ``mp_prefetch``) runs first: it
ends when the process that started it is gone.

A process stopped by SIGINT or SIGTERM closes Grain's iterators, which stop
their workers. One killed outright (SIGKILL: the out-of-memory killer, a
scheduler's last word) cannot, and its workers, about 300 MB each, lived on
under pid 1 with Grain's resource tracker. So each worker watches its parent:
a daemon thread ends the worker within `POLL_S` of the parent's death (the
worker's parent pid changes when it is re-parented to init or a subreaper),
and the resource tracker ends once no process holds its pipe.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable

POLL_S = 0.5


def end_with_this_process() -> Callable[[int, int], None]:
    """A ``worker_init_fn`` for `grain.IterDataset.mp_prefetch`: workers
    started by this process end when it does."""
    return functools.partial(_watch_parent, os.getpid())


def _watch_parent(parent: int, worker_index: int, worker_count: int) -> None:
    """In a worker: a thread that ends the process once ``parent`` is no
    longer its parent (already gone by the time the worker starts: at once)."""
    del worker_index, worker_count

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        os._exit(1)  # no clean-up to wait for: whatever it made, nobody reads

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
