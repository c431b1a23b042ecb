"""Tests of sprint2.loading: the fault-tolerant task queue, load_dataset/load_splits/inspect_dataset, the cache.

Task functions are module-level so spawned worker processes can import them from this module.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from sprint2 import loading
from sprint2.images import decode_image, decode_resized, reduction_factor, resize_image, transform_boxes
from sprint2.loading import (InlineExecutor, LoadedDataset, TaskQueue, inspect_dataset, load_dataset, load_splits,
                             process_pool_factory)
from sprint2.synthetic import PLANTED, generate, plant_bad_files
from sprint2.voc import DataError, discover, parse_annotation

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ task functions


def _square(chunk: list[int]) -> list[int]:
    return [v * v for v in chunk]


def _square_but_die_once(chunk: list[tuple[str, int]]) -> list[int]:
    """Kill this worker process the first time it sees a chunk starting at 4 or 12 (marker files)."""
    marker_dir, first = chunk[0]
    marker = Path(marker_dir) / f"died-on-{first}"
    if first in (4, 12) and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return [v * v for _, v in chunk]


def _always_die(chunk: list[int]) -> list[int]:
    os.kill(os.getpid(), signal.SIGKILL)
    return chunk


def _tensorflow_loaded(chunk: list[int]) -> list[bool]:
    return ["tensorflow" in sys.modules for _ in chunk]


def _fail_on_seven(chunk: list[int]) -> list[int]:
    if 7 in chunk:
        raise KeyError("seven")
    return chunk


class CountingExecutor(cf.ThreadPoolExecutor):
    """A thread pool that records the chunks it received and the most futures outstanding at once."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.lock = threading.Lock()
        self.outstanding = 0
        self.peak = 0
        self.chunks: list[list[int]] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        with self.lock:
            self.outstanding += 1
            self.peak = max(self.peak, self.outstanding)
            self.chunks.append(list(args[0]))
        future = super().submit(fn, *args, **kwargs)

        def done(_: cf.Future) -> None:
            with self.lock:
                self.outstanding -= 1

        future.add_done_callback(done)
        return future


def _slow_square(chunk: list[int]) -> list[int]:
    time.sleep(0.01 * (len(chunk) % 3))  # uneven durations so chunks complete out of order
    return [v * v for v in chunk]


# ------------------------------------------------------------------------------ task queue


def test_queue_chunks_bound_in_flight_and_keep_order() -> None:
    executor = CountingExecutor(4)
    items = list(range(23))
    with TaskQueue(executor, workers=4, max_in_flight=3) as queue:
        out = queue.map(_slow_square, items, chunk_size=5)
    executor.shutdown()
    assert out == [v * v for v in items]
    assert sorted(executor.chunks) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14],
                                       [15, 16, 17, 18, 19], [20, 21, 22]]
    assert executor.peak <= 3


@pytest.mark.parametrize("n, workers", [(0, 2), (1, 2), (7, 1), (364, 2), (5000, 8)])
def test_default_chunks_cover_every_item_once_and_shrink_towards_the_end(n: int, workers: int) -> None:
    queue = TaskQueue(InlineExecutor(), workers=workers)
    bounds = queue.default_chunks(n)
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(n))
    sizes = [stop - start for start, stop in bounds]
    assert sizes == sorted(sizes, reverse=True)  # guided: never a bigger chunk after a smaller one
    assert all(size <= TaskQueue.MAX_CHUNK for size in sizes)
    assert all(size >= TaskQueue.MIN_CHUNK for size in sizes[:-1])
    if n >= 364:  # big first chunks amortise the per-task cost; small last ones end together
        assert sizes[0] == TaskQueue.MAX_CHUNK and sizes[-1] <= TaskQueue.MIN_CHUNK
    executor = CountingExecutor(workers)
    with TaskQueue(executor, workers=workers) as q:
        assert q.map(_square, list(range(n))) == [v * v for v in range(n)]
    assert sorted(len(c) for c in executor.chunks) == sorted(sizes)


def test_queue_default_in_flight_is_twice_the_workers() -> None:
    executor = CountingExecutor(2)
    queue = TaskQueue(executor, workers=2)
    assert queue.max_in_flight == 4
    assert queue.map(_slow_square, list(range(40)), chunk_size=1) == [v * v for v in range(40)]
    assert 2 <= executor.peak <= 4
    executor.shutdown()


def test_queue_rebuilds_pool_after_worker_is_killed(tmp_path: Path) -> None:
    items = [(str(tmp_path), v) for v in range(20)]
    with TaskQueue(process_pool_factory(2), workers=2, max_retries=3) as queue:
        out = queue.map(_square_but_die_once, items, chunk_size=4)
        rebuilds = queue.pool.rebuilds
    assert out == [v * v for v in range(20)]
    assert (tmp_path / "died-on-4").exists() and (tmp_path / "died-on-12").exists()
    assert 1 <= queue.retries <= 2 and rebuilds == queue.retries


def test_queue_gives_up_after_max_retries() -> None:
    with TaskQueue(process_pool_factory(1), workers=1, max_retries=1) as queue:
        with pytest.raises(RuntimeError, match="gave up after 1 retries"):
            queue.map(_always_die, [1, 2, 3], chunk_size=3)


def test_queue_does_not_retry_errors_of_the_task_itself() -> None:
    executor = CountingExecutor(2)
    with pytest.raises(KeyError, match="seven"):
        TaskQueue(executor, workers=2).map(_fail_on_seven, list(range(10)), chunk_size=2)
    executor.shutdown()
    assert sum(7 in c for c in executor.chunks) == 1


def test_process_workers_never_import_tensorflow() -> None:
    """A parent that imported TensorFlow first (as notebooks do) must still get TF-free workers."""
    code = ("import sys, tensorflow\n"
            "assert 'tensorflow' in sys.modules\n"
            "from sprint2.loading import TaskQueue, process_pool_factory\n"
            "import test_loading\n"
            "with TaskQueue(process_pool_factory(2), workers=2) as q:\n"
            "    print('RESULT', q.map(test_loading._tensorflow_loaded, [0, 1, 2, 3], chunk_size=1))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests", env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RESULT [False, False, False, False]" in proc.stdout
    assert loading.START_METHOD in ("spawn", "forkserver")


def test_auto_uses_threads_when_the_main_script_holds_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned workers re-run a script's top level, so such a script must not get a process pool."""
    script = types.ModuleType("__main__")
    script.__file__ = "/somewhere/train.py"
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert loading.resolve_method("auto") == loading.AUTO_METHOD
    script.tf = types.ModuleType("tensorflow")  # what `import tensorflow as tf` leaves in the script
    assert loading.resolve_method("auto") == "thread"
    assert loading.resolve_method("process") == "process"  # an explicit choice is respected


# ------------------------------------------------------------------------------ datasets


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic"), train=24, test=8, classes=3, seed=3)


@pytest.fixture(scope="session")
def planted(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    dst = tmp_path_factory.mktemp("planted") / "data"
    return dst, plant_bad_files(synthetic / "train", dst)


def assert_same(a: LoadedDataset, b: LoadedDataset) -> None:
    assert a.images.shape == b.images.shape and np.array_equal(a.images, b.images)
    assert a.class_names == b.class_names and a.paths == b.paths and a.found == b.found
    assert a.failures == b.failures and a.size == b.size
    assert len(a.boxes) == len(b.boxes) == len(a.labels) == len(b.labels)
    for x, y in zip(a.boxes, b.boxes):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.labels, b.labels):
        np.testing.assert_array_equal(x, y)


def test_load_matches_a_direct_parse_decode_resize(synthetic: Path) -> None:
    ds = load_dataset(synthetic, 64, split="train", mode="letterbox", method="thread")
    assert ds.images.dtype == np.uint8 and ds.images.shape == (24, 64, 64, 3) and ds.size == (64, 64)
    assert ds.found == 24 and not ds.failures and ds.class_names == ["cat", "dog", "horse"]
    samples = discover(synthetic, "train")
    reduced = 0
    for row, sample in enumerate(samples):
        ann = parse_annotation(sample.xml_path, sample.image_path)
        box = np.array([o.box for o in ann.objects])
        img, how, (w, h) = decode_resized(sample.image_path, 64, "letterbox")
        np.testing.assert_array_equal(ds.images[row], img)
        np.testing.assert_array_equal(ds.boxes[row], transform_boxes(box, how))
        assert [ds.class_names[i] for i in ds.labels[row]] == [o.name for o in ann.objects]
        assert ds.paths[row] == sample.image_path
        # Against the plain full-resolution decode: same geometry, boxes within the reduced decode's
        # rounding ((N - 1) / size of a pixel of the original, scaled), pixels close.
        n = reduction_factor(w, h, 64, "letterbox")
        reduced += n > 1
        full, full_how = resize_image(decode_image(sample.image_path), 64, "letterbox")
        assert (w, h) == (decode_image(sample.image_path).shape[1], decode_image(sample.image_path).shape[0])
        assert np.abs(ds.images[row].astype(int) - full).mean() < 6
        bound = (n - 1) * max(full_how.scale_x, full_how.scale_y) + 1e-4
        np.testing.assert_allclose(ds.boxes[row], transform_boxes(box, full_how), atol=bound, rtol=0)
    assert reduced, "some synthetic images must be large enough for a reduced decode"


def test_rectangular_size_is_height_width(synthetic: Path) -> None:
    ds = load_dataset(synthetic, (48, 80), split="test", method="serial")
    assert ds.images.shape == (8, 48, 80, 3) and ds.size == (48, 80)
    assert all(b[:, 2].max() <= 80 and b[:, 3].max() <= 48 for b in ds.boxes)


def test_skip_keeps_every_good_file_and_counts_add_up(planted: tuple[Path, list[Path]]) -> None:
    data, bad = planted
    results = {m: load_dataset(data, 32, method=m, errors="skip") for m in ("serial", "thread", "process")}
    for ds in results.values():
        assert ds.found == len(ds.paths) + len(ds.failures) == 24 + len(PLANTED)
        assert len(ds.paths) == 24 and len(ds.images) == 24
        assert sorted(f.path for f in ds.failures) == sorted(str(p) for p in bad)
        assert all(f.error for f in ds.failures)
    assert_same(results["serial"], results["thread"])
    assert_same(results["serial"], results["process"])


def test_raise_names_the_file_and_leaves_the_pool_usable(planted: tuple[Path, list[Path]]) -> None:
    data, bad = planted
    before = threading.active_count()
    for method in ("thread", "process"):
        with pytest.raises(DataError) as info:
            load_dataset(data, 32, method=method, errors="raise", chunk_size=2)
        assert info.value.path in bad and info.value.reason
        assert str(info.value).startswith(str(info.value.path))
    assert threading.active_count() <= before + 1  # the thread pool is gone (the warm process pool's
    # manager thread may remain) ...
    assert len(load_dataset(data, 32, method="process", errors="skip")) == 24  # ... and still works


def test_given_class_names_make_unknown_classes_failures(synthetic: Path) -> None:
    full = load_dataset(synthetic, 32, split="train", method="thread")
    ds = load_dataset(synthetic, 32, split="train", class_names=["horse", "cat"], errors="skip", method="thread")
    dogs = [p for p, lab in zip(full.paths, full.labels) if full.class_names[lab[0]] == "dog"]
    assert ds.class_names == ["horse", "cat"] and ds.found == 24 and len(ds.failures) == len(dogs) > 0
    assert all("unknown class 'dog'" in f.error for f in ds.failures)
    for path, lab in zip(ds.paths, ds.labels):
        assert ds.class_names[lab[0]] == full.class_names[full.labels[full.paths.index(path)][0]]


def test_cache_hit_is_identical_and_a_changed_file_invalidates_it(synthetic: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for p in (synthetic / "train").iterdir():
        (data / p.name).write_bytes(p.read_bytes())
    cache = tmp_path / "cache"
    first = load_dataset(data, 32, method="thread", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1

    real_run = loading._run_load
    monkeypatch.setattr(loading, "_run_load", lambda *a, **k: pytest.fail("cache was not used"))
    assert_same(first, load_dataset(data, 32, method="thread", cache_dir=cache))
    monkeypatch.setattr(loading, "_run_load", real_run)

    xml = sorted(data.glob("*.xml"))[0]
    text = xml.read_text()
    old = text.split("<xmin>")[1].split("</xmin>")[0]
    xml.write_text(text.replace(f"<xmin>{old}</xmin>", f"<xmin>{float(old) + 2}</xmin>", 1))
    changed = load_dataset(data, 32, method="thread", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    assert changed.boxes[0][0, 0] > first.boxes[0][0, 0]
    assert load_dataset(data, 32, method="thread", cache_dir=cache, mode="letterbox").size == (32, 32)
    assert len(list(cache.glob("*.npz"))) == 3  # the mode is part of the key


def test_cache_remembers_failures_and_raise_still_raises(planted: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data, bad = planted
    skipped = load_dataset(data, 16, errors="skip", cache_dir=tmp_path)
    again = load_dataset(data, 16, errors="skip", cache_dir=tmp_path)
    assert again.failures == skipped.failures and again.found == skipped.found
    with pytest.raises(DataError):
        load_dataset(data, 16, errors="raise", cache_dir=tmp_path)


def test_load_splits_in_three_layouts(synthetic: Path, tmp_path: Path) -> None:
    train, test = load_splits(synthetic, 32, method="thread")
    assert (len(train), len(test)) == (24, 8) and test.class_names == train.class_names

    voc = generate(tmp_path / "voc", train=12, test=4, classes=3, seed=1, layout="voc")
    train, test = load_splits(voc, 32, method="thread")
    assert (len(train), len(test)) == (12, 4) and test.class_names == train.class_names
    assert all(p.name.startswith("train_") for p in train.paths)
    assert all(p.name.startswith("test_") for p in test.paths)

    flat = synthetic / "train"
    a_train, a_test = load_splits(flat, 32, test_fraction=0.25, seed=7, method="serial")
    b_train, b_test = load_splits(flat, 32, test_fraction=0.25, seed=7, method="thread")
    c_train, c_test = load_splits(flat, 32, test_fraction=0.25, seed=8, method="thread")
    assert (len(a_train), len(a_test)) == (18, 6)
    assert a_test.paths == b_test.paths and a_test.paths != c_test.paths
    assert not set(a_train.paths) & set(a_test.paths)
    assert a_test.class_names == a_train.class_names


def test_inspect_reports_counts_and_every_failure(planted: tuple[Path, list[Path]]) -> None:
    data, bad = planted
    summary = inspect_dataset(data, method="thread")
    assert set(summary) == {"images", "objects", "classes", "failed"}
    assert summary["images"] == 24 and summary["objects"] == sum(summary["classes"].values()) >= 24
    assert set(summary["classes"]) == {"cat", "dog", "horse"}
    assert sorted(f["path"] for f in summary["failed"]) == sorted(str(p) for p in bad)
    assert all(set(f) == {"path", "error"} and isinstance(f["error"], str) for f in summary["failed"])
    with pytest.raises(DataError):
        inspect_dataset(data, errors="raise", method="thread")


def test_dask_local_cluster_matches_process_pool(planted: tuple[Path, list[Path]]) -> None:
    pytest.importorskip("distributed")
    data, _ = planted
    by_process = load_dataset(data, 32, method="process", errors="skip")
    by_dask = load_dataset(data, 32, scheduler="local", errors="skip")
    assert_same(by_process, by_dask)
    assert len(by_dask.failures) == len(PLANTED)


class _RemoteLike(cf.Executor):
    """An executor of unknown kind, standing in for Dask's (whose workers may be on other machines)."""


def _scratch_files() -> set[Path]:
    import tempfile

    folders = {Path("/dev/shm"), Path(tempfile.gettempdir())}
    return {p for d in folders if d.is_dir() for p in d.glob("sprint2-pixels-*")}


def test_memory_scratch_is_mapped_not_copied_and_disk_scratch_is_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    for folder in ("shm", "disk"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "pixels.u8").write_bytes(pixels.tobytes())
    monkeypatch.setattr(loading, "_SHM", tmp_path / "shm")

    target = np.zeros_like(pixels)
    mapped = loading._pixels_from(tmp_path / "shm" / "pixels.u8", target)
    copied = loading._pixels_from(tmp_path / "disk" / "pixels.u8", target)
    assert copied is target and np.array_equal(copied, pixels)
    assert mapped is not target and np.array_equal(mapped, pixels) and mapped.flags.writeable
    for folder in ("shm", "disk"):  # rewrite both files: only the mapping sees it
        with open(tmp_path / folder / "pixels.u8", "r+b") as fh:
            fh.write(b"\xff" * 8)
    assert (mapped.reshape(-1)[:8] == 255).all() and (copied.reshape(-1)[:8] == pixels.reshape(-1)[:8]).all()
    (tmp_path / "shm" / "pixels.u8").unlink()  # as the loader does: the mapping outlives the file
    assert int(mapped.reshape(-1)[-1]) == pixels.size - 1


def test_pixels_take_the_cheapest_route_and_scratch_files_are_removed(
        planted: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = planted
    assert loading._pixel_route("serial", None) == loading._pixel_route("thread", None) == "memory"
    assert loading._pixel_route("process", None) == "file"
    assert loading._pixel_route("thread", "local") == loading._pixel_route("dask", None) == "result"
    with cf.ThreadPoolExecutor(2) as threads:
        assert loading._pixel_route(threads, None) == "memory"
    assert loading._pixel_route(_RemoteLike(), None) == "result"  # e.g. Dask's executor: pixels come back

    opened: list[int] = []
    real = loading._scratch_file

    def spy(nbytes: int):
        opened.append(nbytes)
        return real(nbytes)

    monkeypatch.setattr(loading, "_scratch_file", spy)
    before = _scratch_files()
    by_file = load_dataset(data, 32, method="process", errors="skip")
    assert opened == [(24 + len(PLANTED)) * 32 * 32 * 3]  # one file, a row for every sample found
    with cf.ThreadPoolExecutor(2) as threads:  # an executor the loader did not build: same pixels
        assert_same(by_file, load_dataset(data, 32, method=threads, errors="skip"))
    assert len(opened) == 1
    with pytest.raises(DataError):
        load_dataset(data, 32, method="process", errors="raise", chunk_size=2)
    assert len(opened) == 2 and _scratch_files() == before  # removed after success and after an error

    def full(nbytes: int):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loading, "_scratch_file", full)  # no room anywhere: pixels take the pipes
    assert_same(by_file, load_dataset(data, 32, method="process", errors="skip"))
