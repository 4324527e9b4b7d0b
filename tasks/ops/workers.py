"""Worker processes for training and scoring: one torch per process (threads and RNG are process-global),
torch imported once per worker, and a crash in one point cannot take the flow down with it."""

import contextvars
import heapq
import itertools
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager

_pool: ProcessPoolExecutor | None = None
_shape: tuple[int, int] | None = None
_lock = threading.Lock()  # arms call in from several threads at once: create or replace the pool only once


def quiet_libraries() -> None:
    """Progress is reported per point by the flow; per-batch bars from datasets/transformers only bury it."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _log_to_file() -> None:
    """Library warnings and logs of this worker go to the study's log file (CURATE_LOG_FILE, set by the CLI), not
    to the terminal; without one they stay on stderr."""
    import logging

    from tasks.common import LOG_FILE_ENV

    path = os.environ.get(LOG_FILE_ENV)
    if not path:
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s worker {os.getpid()} %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.captureWarnings(True)


def _init(threads: int) -> None:
    _log_to_file()
    import torch
    torch.set_num_threads(threads)  # with another process on the other core, 2 threads can be 20x slower than 1
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()


# glibc returns freed tensors of a few MB to the kernel at once and page-faults them back on the next step; keeping
# them in the heap cut a training run's page faults 4x and its system time 3x (+5-10 % tokens/s on a CPU)
MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
          "MALLOC_TOP_PAD_": str(256 << 20)}


def pool(workers: int, threads: int) -> ProcessPoolExecutor:
    global _pool, _shape
    with _lock:
        if _pool is None or _shape != (workers, threads):
            _shutdown()
            for key, value in MALLOC.items():  # read by each worker's C library when it starts
                os.environ.setdefault(key, value)
            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init, initargs=(threads,))
            _shape = (workers, threads)
            for _ in range(workers):  # start every worker now: their imports (~10 s) overlap the first task
                _pool.submit(os.getpid)
        return _pool


def run(workers: int, threads: int, fn, *args, **kwargs):
    """Run fn in a worker process and wait for its (small, picklable) result."""
    return pool(workers, threads).submit(fn, *args, **kwargs).result()


def shutdown() -> None:
    with _lock:
        _shutdown()


def _shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None


class Slots:
    """At most `n` holders at once (the study's workers); waiters get in by priority (lowest first: the flow passes
    -size, so the longest points start first and the study ends sooner), then in arrival order. expect(k): k points
    are on their way (every arm's, arriving from their subflows over a few seconds); no one starts before they have
    all arrived, or `gate_s` seconds after the first did, so the first arm to arrive cannot fill the workers with its
    small points while the largest wait."""

    def __init__(self, n: int, gate_s: float = 30.0):
        self.free, self.gate_s = n, gate_s
        self.cond, self.waiting, self.order = threading.Condition(), [], itertools.count()
        self.expected, self.arrived, self.opens_at = 0, 0, None

    def expect(self, k: int) -> None:
        with self.cond:
            self.expected, self.arrived, self.opens_at = k, 0, None
            self.cond.notify_all()

    def _gated(self) -> bool:
        if self.arrived >= self.expected:
            return False
        return time.monotonic() < self.opens_at

    @contextmanager
    def taken(self, priority: int = 0):
        me = (priority, next(self.order))
        with self.cond:
            heapq.heappush(self.waiting, me)
            self.arrived += 1
            self.opens_at = self.opens_at or time.monotonic() + self.gate_s
            self.cond.notify_all()
            while self._gated() or self.free == 0 or self.waiting[0] != me:
                self.cond.wait(timeout=max(self.opens_at - time.monotonic(), 0.05) if self._gated() else None)
            heapq.heappop(self.waiting)
            self.free -= 1
            self.cond.notify_all()  # the next waiter may be first now, and a slot may still be free
        try:
            yield
        finally:
            with self.cond:
                self.free += 1
                self.cond.notify_all()


def each(fn, items: list) -> None:
    """fn(item) for every item at once, each in its own thread with a copy of the caller's context (Prefect's flow
    run, logger); waits for all, then raises the first error (the others still finish: their work is kept)."""
    if not items:
        return
    with ThreadPoolExecutor(len(items), thread_name_prefix="curate-point") as pool:
        futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
