"""Loading VOC datasets in parallel into one preallocated uint8 array, with a report of what was left out.

``load_dataset``, ``load_splits`` and ``inspect_dataset`` find (image, XML) pairs (sprint2.voc), run
the per-chunk worker of this module on a ``TaskQueue`` (sprint2.taskqueue) and keep the result in the
on-disk cache (sprint2.cache). How to load is one ``LoadOptions``. A file that cannot be loaded is a
``Failure``; an invalid box in an image that otherwise loads is a ``DroppedBox``, and the image keeps
its other boxes. TensorFlow is never imported here, and process workers are spawned, never forked.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import errno
import functools
import logging
import mmap
import os
import random
import sys
import tempfile
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sprint2.cache import cache_file, cache_key, load_cached, save_cached
from sprint2.dataset import DroppedBox, Failure, LoadedDataset
from sprint2.images import decode_image, decode_resized, target_size, transform_boxes
from sprint2.taskqueue import (
    InlineExecutor,
    TaskQueue,
    dask_client,
    default_workers,
    opencv_threads,
    shutdown_pools,
    warm_process_pool,
)
from sprint2.voc import DataError, Sample, discover, parse_annotation, screen_boxes

__all__ = [
    "AUTO_METHOD",
    "DroppedBox",
    "Failure",
    "LoadOptions",
    "LoadedDataset",
    "Method",
    "SplitSamples",
    "inspect_dataset",
    "load_dataset",
    "load_splits",
    "resolve_method",
    "shutdown_pools",
    "split_samples",
]

logger = logging.getLogger(__name__)

Method = Literal["auto", "serial", "thread", "process", "dask"]
METHODS: tuple[str, ...] = ("auto", "serial", "thread", "process", "dask")

#: What method="auto" means: a thread pool of one thread per core, OpenCV at one thread each.
#: Decoding (simplejpeg, OpenCV) and resizing release the GIL, so threads keep the cores nearly as
#: busy as processes; what the GIL does serialise is the XML parse and the per-object Python, so
#: datasets with many objects per image favour processes more. Threads win where the two are close:
#: they start at once (a spawn pool re-imports the loader in every worker) and never re-import a
#: script's TensorFlow. `sprint2 bench loading DATA_DIR` shows the balance on a given machine.
AUTO_METHOD = "thread"


@dataclass(frozen=True)
class LoadOptions:
    """How to load a dataset (what to load, the folder, split and class names, is given apart).

    ``size``: an int (square) or (height, width). ``mode``: "stretch" or "letterbox". ``method``:
    "auto" (AUTO_METHOD), "serial", "thread", "process" (a warm spawn pool reused across calls),
    "dask", or any Executor; ``scheduler`` ("tcp://host:port" or "local") runs on Dask. ``workers``,
    ``chunk_size`` and ``max_in_flight`` tune the TaskQueue (None: its defaults). ``errors``: "raise"
    raises the first bad file's DataError, "skip" records it in ``failures``; a dropped box is never
    an error. ``cache_dir`` keeps the decoded arrays on disk so a re-run loads instantly.
    ``progress`` shows a progress bar.
    """

    size: int | tuple[int, int] = 128
    mode: Literal["stretch", "letterbox"] = "stretch"
    method: Method | cf.Executor = "auto"
    workers: int | None = None
    chunk_size: int | None = None
    max_in_flight: int | None = None
    errors: Literal["raise", "skip"] = "raise"
    cache_dir: Path | str | None = None
    progress: bool = False
    scheduler: str | None = None

    def __post_init__(self) -> None:
        target_size(self.size)  # a ValueError naming the bad size
        if self.mode not in ("stretch", "letterbox"):
            raise ValueError(f"mode must be 'stretch' or 'letterbox', got {self.mode!r}")
        if self.errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {self.errors!r}")
        if not isinstance(self.method, cf.Executor) and self.method not in METHODS:
            raise ValueError(
                f"method must be one of {', '.join(METHODS)} or an Executor, got {self.method!r}"
            )
        for name in ("workers", "chunk_size", "max_in_flight"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")


_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(LoadOptions))


def _merge(
    options: LoadOptions | None, size: int | tuple[int, int] | None, fields: dict[str, Any], caller: str
) -> LoadOptions:
    """``options`` (default LoadOptions()) with ``size`` and ``fields`` overriding; unknown: TypeError."""
    unknown = sorted(set(fields) - _OPTION_NAMES)
    if unknown:
        raise TypeError(
            f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"LoadOptions fields are {', '.join(sorted(_OPTION_NAMES))}"
        )
    if size is not None:
        fields = {**fields, "size": size}
    base = options if options is not None else LoadOptions()
    return dataclasses.replace(base, **fields) if fields else base


def _is_tensorflow(obj: object) -> bool:
    """True for TensorFlow/Keras modules and for objects defined in them."""
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(name, str) and name.split(".")[0] in ("tensorflow", "keras", "tf_keras")


def resolve_method(method: str) -> str:
    """The concrete method for "auto": AUTO_METHOD, except threads when spawn would drag TensorFlow in.

    Spawned workers re-run the parent's ``__main__`` script (not a notebook, ``-c`` or ``-m``); when
    that script itself holds TensorFlow, each worker would import it, so threads are used instead.
    """
    if method != "auto":
        return method
    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) and any(_is_tensorflow(v) for v in vars(main).values()):
        logger.info(
            "method='auto' uses threads: the main script imports TensorFlow and spawned "
            "workers would re-import it"
        )
        return "thread"
    return AUTO_METHOD


# --------------------------------------------------------------------------------------------------
# The per-chunk worker (runs in threads, spawned processes or Dask workers)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """What a worker needs besides the samples: target size (None: check only), mode, known classes,
    and where the pixels go (see _PixelSink)."""

    size: tuple[int, int] | None
    mode: str
    class_names: tuple[str, ...] | None
    out: np.ndarray | str | None = None


@dataclass
class _ChunkResult:
    """A chunk's output in compact arrays, cheap to pickle back to the parent."""

    rows: np.ndarray  # (k,) int64: dataset indices of the samples that loaded
    images: np.ndarray  # (k, H, W, 3) uint8 when returned to the parent, else (0,)
    counts: np.ndarray  # (k,) int32 kept boxes per loaded sample
    boxes: np.ndarray  # (counts.sum(), 4) float32, resized coordinates
    difficult: np.ndarray  # (counts.sum(),) bool
    truncated: np.ndarray  # (counts.sum(),) bool
    names: list[str]  # class name per box
    seen: list[str]  # class names of every annotation that parsed (its image may have failed)
    failures: list[tuple[int, str, str]]  # (dataset index, path, reason)
    dropped: list[tuple[int, str, int, str]]  # (dataset index, XML path, object index, reason)


class _PixelSink:
    """Where a worker puts each decoded image, so pixels cross no pipe when they need not.

    spec.out is the parent's array itself (threads and the plain loop write their rows in place), the
    path of a scratch file in shared memory (process-pool workers write their rows at their offsets;
    the parent then maps the file as its array), or None (Dask or any other executor: pixels go back
    in the result).
    """

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.kept: list[np.ndarray] = []
        self.file: Any = None
        if isinstance(spec.out, str):
            self.file = open(spec.out, "r+b")  # noqa: SIM115 (closed in close())

    def put(self, row: int, img: np.ndarray) -> None:
        out = self.spec.out
        if isinstance(out, np.ndarray):
            out[row] = img
        elif self.file is not None:
            self.file.seek(row * img.nbytes)
            self.file.write(img.data)
        else:
            self.kept.append(img)

    def close(self) -> np.ndarray:
        """The images to return with the result ((0,) unless they had nowhere else to go)."""
        if self.file is not None:
            self.file.close()
        return np.stack(self.kept) if self.kept else np.zeros((0,), np.uint8)


def _load_chunk(items: Sequence[tuple[int, Sample]], spec: _Spec) -> _ChunkResult:
    """Parse, decode, check and resize each (dataset index, sample); a bad file is a failure, not a raise.

    Invalid boxes (degenerate, outside the image) are dropped one by one; an image left without a
    box by that fails whole, with every dropped box's reason.
    """
    rows: list[int] = []
    counts: list[int] = []
    boxes: list[np.ndarray] = []
    names: list[str] = []
    difficult: list[bool] = []
    truncated: list[bool] = []
    seen: set[str] = set()
    failures: list[tuple[int, str, str]] = []
    dropped: list[tuple[int, str, int, str]] = []
    sink = _PixelSink(spec) if spec.size is not None else None
    try:
        for row, sample in items:
            try:
                ann = parse_annotation(
                    sample.xml_path, sample.image_path, class_names=spec.class_names, check=False
                )
                seen.update(obj.name for obj in ann.objects)
                if sink is None:  # checking only: the full decode gives the size
                    img = decode_image(sample.image_path)
                    width, height = img.shape[1], img.shape[0]
                else:  # reduced JPEG decode when it still covers the target; the real size comes with it
                    img, how, (width, height) = decode_resized(sample.image_path, spec.size, spec.mode)
                ann, bad = screen_boxes(ann, width=width, height=height)
                if bad and not ann.objects:
                    raise DataError(ann.xml_path, "; ".join(f"object {i}: {reason}" for i, reason in bad))
                box = np.array([obj.box for obj in ann.objects], dtype=np.float32).reshape(-1, 4)
                if sink is not None:
                    box = transform_boxes(box, how)
                    sink.put(row, img)
            except DataError as exc:
                failures.append((row, str(exc.path), exc.reason))
                continue
            except OSError as exc:  # e.g. the file vanished between discover() and now
                failures.append((row, str(sample.image_path), f"cannot read ({exc})"))
                continue
            rows.append(row)
            counts.append(len(box))
            boxes.append(box)
            for obj in ann.objects:
                names.append(obj.name)
                difficult.append(obj.difficult)
                truncated.append(obj.truncated)
            dropped.extend((row, str(ann.xml_path), i, reason) for i, reason in bad)
    finally:
        images = sink.close() if sink is not None else np.zeros((0,), np.uint8)
    return _ChunkResult(
        rows=np.array(rows, dtype=np.int64),
        images=images,
        counts=np.array(counts, dtype=np.int32),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        difficult=np.array(difficult, dtype=bool),
        truncated=np.array(truncated, dtype=bool),
        names=names,
        seen=sorted(seen),
        failures=failures,
        dropped=dropped,
    )


# --------------------------------------------------------------------------------------------------
# Where the pixels go
# --------------------------------------------------------------------------------------------------

#: tmpfs: a file there is memory, not disk. Process workers write pixels into a file here when it
#: has room; otherwise their pixels come back through the pool's pipes, inside the chunk results.
SHM_DIR = Path("/dev/shm")


def _pixel_route(method: str | cf.Executor, scheduler: str | None) -> Literal["memory", "file", "result"]:
    """How workers hand pixels back: straight into the parent's array (same process), through a
    scratch file (a process pool on this machine), or inside the pickled result (Dask, other executors).
    A method name must already be resolved (resolve_method): "auto" is not one of the routes' keys."""
    if scheduler is not None:
        return "result"
    if isinstance(method, (InlineExecutor, cf.ThreadPoolExecutor)):
        return "memory"
    if isinstance(method, cf.ProcessPoolExecutor):
        return "file"
    if isinstance(method, cf.Executor):
        return "result"
    return {"serial": "memory", "thread": "memory", "process": "file"}.get(method, "result")


@contextlib.contextmanager
def _shm_scratch(nbytes: int) -> Iterator[Path]:
    """A file of nbytes in SHM_DIR for process workers to write pixels into, removed afterwards.

    Only taken when SHM_DIR keeps memory to spare, and reserved up front (posix_fallocate), so a
    full tmpfs fails here with an OSError, not later as a failed write in a worker or a SIGBUS when
    the parent maps the file.
    """
    st = os.statvfs(SHM_DIR)  # OSError when there is no such folder
    if st.f_bavail * st.f_frsize < 2 * nbytes + (64 << 20):
        raise OSError(errno.ENOSPC, f"too little free memory in {SHM_DIR}")
    fd, name = tempfile.mkstemp(prefix="sprint2-pixels-", suffix=".u8", dir=SHM_DIR)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)
        else:
            os.ftruncate(fd, nbytes)
        os.close(fd)
        fd = -1
        yield Path(name)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)


def _map_scratch(scratch: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The workers' pixels: the scratch file mapped as the array, so the parent copies none of them.

    A tmpfs page is ordinary memory; the shared mapping stays valid after the file is unlinked,
    until the array is freed, and every page was reserved when the file was made (_shm_scratch).
    """
    with open(scratch, "r+b") as fh:
        pixels = mmap.mmap(fh.fileno(), int(np.prod(shape)))
    return np.frombuffer(pixels, dtype=np.uint8).reshape(shape)


@contextlib.contextmanager
def _queue_for(method: str | cf.Executor, opts: LoadOptions, desc: str) -> Iterator[TaskQueue]:
    """A TaskQueue on the (resolved) method's executor, with OpenCV threading set for it; cleaned up after."""
    common = {"max_in_flight": opts.max_in_flight, "progress": opts.progress, "desc": desc}
    if opts.scheduler is not None or method == "dask":
        with dask_client(opts.scheduler or "local") as client:
            n = opts.workers or max(1, len(client.scheduler_info().get("workers", {}))) or default_workers()
            # pure=False: a resubmitted chunk must really run again, not hit Dask's result cache.
            with TaskQueue(lambda: client.get_executor(pure=False), workers=n, **common) as queue:
                yield queue
        return
    if isinstance(method, cf.Executor):
        with TaskQueue(method, workers=opts.workers, **common) as queue:
            yield queue
        return
    n = opts.workers or default_workers()
    if method == "serial":
        # The plain loop: OpenCV keeps its default threading, as in a loop anyone would write.
        with TaskQueue(
            InlineExecutor(), workers=1, max_in_flight=1, progress=opts.progress, desc=desc
        ) as queue:
            yield queue
    elif method == "thread":
        # One OpenCV thread per call: the pool already keeps every core busy.
        factory = lambda: cf.ThreadPoolExecutor(n, thread_name_prefix="sprint2-load")  # noqa: E731
        with opencv_threads(1), TaskQueue(factory, workers=n, **common) as queue:
            yield queue
    elif method == "process":
        yield TaskQueue(warm_process_pool(n), workers=n, **common)  # the warm pool outlives the call
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)} or an Executor, got {method!r}")


# --------------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------------


class _Collector:
    """Gathers the chunks' results into rows that follow the samples, then compacts them into a dataset."""

    def __init__(self, n: int, size: tuple[int, int] | None, errors: str) -> None:
        h, w = size if size is not None else (0, 0)
        self.size, self.errors = (h, w), errors
        self.images = np.empty((n, h, w, 3), dtype=np.uint8)  # rows follow samples; compacted at the end
        self.ok = np.zeros(n, dtype=bool)
        self.per_row: list[tuple[np.ndarray, list[str], np.ndarray, np.ndarray] | None] = [None] * n
        self.seen: set[str] = set()
        self.failed: dict[int, Failure] = {}
        self.dropped: list[tuple[int, str, int, str]] = []

    def place(self, start: int, result: _ChunkResult) -> None:
        """Stores one chunk's rows (the queue's result callback); the first failure raises under "raise"."""
        if self.errors == "raise" and result.failures:
            _, path, reason = result.failures[0]
            raise DataError(path, reason)
        rows = result.rows
        if len(result.images):
            self.images[rows] = result.images
        self.ok[rows] = True
        offsets = np.concatenate([[0], np.cumsum(result.counts)]).astype(np.int64)
        for j, row in enumerate(rows):
            a, b = offsets[j], offsets[j + 1]
            self.per_row[row] = (
                result.boxes[a:b],
                result.names[a:b],
                result.difficult[a:b],
                result.truncated[a:b],
            )
        self.seen.update(result.seen)
        for index, path, reason in result.failures:
            self.failed[index] = Failure(path, reason)
        self.dropped.extend(result.dropped)

    def dataset(self, samples: Sequence[Sample], class_names: Sequence[str] | None) -> LoadedDataset:
        """The loaded rows in sample order (failed ones left out), labels numbered by class_names."""
        names_out = list(class_names) if class_names is not None else sorted(self.seen)
        index = {name: i for i, name in enumerate(names_out)}
        rows = np.flatnonzero(self.ok)
        images = self.images
        for dst, src in enumerate(rows):  # dst <= src: copying forward never overwrites a row still needed
            if dst != src:
                images[dst] = images[src]
        kept = [self.per_row[r] for r in rows]
        dropped = sorted(self.dropped, key=lambda d: (d[0], d[2]))
        out = LoadedDataset(
            images=images[: len(rows)],
            boxes=[k[0] for k in kept],
            labels=[np.array([index[nm] for nm in k[1]], dtype=np.int32) for k in kept],
            difficult=[k[2] for k in kept],
            truncated=[k[3] for k in kept],
            class_names=names_out,
            paths=[samples[r].image_path for r in rows],
            failures=[self.failed[i] for i in sorted(self.failed)],
            dropped=[DroppedBox(path, i, reason) for _, path, i, reason in dropped],
            found=len(samples),
            size=self.size,
        )
        assert out.found == len(out.paths) + len(out.failures), "every sample must be loaded or failed"
        return out


def _log_problems(out: LoadedDataset, root: Path) -> None:
    """One warning for the dropped boxes and one for the failed samples, each naming the first."""
    if out.dropped:
        first = out.dropped[0]
        logger.warning(
            "%s: dropped %d invalid box(es) from %d image(s), which keep their valid boxes "
            "(first: %s object %d: %s; LoadedDataset.dropped lists them all)",
            root,
            len(out.dropped),
            len({d.path for d in out.dropped}),
            first.path,
            first.index,
            first.reason,
        )
    if out.failures:
        logger.warning("%s: %d of %d samples failed to load", root, len(out.failures), out.found)


def _run_load(
    samples: Sequence[Sample],
    root: Path,
    size: tuple[int, int] | None,
    class_names: Sequence[str] | None,
    opts: LoadOptions,
) -> LoadedDataset:
    """Load samples into a preallocated array (or only check them when size is None)."""
    method = resolve_method(opts.method) if isinstance(opts.method, str) else opts.method
    n = len(samples)
    collector = _Collector(n, size, opts.errors)
    images = collector.images
    route = _pixel_route(method, opts.scheduler) if size is not None and n else "result"
    desc = f"loading {root.name}" if size is not None else f"checking {root.name}"
    with contextlib.ExitStack() as stack:
        scratch = None
        if route == "file":
            try:
                scratch = stack.enter_context(_shm_scratch(images.nbytes))
            except OSError as exc:
                logger.info(
                    "no %.0f MB scratch file in %s (%s); process workers return pixels through "
                    "the pool's pipes",
                    images.nbytes / 2**20,
                    SHM_DIR,
                    exc,
                )
        out = images if route == "memory" else (str(scratch) if scratch is not None else None)
        spec = _Spec(
            size=size,
            mode=opts.mode,
            out=out,
            class_names=tuple(class_names) if class_names is not None else None,
        )
        with _queue_for(method, opts, desc) as queue:
            queue.run(
                functools.partial(_load_chunk, spec=spec),
                list(enumerate(samples)),
                collector.place,
                opts.chunk_size,
            )
        if scratch is not None:
            collector.images = _map_scratch(scratch, images.shape)
    dataset = collector.dataset(samples, class_names)
    _log_problems(dataset, root)
    return dataset


def _load(
    samples: Sequence[Sample],
    root: Path,
    split: str | None,
    class_names: Sequence[str] | None,
    opts: LoadOptions,
) -> LoadedDataset:
    """Load through the cache when opts has a cache_dir."""
    target = target_size(opts.size)
    path = None
    if opts.cache_dir is not None:
        path = cache_file(
            opts.cache_dir, root, cache_key(samples, root, target, opts.mode, class_names, split)
        )
        cached = load_cached(path, root)
        if cached is not None:
            if opts.errors == "raise" and cached.failures:
                raise DataError(cached.failures[0].path, cached.failures[0].error)
            return cached
    ds = _run_load(samples, root, target, class_names, opts)
    if path is not None:
        save_cached(path, ds, root)
    return ds


def load_dataset(
    data_dir: Path | str,
    size: int | tuple[int, int] | None = None,
    *,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    options: LoadOptions | None = None,
    **fields: Any,
) -> LoadedDataset:
    """Load a VOC dataset into one preallocated (N, H, W, 3) uint8 RGB array with all boxes and labels.

    How to load is ``options`` (default LoadOptions(), 128 px), with ``size`` and any LoadOptions
    field given as a keyword (``method="process"``, ``errors="skip"``...) overriding it. ``split``
    picks a train/ or test/ folder or an ImageSets/Main list. Without ``class_names`` the class map is
    the sorted names over every annotation that parsed; with it, an unknown class fails that file.
    """
    opts = _merge(options, size, fields, "load_dataset")
    root = Path(data_dir)
    return _load(discover(root, split), root, split, class_names, opts)


def _has_split_folders(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


@dataclass(frozen=True)
class SplitSamples:
    """A dataset's training and test (image, XML) pairs, and the split names the cache keys record."""

    train: list[Sample]
    test: list[Sample]
    train_name: str
    test_name: str


def split_samples(data_dir: Path | str, *, test_fraction: float = 0.2, seed: int = 0) -> SplitSamples:
    """The one train / test rule, without loading anything: train/ and test/ folders; else VOC
    ImageSets/Main trainval (or train) against test; else a held-out ``test_fraction`` shuffled with
    ``seed``."""
    root = Path(data_dir)
    main = root / "ImageSets" / "Main"
    if _has_split_folders(root) or (main / "test.txt").is_file():
        train_split = (
            "train" if _has_split_folders(root) or not (main / "trainval.txt").is_file() else "trainval"
        )
        return SplitSamples(discover(root, train_split), discover(root, "test"), train_split, "test")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    samples = discover(root)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    n_test = min(len(samples) - 1, max(1, round(len(samples) * test_fraction)))
    label = f"held-out:{seed}:{test_fraction}"
    return SplitSamples(
        [samples[i] for i in sorted(order[n_test:])],
        [samples[i] for i in sorted(order[:n_test])],
        label + ":train",
        label + ":test",
    )


def load_splits(
    data_dir: Path | str,
    size: int | tuple[int, int] | None = None,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    options: LoadOptions | None = None,
    **fields: Any,
) -> tuple[LoadedDataset, LoadedDataset]:
    """(train, test) by `split_samples`' rule; test uses train's class_names.
    ``options``, ``size`` and ``fields`` are as in load_dataset and apply to both.
    """
    opts = _merge(options, size, fields, "load_splits")
    root = Path(data_dir)
    splits = split_samples(root, test_fraction=test_fraction, seed=seed)
    train = _load(splits.train, root, splits.train_name, None, opts)
    return train, _load(splits.test, root, splits.test_name, train.class_names, opts)


def inspect_dataset(
    data_dir: Path | str,
    errors: Literal["raise", "skip"] = "skip",
    method: Method | cf.Executor = "auto",
    scheduler: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Parse and decode every sample (no resize) and summarise: images loaded, objects kept, per-class
    counts, every failed file and every dropped box. A root with train/ and test/ folders is
    inspected as both."""
    root = Path(data_dir)
    if _has_split_folders(root) and not (root / "Annotations").is_dir():
        samples = discover(root, "train") + discover(root, "test")
    else:
        samples = discover(root)
    opts = LoadOptions(errors=errors, method=method, scheduler=scheduler, workers=workers)
    ds = _run_load(samples, root, None, None, opts)
    counts = np.bincount(
        np.concatenate(ds.labels) if ds.labels else np.zeros(0, np.int64), minlength=len(ds.class_names)
    )
    return {
        "images": len(ds.paths),
        "objects": int(counts.sum()),
        "classes": {name: int(c) for name, c in zip(ds.class_names, counts) if c},
        "failed": [{"path": f.path, "error": f.error} for f in ds.failures],
        "dropped_boxes": [dataclasses.asdict(d) for d in ds.dropped],
    }
