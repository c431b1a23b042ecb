"""A fault-tolerant task queue over any ``concurrent.futures.Executor``, and the executors it runs on.

``TaskQueue`` cuts items into chunks, keeps a bounded number in flight, preserves order and resubmits
the chunks of a worker that died. The executors: the caller's thread (``InlineExecutor``), thread
pools, spawn-context process pools (kept warm across calls, ended by ``shutdown_pools``) and Dask
(``dask_client``). Nothing here knows what the tasks do; TensorFlow is never imported, and process
workers are spawned, never forked, so a parent that imported TensorFlow first cannot deadlock them.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import logging
import math
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import cv2
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Multiprocessing start method for process workers. Never "fork": a notebook has usually imported
#: TensorFlow (which started threads) before it loads data, and forking a threaded process can deadlock.
START_METHOD = "spawn"


def default_workers() -> int:
    """CPUs this process may run on (the affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _is_worker_loss(exc: BaseException) -> bool:
    """True for failures of the machinery (a dead worker), not of the task itself; those are retried."""
    if isinstance(exc, (cf.BrokenExecutor, cf.CancelledError)):
        return True
    # Dask reports a worker that died running the task as KilledWorker; matched by name so
    # that distributed stays an optional import.
    return type(exc).__name__ in {"KilledWorker", "CommClosedError"}


def _shutdown_executor(executor: cf.Executor, wait: bool) -> None:
    """Shut an executor down, cancelling what has not started; Dask's executor lacks cancel_futures."""
    try:
        executor.shutdown(wait=wait, cancel_futures=True)
    except TypeError:
        executor.shutdown(wait=wait)


class Pool:
    """An executor together with the factory that builds it, so a broken executor can be replaced.

    A ``ProcessPoolExecutor`` whose worker was killed is broken for good (every pending future fails
    with ``BrokenProcessPool``); the queue then calls ``rebuild()``. A Pool made around a caller's
    executor (``factory=None``) cannot be rebuilt.
    """

    def __init__(
        self,
        factory: Callable[[], cf.Executor] | None,
        executor: cf.Executor | None = None,
        name: str = "pool",
    ) -> None:
        if factory is None and executor is None:
            raise ValueError("Pool needs a factory or an executor")
        self.factory = factory
        self.name = name
        self._executor = executor
        self.rebuilds = 0
        self._lock = threading.Lock()

    @property
    def executor(self) -> cf.Executor:
        """The current executor, built on first use."""
        with self._lock:
            if self._executor is None:
                assert self.factory is not None
                self._executor = self.factory()
            return self._executor

    def rebuild(self, broken: cf.Executor) -> cf.Executor:
        """Replace ``broken`` by a fresh executor (unless another caller already replaced it)."""
        if self.factory is None:
            raise RuntimeError(
                f"{self.name}: the executor broke and was supplied by the caller, so it cannot be rebuilt"
            )
        with self._lock:
            if self._executor is broken:
                self._executor = None
                self.rebuilds += 1
                logger.warning(
                    "%s: a worker died; rebuilding the executor (rebuild %d)", self.name, self.rebuilds
                )
                _shutdown_executor(broken, wait=False)
        return self.executor

    def shutdown(self, wait: bool = True) -> None:
        """Shut the executor down (a later use builds a new one)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            _shutdown_executor(executor, wait=wait)


class InlineExecutor(cf.Executor):
    """Runs each task in the caller's thread at submit time: the plain serial loop, behind the same API."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> cf.Future[R]:
        future: cf.Future[R] = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, like any executor
            future.set_exception(exc)
        return future


class TaskQueue:
    """Chunked, bounded, order-preserving task submission that survives dead workers.

    Items are cut into chunks (several items per task, to amortise inter-process traffic); at most
    ``max_in_flight`` chunks are submitted at once, so memory stays bounded and the pool never idles.
    When a worker dies, every chunk not yet completed is resubmitted on a rebuilt executor, at most
    ``max_retries`` times per run; an exception raised by the task function itself is not retried.
    """

    #: Bounds of the default chunk sizes: a chunk should outweigh a process pool's per-task round
    #: trip and pickling, yet stay small enough that the last chunks leave little idle time.
    MIN_CHUNK, MAX_CHUNK = 4, 32

    def __init__(
        self,
        pool: Pool | cf.Executor | Callable[[], cf.Executor],
        *,
        workers: int | None = None,
        max_in_flight: int | None = None,
        max_retries: int = 3,
        progress: bool = False,
        desc: str = "tasks",
    ) -> None:
        self._owns_pool = not isinstance(pool, Pool)
        if isinstance(pool, cf.Executor):
            pool = Pool(None, executor=pool, name=type(pool).__name__)
        elif not isinstance(pool, Pool):
            pool = Pool(pool, name=getattr(pool, "__name__", "pool"))
        self.pool = pool
        self.workers = workers or default_workers()
        self.max_in_flight = max(1, max_in_flight or 2 * self.workers)
        self.max_retries = max_retries
        self.progress = progress
        self.desc = desc
        self.retries = 0

    def default_chunks(self, n: int) -> list[tuple[int, int]]:
        """(start, stop) of each chunk: guided self-scheduling, large chunks first, small ones last.

        Each chunk takes the remaining items over twice the workers, between MIN_CHUNK and MAX_CHUNK.
        Fixed small chunks pay the per-task cost too often and fixed large ones leave one worker alone
        with a big chunk at the end; shrinking chunks amortise the cost early and finish together.
        """
        bounds, start = [], 0
        while start < n:
            size = min(self.MAX_CHUNK, max(self.MIN_CHUNK, math.ceil((n - start) / (2 * self.workers))))
            bounds.append((start, min(n, start + size)))
            start += size
        return bounds

    def run(
        self,
        fn: Callable[[Sequence[T]], R],
        items: Sequence[T],
        on_result: Callable[[int, R], None],
        chunk_size: int | None = None,
    ) -> None:
        """Call ``fn(chunk)`` on every chunk and ``on_result(start_index, result)`` as each completes.

        ``on_result`` runs in the calling thread; if it raises, tasks not yet started are cancelled,
        running ones are waited for, and the exception propagates.
        """
        if chunk_size:
            bounds = [(start, start + chunk_size) for start in range(0, len(items), chunk_size)]
        else:
            bounds = self.default_chunks(len(items))
        chunks = [(start, items[start:stop]) for start, stop in bounds]
        pending: deque[int] = deque(range(len(chunks)))
        in_flight: dict[cf.Future[R], int] = {}
        with tqdm(total=len(items), desc=self.desc, disable=not self.progress, unit="item") as bar:
            try:
                while pending or in_flight:
                    executor = self.pool.executor
                    while pending and len(in_flight) < self.max_in_flight:
                        chunk_id = pending.popleft()
                        try:
                            future = executor.submit(fn, chunks[chunk_id][1])
                        except cf.BrokenExecutor as exc:
                            pending.appendleft(chunk_id)
                            self._recover(executor, exc, in_flight, pending, on_result, chunks, bar)
                            break
                        in_flight[future] = chunk_id
                    if not in_flight:
                        continue
                    done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                    broken: BaseException | None = None
                    for future in sorted(done, key=in_flight.__getitem__):
                        chunk_id = in_flight.pop(future)
                        exc = future.exception() if not future.cancelled() else cf.CancelledError()
                        if exc is None:
                            on_result(chunks[chunk_id][0], future.result())
                            bar.update(len(chunks[chunk_id][1]))
                        elif not _is_worker_loss(exc):
                            raise exc
                        elif isinstance(exc, cf.BrokenExecutor):
                            pending.appendleft(chunk_id)
                            broken = exc
                        else:  # one task lost (e.g. Dask KilledWorker): the executor itself is fine
                            self._count_retry(exc)
                            pending.appendleft(chunk_id)
                    if broken is not None:
                        self._recover(executor, broken, in_flight, pending, on_result, chunks, bar)
                    pending = deque(sorted(pending))
            finally:
                self._drain(in_flight)

    def map(
        self, fn: Callable[[Sequence[T]], Sequence[R]], items: Sequence[T], chunk_size: int | None = None
    ) -> list[R]:
        """Flattened ``fn`` results for every item, in input order."""
        out: list[Any] = [None] * len(items)

        def place(start: int, result: Sequence[R]) -> None:
            out[start : start + len(result)] = result

        self.run(fn, items, place, chunk_size)
        return out

    def close(self) -> None:
        """Shut down the executor if this queue built it from a factory or was handed one."""
        if self._owns_pool and self.pool.factory is not None:
            self.pool.shutdown(wait=True)

    def __enter__(self) -> TaskQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count_retry(self, exc: BaseException) -> None:
        self.retries += 1
        if self.retries > self.max_retries:
            raise RuntimeError(
                f"{self.desc}: gave up after {self.max_retries} retries (workers kept dying: {exc!r}; "
                "from a script, is its entry point under if __name__ == '__main__'?)"
            ) from exc

    def _recover(
        self,
        executor: cf.Executor,
        exc: BaseException,
        in_flight: dict[cf.Future[R], int],
        pending: deque[int],
        on_result: Callable[[int, R], None],
        chunks: list[tuple[int, Sequence[T]]],
        bar: tqdm,
    ) -> None:
        """After the executor broke: keep results that did arrive, requeue the rest, rebuild."""
        self._count_retry(exc)
        for future, chunk_id in list(in_flight.items()):
            del in_flight[future]
            if future.done() and not future.cancelled() and future.exception() is None:
                on_result(chunks[chunk_id][0], future.result())
                bar.update(len(chunks[chunk_id][1]))
            else:
                pending.append(chunk_id)
        self.pool.rebuild(executor)

    @staticmethod
    def _drain(in_flight: dict[cf.Future[R], int]) -> None:
        """Cancel what has not started and wait for what is running, so no orphan work outlives a run."""
        for future in in_flight:
            future.cancel()
        if in_flight:
            cf.wait(in_flight)


# --------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------

_WARM_POOLS: dict[tuple[str, int], Pool] = {}
_WARM_LOCK = threading.Lock()


def _init_process_worker() -> None:
    """Process-pool initializer: one OpenCV thread per worker, so the pool's processes don't oversubscribe.

    Workers ignore SIGINT: an interrupt (Ctrl-C, or Jupyter stopping a kernel) is the parent's to
    handle, and the parent shuts the pool down; otherwise every idle worker prints a traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


def process_pool_factory(workers: int) -> Callable[[], cf.Executor]:
    """A factory for spawn-context process pools that set OpenCV to one thread per worker."""
    import multiprocessing

    def factory() -> cf.Executor:
        context = multiprocessing.get_context(START_METHOD)
        return cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process_worker)

    factory.__name__ = f"process-pool[{workers}]"
    return factory


def warm_process_pool(workers: int | None = None) -> Pool:
    """The module's shared process pool for this worker count, kept warm across calls.

    Spawning workers re-imports the task's modules in each of them, a pause a notebook would otherwise
    pay on every load; so its loads share one pool, which ``shutdown_pools()`` (run at exit) ends.
    """
    workers = workers or default_workers()
    with _WARM_LOCK:
        pool = _WARM_POOLS.get(("process", workers))
        if pool is None:
            pool = Pool(process_pool_factory(workers), name=f"process-pool[{workers}]")
            _WARM_POOLS[("process", workers)] = pool
        return pool


@atexit.register
def shutdown_pools() -> None:
    """Shut down every warm pool (called at interpreter exit; safe to call any time)."""
    with _WARM_LOCK:
        pools = list(_WARM_POOLS.values())
        _WARM_POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True)


@contextlib.contextmanager
def opencv_threads(n: int | None) -> Iterator[None]:
    """Temporarily set OpenCV's thread count (process-wide), restoring it afterwards; None leaves it."""
    if n is None:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@contextlib.contextmanager
def dask_client(scheduler: str) -> Iterator[Any]:
    """A ``distributed.Client`` for an address ("tcp://host:port") or a 2-worker local cluster ("local")."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # optional extra
        raise ImportError("scheduler=... needs Dask: pip install 'sprint2[dask]'") from exc
    if scheduler == "local":
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    else:
        with Client(scheduler) as client:
            yield client
