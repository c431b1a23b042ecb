"""Tests of the loading stack: the task queue (sprint2.taskqueue), the loaders and their options
(sprint2.loading), the on-disk cache (sprint2.cache), dropped boxes and the per-box flags.

Task functions are module-level so spawned worker processes can import them from this module.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import mmap
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
from lxml import etree

from sprint2 import loading, taskqueue
from sprint2.images import decode_image, decode_resized, reduction_factor, resize_image, transform_boxes
from sprint2.loading import LoadedDataset, LoadOptions, inspect_dataset, load_dataset, load_splits
from sprint2.synthetic import PLANTED, generate, plant_bad_files
from sprint2.taskqueue import InlineExecutor, TaskQueue, process_pool_factory
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
    assert sorted(executor.chunks) == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
        [20, 21, 22],
    ]
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
    code = (
        "import sys, tensorflow\n"
        "assert 'tensorflow' in sys.modules\n"
        "from sprint2.taskqueue import TaskQueue, process_pool_factory\n"
        "import test_loading\n"
        "with TaskQueue(process_pool_factory(2), workers=2) as q:\n"
        "    print('RESULT', q.map(test_loading._tensorflow_loaded, [0, 1, 2, 3], chunk_size=1))\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), TF_CPP_MIN_LOG_LEVEL="3"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT / "tests", env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RESULT [False, False, False, False]" in proc.stdout
    assert taskqueue.START_METHOD in ("spawn", "forkserver")


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
    # One object per image: the tests below count and edit each image's boxes.
    return generate(tmp_path_factory.mktemp("synthetic"), train=24, test=8, classes=3, seed=3, objects=1)


@pytest.fixture(scope="session")
def planted(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    dst = tmp_path_factory.mktemp("planted") / "data"
    return dst, plant_bad_files(synthetic / "train", dst)


def assert_same(a: LoadedDataset, b: LoadedDataset) -> None:
    assert a.same_as(b), f"the loads differ in {a.differences(b)}"


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
    ds = load_dataset(
        synthetic, 32, split="train", class_names=["horse", "cat"], errors="skip", method="thread"
    )
    dogs = [p for p, lab in zip(full.paths, full.labels) if full.class_names[lab[0]] == "dog"]
    assert ds.class_names == ["horse", "cat"] and ds.found == 24 and len(ds.failures) == len(dogs) > 0
    assert all("unknown class 'dog'" in f.error for f in ds.failures)
    for path, lab in zip(ds.paths, ds.labels):
        assert ds.class_names[lab[0]] == full.class_names[full.labels[full.paths.index(path)][0]]


def test_cache_hit_is_identical_and_a_changed_file_invalidates_it(synthetic: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for p in (synthetic / "train").iterdir():
        (data / p.name).write_bytes(p.read_bytes())
    cache = tmp_path / "cache"
    first = load_dataset(data, 32, method="thread", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1

    spy = CountingExecutor(1)  # a cache hit submits no work at all
    assert_same(first, load_dataset(data, 32, method=spy, cache_dir=cache))
    spy.shutdown()
    assert spy.chunks == []

    xml = sorted(data.glob("*.xml"))[0]
    text = xml.read_text()
    old = text.split("<xmin>")[1].split("</xmin>")[0]
    xml.write_text(text.replace(f"<xmin>{old}</xmin>", f"<xmin>{float(old) + 2}</xmin>", 1))
    changed = load_dataset(data, 32, method="thread", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    assert changed.boxes[0][0, 0] > first.boxes[0][0, 0]
    assert load_dataset(data, 32, method="thread", cache_dir=cache, mode="letterbox").size == (32, 32)
    assert len(list(cache.glob("*.npz"))) == 3  # the mode is part of the key


def test_cache_remembers_failures_and_raise_still_raises(
    planted: tuple[Path, list[Path]], tmp_path: Path
) -> None:
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


def test_a_run_trains_on_the_samples_its_schedule_reads(synthetic: Path, tmp_path: Path) -> None:
    from sprint2.loading import split_samples
    from sprint2.splits import load_run_splits, train_samples

    voc = generate(tmp_path / "voc", train=12, test=4, classes=3, seed=1, layout="voc")
    main = voc / "ImageSets" / "Main"
    ids = main.joinpath("train.txt").read_text().split()
    main.joinpath("trainval.txt").write_text("\n".join(ids) + "\n")
    main.joinpath("train.txt").write_text("\n".join(ids[:9]) + "\n")
    main.joinpath("val.txt").write_text("\n".join(ids[9:]) + "\n")
    options = LoadOptions(size=32, method="thread")
    for root, val_fraction, default in [
        (voc, None, 0.15),  # the dataset's own train / val / test lists
        (voc, 0.25, 0.15),  # a share of trainval asked for
        (voc, None, 0.0),  # a recipe without validation trains on trainval
        (synthetic, None, 0.1),  # train/ and test/ folders
        (synthetic / "train", None, 0.1),  # one folder: a seeded held-out test split
    ]:
        train, val, test, _ = load_run_splits(root, 3, options, val_fraction, default)
        trained = {s.image_path for s in train_samples(root, 3, val_fraction, default)}
        loaded = set(train.paths) | (set(val.paths) if val is not None else set())
        held_out = set(val.paths) if val is not None and root == voc and val_fraction is None else set()
        assert set(train.paths) <= trained and loaded - held_out == trained, (root, val_fraction, default)
        assert set(test.paths) == {s.image_path for s in split_samples(root, seed=3).test}
    assert len(train_samples(voc, 0, None, 0.15)) == 9 and len(train_samples(voc, 0)) == 12


def test_inspect_reports_counts_and_every_failure(planted: tuple[Path, list[Path]]) -> None:
    data, bad = planted
    summary = inspect_dataset(data, method="thread")
    assert set(summary) == {"images", "objects", "classes", "failed", "dropped_boxes"}
    assert summary["dropped_boxes"] == []  # each planted box problem is the image's only box
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


class _Opaque(cf.Executor):
    """An executor of a kind the loader does not know (as Dask's), running tasks in a process pool."""

    def __init__(self, inner: cf.Executor) -> None:
        self.inner = inner

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        return self.inner.submit(fn, *args, **kwargs)


def _scratch_files() -> set[Path]:
    return set(loading.SHM_DIR.glob("sprint2-pixels-*")) if loading.SHM_DIR.is_dir() else set()


def _mapping(images: np.ndarray) -> mmap.mmap | None:
    """The memory map an array's pixels live in, or None for ordinary memory."""
    base = images
    while isinstance(base, np.ndarray):
        base = base.base
    return base.obj if isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap) else None


def test_process_pixels_come_through_shared_memory_and_every_route_gives_the_same_data(
    planted: tuple[Path, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = planted
    if not loading.SHM_DIR.is_dir():
        pytest.skip(f"no {loading.SHM_DIR} on this machine")
    before = _scratch_files()
    by_file = load_dataset(data, 32, method="process", errors="skip")
    mapping = _mapping(by_file.images)
    assert mapping is not None and len(mapping) == (24 + len(PLANTED)) * 32 * 32 * 3  # a row per sample found
    assert by_file.images.flags.writeable and _scratch_files() == before  # the file is gone, the map stays
    with pytest.raises(DataError):
        load_dataset(data, 32, method="process", errors="raise", chunk_size=2)
    assert _scratch_files() == before  # removed after an error too

    for method in ("serial", "thread"):  # same process: workers write into the parent's array
        in_place = load_dataset(data, 32, method=method, errors="skip")
        assert _mapping(in_place.images) is None
        assert_same(by_file, in_place)
    with cf.ThreadPoolExecutor(2) as threads:  # an executor the loader did not build: same pixels
        assert_same(by_file, load_dataset(data, 32, method=threads, errors="skip"))
    pool = process_pool_factory(2)()
    try:  # an unknown executor may run anywhere: the pixels must come back inside the results
        by_result = load_dataset(data, 32, method=_Opaque(pool), errors="skip")
    finally:
        pool.shutdown()
    assert _mapping(by_result.images) is None
    assert_same(by_file, by_result)

    monkeypatch.setattr(loading, "SHM_DIR", loading.SHM_DIR / "missing")  # no shared memory: the pipes
    by_pipe = load_dataset(data, 32, method="process", errors="skip")
    assert _mapping(by_pipe.images) is None
    assert_same(by_file, by_pipe)


# ------------------------------------------------------------------------------ options


def test_options_object_and_keywords_give_the_same_load(synthetic: Path) -> None:
    options = LoadOptions(size=32, method="serial", errors="skip")
    by_options = load_dataset(synthetic, split="test", options=options)
    assert by_options.size == (32, 32)
    assert_same(by_options, load_dataset(synthetic, 32, split="test", method="serial", errors="skip"))
    # keywords override the options object, the size argument included
    wider = load_dataset(synthetic, (32, 48), split="test", options=options, method="thread")
    assert wider.size == (32, 48)
    assert load_dataset(synthetic, split="test", options=options, size=24).size == (24, 24)
    assert load_dataset(synthetic, split="test", method="serial").size == (128, 128)  # LoadOptions' default

    flat = synthetic / "train"
    a = load_splits(flat, seed=7, test_fraction=0.25, options=LoadOptions(size=32, errors="skip"))
    b = load_splits(flat, 32, test_fraction=0.25, seed=7, errors="skip", method="serial")
    assert_same(a[0], b[0])
    assert_same(a[1], b[1])


def test_unknown_options_and_bad_values_are_refused(synthetic: Path) -> None:
    with pytest.raises(TypeError, match="load_dataset.*'sizes'"):
        load_dataset(synthetic, split="test", sizes=32)
    with pytest.raises(TypeError, match="load_splits.*'class_names'"):
        load_splits(synthetic, 32, class_names=["cat"])
    for bad in (
        {"errors": "ignore"},
        {"mode": "squash"},
        {"method": "fork"},
        {"workers": 0},
        {"chunk_size": -1},
        {"size": 0},
    ):
        with pytest.raises(ValueError):
            LoadOptions(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        LoadOptions().size = 64  # type: ignore[misc]


# ------------------------------------------------------------------------------ dropped boxes and flags


def add_objects(
    xml: Path, objects: list[tuple[tuple[float, float, float, float], str]], keep_original: bool = True
) -> None:
    """Rewrite a synthetic annotation with extra objects: (box, extra child elements as XML text)."""
    root = etree.fromstring(xml.read_bytes())
    first = root.find("object")
    name = first.findtext("name")
    if not keep_original:
        root.remove(first)
    for box, extra in objects:
        corners = "".join(f"<{k}>{v:g}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        root.append(
            etree.fromstring(f"<object><name>{name}</name>{extra}<bndbox>{corners}</bndbox></object>")
        )
    xml.write_bytes(etree.tostring(root))


@pytest.fixture(scope="module")
def bad_boxes(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A copy of the synthetic train folder whose first three annotations hold invalid boxes.

    xmls[0]: its good box, a flagged good box, a degenerate box and one far outside the image;
    xmls[1]: only a degenerate box; xmls[2]: only two invalid boxes.
    """
    data = tmp_path_factory.mktemp("bad-boxes") / "data"
    data.mkdir()
    for p in (synthetic / "train").iterdir():
        (data / p.name).write_bytes(p.read_bytes())
    xmls = sorted(data.glob("*.xml"))
    add_objects(
        xmls[0],
        [
            ((2, 3, 20, 30), "<difficult>1</difficult><truncated>1</truncated>"),
            ((5, 5, 5, 9), ""),
            ((10, 10, 5000, 20), "<difficult>1</difficult>"),
        ],
    )
    add_objects(xmls[1], [((7, 7, 3, 9), "")], keep_original=False)
    add_objects(xmls[2], [((7, 7, 7, 9), ""), ((-50, 1, 10, 10), "")], keep_original=False)
    return data, xmls


def test_an_invalid_box_costs_that_box_not_the_image(
    bad_boxes: tuple[Path, list[Path]], caplog: pytest.LogCaptureFixture
) -> None:
    data, xmls = bad_boxes
    with caplog.at_level(logging.WARNING, logger="sprint2.loading"):
        ds = load_dataset(data, 32, method="serial", errors="skip")
    assert ds.found == 24 and len(ds) == 22
    assert sorted(f.path for f in ds.failures) == [str(xmls[1]), str(xmls[2])]  # no valid box left
    reasons = {f.path: f.error for f in ds.failures}
    assert reasons[str(xmls[1])].startswith("object 1: degenerate box (7, 7, 3, 9)")
    assert "object 1: degenerate box" in reasons[str(xmls[2])]
    assert "object 2: box (-50, 1, 10, 10) outside the" in reasons[str(xmls[2])]

    assert [(d.path, d.index) for d in ds.dropped] == [(str(xmls[0]), 3), (str(xmls[0]), 4)]
    assert ds.dropped[0].reason.startswith("degenerate box (5, 5, 5, 9)")
    assert "outside the" in ds.dropped[1].reason
    assert "dropped 2 invalid box(es) from 1 image(s)" in caplog.text and str(xmls[0]) in caplog.text

    row = ds.paths.index(parse_annotation(xmls[0], check=False).image_path)
    assert len(ds.boxes[row]) == len(ds.labels[row]) == 2  # the original box and the flagged one
    assert ds.difficult[row].tolist() == [False, True] and ds.truncated[row].tolist() == [False, True]
    assert not any(flags.any() for i, flags in enumerate(ds.difficult) if i != row)

    # the same on every route, through the cache, and in subset/head
    for method in ("thread", "process"):
        assert_same(ds, load_dataset(data, 32, method=method, errors="skip"))
    with pytest.raises(DataError):  # a file with no valid box is still an error under errors="raise"
        load_dataset(data, 32, method="thread")
    cache = data.parent / "cache"
    first = load_dataset(data, 32, method="thread", errors="skip", cache_dir=cache)
    assert_same(ds, first)
    assert_same(ds, load_dataset(data, 32, method="thread", errors="skip", cache_dir=cache))
    assert ds.subset([row]).dropped == ds.head(1).dropped == ds.dropped
    assert ds.subset([row]).difficult[0].tolist() == [False, True]


def test_dropped_boxes_alone_do_not_fail_a_strict_load(
    bad_boxes: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    data, xmls = bad_boxes
    strict = tmp_path / "strict"
    strict.mkdir()
    for p in data.iterdir():
        if p not in xmls[1:3]:
            (strict / p.name).write_bytes(p.read_bytes())
    ds = load_dataset(strict, 32, method="thread", errors="raise")
    assert len(ds) == 22 and not ds.failures
    assert [d.index for d in ds.dropped] == [3, 4] and Path(ds.dropped[0].path).name == xmls[0].name


def test_inspect_lists_every_dropped_box(bad_boxes: tuple[Path, list[Path]]) -> None:
    data, xmls = bad_boxes
    summary = inspect_dataset(data, method="thread")
    assert summary["images"] == 22 and len(summary["failed"]) == 2
    assert [(d["path"], d["index"]) for d in summary["dropped_boxes"]] == [
        (str(xmls[0]), 3),
        (str(xmls[0]), 4),
    ]
    assert all(set(d) == {"path", "index", "reason"} and d["reason"] for d in summary["dropped_boxes"])
    assert summary["objects"] == 22 + 1  # one box per kept image, plus the flagged extra one


def test_bccd_keeps_the_good_boxes_of_the_two_images_with_a_degenerate_one(shared_datasets: Path) -> None:
    root = shared_datasets / "bccd"
    ds = load_dataset(root, 64, method="thread", errors="raise")
    assert ds.found == len(ds) == 364 and not ds.failures
    assert [(Path(d.path).name, d.index) for d in ds.dropped] == [
        ("BloodImage_00338.xml", 13),
        ("BloodImage_00343.xml", 4),
    ]
    assert all(d.reason.startswith("degenerate box") for d in ds.dropped)
    for stem, objects in (("BloodImage_00338", 14), ("BloodImage_00343", 12)):
        row = [p.stem for p in ds.paths].index(stem)
        assert len(ds.boxes[row]) == len(ds.labels[row]) == objects - 1
    summary = inspect_dataset(root, method="thread")
    assert summary["failed"] == [] and summary["images"] == 364
    assert [d["index"] for d in summary["dropped_boxes"]] == [13, 4]
