"""Tests for sprint2.synthetic: determinism, layouts, dataset properties, ensure_dataset, planted files."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sprint2 import synthetic
from sprint2.images import decode_image
from sprint2.voc import DataError, check_against_image, discover, parse_annotation


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def load(samples):
    """Parse, decode and check every sample; (list of (annotation, image), {path: DataError})."""
    good, bad = [], {}
    for s in samples:
        try:
            ann = parse_annotation(s.xml_path, s.image_path)
            img = decode_image(s.image_path)
            good.append((check_against_image(ann, img.shape[1], img.shape[0]), img))
        except DataError as exc:
            bad[exc.path] = exc
    return good, bad


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("syn") / "d", train=100, test=50, seed=3)


def test_byte_identical_for_same_arguments(tmp_path):
    for layout in synthetic.LAYOUTS:
        a = files(synthetic.generate(tmp_path / f"a-{layout}", train=8, test=4, seed=5, layout=layout))
        b = files(synthetic.generate(tmp_path / f"b-{layout}", train=8, test=4, seed=5, layout=layout))
        assert a == b and len(a) >= 25
    other = files(synthetic.generate(tmp_path / "c", train=8, test=4, seed=6, layout="folders"))
    assert other.keys() == a.keys() and other != a


def test_regenerate_in_place_replaces_previous_files(tmp_path):
    out = synthetic.generate(tmp_path / "d", train=6, test=2, layout="voc")
    synthetic.generate(out, train=3, test=1, layout="side-by-side")
    assert sorted(p.name for p in out.iterdir()) == [synthetic.MARKER, "test", "train"]
    assert len(list((out / "train").glob("*.xml"))) == 3
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        synthetic.generate(tmp_path / "foreign", train=2, test=1)


@pytest.mark.parametrize("layout, splits", [("side-by-side", {"train": 12, "test": 6}),
                                            ("voc", {"train": 12, "test": 6, None: 18}),
                                            ("folders", {None: 18})])
def test_layouts_load_cleanly(tmp_path, layout, splits):
    root = synthetic.generate(tmp_path / layout, train=12, test=6, classes=4, layout=layout)
    for split, count in splits.items():
        samples = discover(root, split)
        good, bad = load(samples)
        assert not bad and len(good) == count
        assert {a.objects[0].name for a, _ in good} == set(synthetic.CLASS_NAMES[:4])


def test_dataset_properties(dataset):
    good, bad = load(discover(dataset / "train"))
    assert not bad and len(good) == 100
    sizes = {(a.width, a.height) for a, _ in good}
    assert len(sizes) > 50 and sum(w != h for w, h in sizes) > 45
    assert all(96 <= w <= 256 and 96 <= h <= 256 for w, h in sizes)
    counts = Counter(a.objects[0].name for a, _ in good)
    assert sorted(counts) == sorted(synthetic.CLASS_NAMES) and set(counts.values()) == {10}
    labels = [a.objects[0].name for a, _ in good]
    assert labels != sorted(labels) and labels[:10] != list(synthetic.CLASS_NAMES)  # shuffled
    for ann, img in good:
        assert len(ann.objects) == 1 and not ann.objects[0].difficult and not ann.objects[0].truncated
        x0, y0, x1, y1 = ann.objects[0].box
        assert 0 < x0 < x1 < ann.width and 0 < y0 < y1 < ann.height  # fully inside, not touching
        assert max(x1 - x0, y1 - y0) >= 0.2 * min(ann.width, ann.height), ann.xml_path
        assert x1 - x0 <= 0.71 * ann.width and y1 - y0 <= 0.71 * ann.height, ann.xml_path
    assert 5 < np.mean([img.std() for _, img in good])  # textured, not flat


def test_every_third_image_has_float_coordinates(dataset):
    for xml in sorted((dataset / "train").glob("*.xml"))[:30]:
        text = xml.read_text()
        index = int(xml.stem.split("_")[1])
        coords = [text.split(f"<{k}>")[1].split("<")[0] for k in ("xmin", "ymin", "xmax", "ymax")]
        if index % 3 == 2:
            assert all("." in c for c in coords) and any(c.endswith(".5") for c in coords)
        else:
            assert all(c.isdigit() for c in coords)


def test_box_is_tight_around_the_object(tmp_path):
    """The annotation hugs the drawn shape: pixels just outside the box are background-like."""
    root = synthetic.generate(tmp_path / "t", train=20, test=0, layout="folders", distractors=False)
    good, _ = load(discover(root))
    for ann, img in good:
        if ann.objects[0].name not in ("dog", "giraffe"):  # full-box shapes: every box edge pixel is object
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in ann.objects[0].box)
        inside = img[y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3).mean(0)
        ring = np.concatenate([img[y0 - 1, x0:x1], img[y1, x0:x1], img[y0:y1, x0 - 1], img[y0:y1, x1]])
        assert np.abs(ring.mean(0) - inside).max() > 25


def test_distractors_change_the_images(tmp_path):
    a = files(synthetic.generate(tmp_path / "a", train=3, test=0, distractors=True))
    b = files(synthetic.generate(tmp_path / "b", train=3, test=0, distractors=False))
    assert a.keys() == b.keys()
    assert any(a[k] != b[k] for k in a if k.endswith(".jpg"))


def test_classes_are_separable_by_a_trivial_classifier(dataset):
    """Nearest-centroid on 8x8 crops of the box must already reach 90%: the class cue is unambiguous."""
    import cv2

    def features(split):
        good, _ = load(discover(dataset / split))
        x = [cv2.resize(img[int(a.objects[0].box[1]):int(a.objects[0].box[3]),
                            int(a.objects[0].box[0]):int(a.objects[0].box[2])], (8, 8),
                        interpolation=cv2.INTER_AREA).astype(np.float32).ravel() for a, img in good]
        return np.stack(x), np.array([synthetic.CLASS_NAMES.index(a.objects[0].name) for a, _ in good])

    xtr, ytr = features("train")
    xte, yte = features("test")
    centroids = np.stack([xtr[ytr == k].mean(0) for k in range(len(synthetic.CLASS_NAMES))])
    pred = np.argmin(((xte[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == yte).mean() >= 0.9


def test_ensure_dataset_generates_once_and_on_change(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "QUICK_COUNTS", (5, 2))
    path = synthetic.ensure_dataset(tmp_path, quick=True)
    assert path == tmp_path / "synthetic-quick"
    assert len(list((path / "train").glob("*.xml"))) == 5 and len(list((path / "test").glob("*.xml"))) == 2
    first = (path / "train" / "train_00000.jpg").stat().st_mtime_ns
    time.sleep(0.01)
    assert synthetic.ensure_dataset(tmp_path, quick=True) == path
    assert (path / "train" / "train_00000.jpg").stat().st_mtime_ns == first  # not regenerated
    synthetic.ensure_dataset(tmp_path, quick=True, seed=1)
    assert json.loads((path / synthetic.MARKER).read_text())["seed"] == 1
    assert not list(tmp_path.glob(".synthetic-quick.tmp-*"))
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="not a synthetic dataset"):
        synthetic.ensure_dataset(tmp_path)


def test_plant_bad_files(tmp_path):
    src = synthetic.generate(tmp_path / "syn", train=6, test=0) / "train"
    dst = tmp_path / "planted"
    bad = synthetic.plant_bad_files(src, dst)
    assert len(bad) == len(synthetic.PLANTED) == 10
    samples = discover(dst)
    start = time.perf_counter()
    good, failed = load(samples)
    assert time.perf_counter() - start < 5
    assert len(samples) == len(good) + len(failed) == 16  # found = loaded + failed
    assert sorted(failed) == sorted(bad)
    expected = ["malformed XML", "object 1: missing bndbox/xmax", "non-numeric bndbox/xmin 'twelve'",
                "degenerate box", "outside the", "truncated JPEG", "empty file", "not a decodable image",
                "image file missing", "declares entities/DTD, refused"]
    for path, reason in zip(bad, expected):
        assert reason in failed[path].reason, (path, failed[path])
        assert str(failed[path]).startswith(str(path))
    assert {a.image_path.name for a, _ in good} == {p.name for p in src.glob("*.jpg")}
