"""Tests for sprint2.synthetic: determinism, the original one-object data, several objects per image
and their overlap rules, layouts, ensure_dataset, the CLI options and the planted bad files."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from sprint2 import synthetic
from sprint2.cli import main
from sprint2.images import decode_image, decode_resized, transform_boxes
from sprint2.loading import load_dataset
from sprint2.voc import DataError, check_against_image, discover, parse_annotation

ROOT = Path(__file__).resolve().parents[1]
# The last commit whose generator drew one object per image: objects=1 must reproduce its files.
ONE_OBJECT_COMMIT = "285da2e8eff8d7d210078806125a9cfac538124a"


def files(root: Path, marker: bool = True) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (marker or p.name != synthetic.MARKER)
    }


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


def iou_and_inside(a, b) -> tuple[float, float]:
    """IoU of two boxes and the share of the smaller box inside the other."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


@pytest.fixture(scope="module")
def one_object(tmp_path_factory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("syn1") / "d", train=100, test=50, seed=3, objects=1)


@pytest.fixture(scope="module")
def several(tmp_path_factory) -> Path:
    """The default: several objects per image."""
    return synthetic.generate(tmp_path_factory.mktemp("syn") / "d", train=100, test=50, seed=3)


@pytest.fixture(scope="module")
def one_object_generator(tmp_path_factory) -> ModuleType:
    """sprint2/synthetic.py as of ONE_OBJECT_COMMIT, read from git and imported from a temp dir."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ONE_OBJECT_COMMIT}:sprint2/synthetic.py"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"needs git and the project history (commit {ONE_OBJECT_COMMIT[:7]})")
    path = tmp_path_factory.mktemp("one-object-generator") / "one_object_synthetic.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("one_object_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ determinism


def test_byte_identical_for_same_arguments(tmp_path):
    for layout in synthetic.LAYOUTS:
        a = files(synthetic.generate(tmp_path / f"a-{layout}", train=8, test=4, seed=5, layout=layout))
        b = files(synthetic.generate(tmp_path / f"b-{layout}", train=8, test=4, seed=5, layout=layout))
        assert a == b and len(a) >= 25
    other = files(synthetic.generate(tmp_path / "c", train=8, test=4, seed=6, layout="folders"))
    assert other.keys() == a.keys() and other != a
    wide = {"objects": (2, 6), "sizes": (0.08, 0.3), "distractors": False}
    d = files(synthetic.generate(tmp_path / "d", train=6, test=2, seed=5, **wide))
    assert d == files(synthetic.generate(tmp_path / "e", train=6, test=2, seed=5, **wide))
    assert d != files(
        synthetic.generate(tmp_path / "f", train=6, test=2, seed=5, **{**wide, "objects": (2, 5)})
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layout": "side-by-side"},
        {"layout": "voc", "classes": 4},
        {"layout": "folders", "distractors": False, "seed": 2},
    ],
)
def test_one_object_per_image_is_the_original_dataset(tmp_path, one_object_generator, kwargs):
    """Every image, XML and split list is the same bytes as the one-object generator wrote."""
    original = one_object_generator.generate(tmp_path / "original", train=10, test=5, **{"seed": 5, **kwargs})
    now = synthetic.generate(tmp_path / "now", train=10, test=5, objects=1, **{"seed": 5, **kwargs})
    assert files(original, marker=False) == files(now, marker=False)
    assert len(files(now, marker=False)) >= 30
    pair = synthetic.generate(tmp_path / "pair", train=10, test=5, objects=(1, 1), **{"seed": 5, **kwargs})
    assert files(pair) == files(now)
    marker = json.loads((now / synthetic.MARKER).read_text())
    old_marker = json.loads((original / synthetic.MARKER).read_text())
    assert marker == {**old_marker, "objects": [1, 1], "sizes": [0.25, 0.7], "version": 2}


def test_regenerate_in_place_replaces_previous_files(tmp_path):
    out = synthetic.generate(tmp_path / "d", train=6, test=2, layout="voc")
    synthetic.generate(out, train=3, test=1, layout="side-by-side")
    assert sorted(p.name for p in out.iterdir()) == [synthetic.MARKER, "test", "train"]
    assert len(list((out / "train").glob("*.xml"))) == 3
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        synthetic.generate(tmp_path / "foreign", train=2, test=1)


def test_bad_object_settings_are_refused(tmp_path):
    for objects in (0, (3, 1), (1, 9), (1, 2, 3), "2", (1.5, 2)):
        with pytest.raises(ValueError, match="objects"):
            synthetic.generate(tmp_path / "x", train=2, test=1, objects=objects)
    for sizes in ((0.01, 0.2), (0.4, 0.3), (0.2, 0.95)):
        with pytest.raises(ValueError, match="object sizes"):
            synthetic.generate(tmp_path / "x", train=2, test=1, sizes=sizes)
    assert not (tmp_path / "x").exists()  # refused before anything is written


# ------------------------------------------------------------------------------ layouts and loading


@pytest.mark.parametrize(
    "layout, splits",
    [
        ("side-by-side", {"train": 12, "test": 6}),
        ("voc", {"train": 12, "test": 6, None: 18}),
        ("folders", {None: 18}),
    ],
)
def test_layouts_load_cleanly(tmp_path, layout, splits):
    root = synthetic.generate(tmp_path / layout, train=12, test=6, classes=4, layout=layout)
    for split, count in splits.items():
        samples = discover(root, split)
        good, bad = load(samples)
        assert not bad and len(good) == count
        assert {o.name for a, _ in good for o in a.objects} == set(synthetic.CLASS_NAMES[:4])
        assert max(len(a.objects) for a, _ in good) > 1


def test_load_dataset_reads_every_box_and_flag(several):
    """The loader returns each image's boxes, classes and truncated flags exactly as the XML holds them."""
    ds = load_dataset(several, 96, split="train", method="serial")
    assert len(ds) == ds.found == 100 and not ds.failures and not ds.dropped
    assert ds.class_names == sorted(synthetic.CLASS_NAMES)
    for row, sample in enumerate(discover(several, "train")):
        ann = parse_annotation(sample.xml_path, sample.image_path)
        assert ds.paths[row] == sample.image_path
        assert [ds.class_names[k] for k in ds.labels[row]] == [o.name for o in ann.objects]
        assert ds.truncated[row].tolist() == [o.truncated for o in ann.objects]
        assert not ds.difficult[row].any() and ds.boxes[row].shape == (len(ann.objects), 4)
        _, how, _ = decode_resized(sample.image_path, 96, "stretch")
        expected = transform_boxes(np.array([o.box for o in ann.objects]), how)
        np.testing.assert_allclose(ds.boxes[row], expected, atol=1e-4)
    assert sum(len(b) for b in ds.boxes) > 200


# ------------------------------------------------------------------------------ one object per image


def test_one_object_properties(one_object):
    good, bad = load(discover(one_object / "train"))
    assert not bad and len(good) == 100
    sizes = {(a.width, a.height) for a, _ in good}
    assert len(sizes) > 50 and sum(w != h for w, h in sizes) > 45
    assert all(96 <= w <= 256 and 96 <= h <= 256 for w, h in sizes)
    counts = Counter(a.objects[0].name for a, _ in good)
    assert sorted(counts) == sorted(synthetic.CLASS_NAMES) and set(counts.values()) == {10}
    labels = [a.objects[0].name for a, _ in good]
    assert labels != sorted(labels) and labels[:10] != list(synthetic.CLASS_NAMES)  # shuffled
    for ann, _ in good:
        assert len(ann.objects) == 1 and not ann.objects[0].difficult and not ann.objects[0].truncated
        x0, y0, x1, y1 = ann.objects[0].box
        assert 0 < x0 < x1 < ann.width and 0 < y0 < y1 < ann.height  # fully inside, not touching
        assert max(x1 - x0, y1 - y0) >= 0.2 * min(ann.width, ann.height), ann.xml_path
        assert x1 - x0 <= 0.71 * ann.width and y1 - y0 <= 0.71 * ann.height, ann.xml_path
    assert 5 < np.mean([img.std() for _, img in good])  # textured, not flat


def _tight_box_contrast(good, others_clear: bool) -> list[float]:
    """For full-box shapes (dog, giraffe) not truncated: colour gap between the box's inside and the
    one-pixel ring just outside it (only where no other box touches the ring, when others_clear)."""
    gaps = []
    for ann, img in good:
        for k, obj in enumerate(ann.objects):
            if obj.name not in ("dog", "giraffe") or obj.truncated:
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in obj.box)
            ring = (x0 - 1, y0 - 1, x1 + 1, y1 + 1)
            if others_clear and any(
                iou_and_inside(ring, o.box)[0] > 0 for j, o in enumerate(ann.objects) if j != k
            ):
                continue
            inside = img[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].reshape(-1, 3).mean(0)
            edge = np.concatenate([img[y0 - 1, x0:x1], img[y1, x0:x1], img[y0:y1, x0 - 1], img[y0:y1, x1]])
            gaps.append(float(np.abs(edge.mean(0) - inside).max()))
    return gaps


def test_box_is_tight_around_the_object(tmp_path):
    """The annotation hugs the drawn shape: pixels just outside the box are background-like."""
    root = synthetic.generate(
        tmp_path / "t", train=20, test=0, layout="folders", distractors=False, objects=1
    )
    gaps = _tight_box_contrast(load(discover(root))[0], others_clear=False)
    assert len(gaps) >= 2 and min(gaps) > 25
    root = synthetic.generate(tmp_path / "m", train=30, test=0, layout="folders", distractors=False)
    gaps = _tight_box_contrast(load(discover(root))[0], others_clear=True)
    assert len(gaps) >= 5 and min(gaps) > 25


def test_distractors_change_the_images(tmp_path):
    a = files(synthetic.generate(tmp_path / "a", train=3, test=0, distractors=True))
    b = files(synthetic.generate(tmp_path / "b", train=3, test=0, distractors=False))
    assert a.keys() == b.keys()
    assert any(a[k] != b[k] for k in a if k.endswith(".jpg"))


def _centroid_accuracy(dataset: Path, keep) -> float:
    """Nearest-centroid accuracy on 8x8 crops of the boxes kept by keep(object)."""

    def features(split):
        x, y = [], []
        for ann, img in load(discover(dataset / split))[0]:
            for o in ann.objects:
                if keep(o):
                    x0, y0, x1, y1 = (int(v) for v in o.box)
                    crop = cv2.resize(img[y0:y1, x0:x1], (8, 8), interpolation=cv2.INTER_AREA)
                    x.append(crop.astype(np.float32).ravel())
                    y.append(synthetic.CLASS_NAMES.index(o.name))
        return np.stack(x), np.array(y)

    xtr, ytr = features("train")
    xte, yte = features("test")
    centroids = np.stack([xtr[ytr == k].mean(0) for k in range(len(synthetic.CLASS_NAMES))])
    pred = np.argmin(((xte[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == yte).mean())


def test_classes_are_separable_by_a_trivial_classifier(one_object, several):
    """Nearest-centroid on 8x8 crops of the box already separates the classes: the cue is unambiguous."""
    assert _centroid_accuracy(one_object, lambda o: True) >= 0.9
    assert _centroid_accuracy(several, lambda o: not o.truncated) >= 0.85


# ------------------------------------------------------------------------------ several objects per image


def test_several_objects_properties(several):
    good, bad = load(discover(several, "train") + discover(several, "test"))
    assert not bad and len(good) == 150
    per_image = Counter(len(a.objects) for a, _ in good)
    assert set(per_image) == {1, 2, 3, 4} and min(per_image.values()) >= 20
    objects = [(a, o) for a, _ in good for o in a.objects]
    classes = Counter(o.name for _, o in objects)
    assert (
        sorted(classes) == sorted(synthetic.CLASS_NAMES)
        and max(classes.values()) - min(classes.values()) <= 2
    )
    sides = []
    for ann, obj in objects:
        x0, y0, x1, y1 = obj.box
        assert 0 < x0 < x1 < ann.width and 0 < y0 < y1 < ann.height, ann.xml_path
        assert not obj.difficult
        assert x1 - x0 <= 0.51 * ann.width and y1 - y0 <= 0.51 * ann.height, ann.xml_path
        if not obj.truncated:
            assert max(x1 - x0, y1 - y0) >= 0.09 * min(ann.width, ann.height), ann.xml_path
        sides.append(max(x1 - x0, y1 - y0) / min(ann.width, ann.height))
    sides = np.array(sides)
    assert (sides < 0.25).mean() > 0.2 and (sides > 0.4).mean() > 0.05  # smaller than one-object data too
    truncated = sum(o.truncated for _, o in objects)
    assert 0 < truncated < 0.2 * len(objects)
    overlapping = 0
    for ann, _ in good:
        boxes = [o.box for o in ann.objects]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                iou, inside = iou_and_inside(boxes[i], boxes[j])
                assert iou <= synthetic.MAX_IOU and inside <= synthetic.MAX_INSIDE, ann.xml_path
                overlapping += iou > 0
    assert overlapping >= 10  # objects do overlap, within the rules


def test_every_third_image_has_float_coordinates(several):
    from lxml import etree

    for xml in sorted((several / "train").glob("*.xml"))[:30]:
        index = int(xml.stem.split("_")[1])
        coords = [e.text for e in etree.parse(str(xml)).iter("xmin", "ymin", "xmax", "ymax")]
        if index % 3 == 2:
            assert all("." in c for c in coords) and any(c.endswith(".5") for c in coords)
        else:
            assert all(c.isdigit() for c in coords)


def _square(side: int) -> np.ndarray:
    return np.ones((side, side), bool)


def test_overlap_rules_on_hand_made_masks():
    """The rules of _Scene.add, on squares in supersampled pixels (output pixels are 2x2)."""
    scene = synthetic._Scene(60, 60, halves=False)
    assert scene.add(_square(16), 2, 2)  # box (2, 2, 18, 18), 256 pixels
    assert not scene.add(np.ones((16, 6), bool), 13, 2)  # would hide 5 of 16 columns: 31% > 25%
    assert not scene.add(_square(6), 6, 6)  # inside the first box
    assert scene.add(np.ones((16, 8), bool), 14, 2)  # hides 4 columns, 25%: allowed
    assert scene.boxes == [(2, 2, 14, 18), (14, 2, 22, 18)]  # the first object's visible box shrank
    assert scene.visible == [192, 128]
    frame = _square(8)
    frame[1:-1, 1:-1] = False  # a hollow frame: hides 28 of the second's 128 pixels (22%), but its
    assert not scene.add(frame, 14, 4)  # box lies inside the second's box: the box rule refuses
    first, second = scene.objects(["dog", "cat"])
    assert first.truncated and first.box == (1.0, 1.0, 7.0, 9.0) and first.visible == 0.75
    assert not second.truncated and second.box == (7.0, 1.0, 11.0, 9.0) and second.visible == 1.0

    halves = synthetic._Scene(60, 60, halves=True)  # boxes start on odd, end on even supersampled edges
    assert halves.add(_square(15), 3, 3) and halves.add(np.ones((5, 15), bool), 3, 15)  # hides 20%
    assert halves.boxes == [(3, 3, 18, 16), (3, 15, 18, 20)]  # visible rows 3..14, rounded out to 16
    assert halves.objects(["a", "b"])[0].box == (1.5, 1.5, 9.0, 8.0)


def test_crowded_scenes_leave_objects_out_and_keep_the_rules():
    """Asked for more large objects than fit, render leaves some out and every kept one is >= 75% visible."""
    asked = kept = 0
    for i in range(40):
        rng = np.random.default_rng([11, i])
        names = list(synthetic.CLASS_NAMES[:6])
        img, objects = synthetic.render(rng, names, float_coords=i % 2 == 1, sizes=(0.35, 0.6))
        asked, kept = asked + len(names), kept + len(objects)
        assert 1 <= len(objects) <= len(names) and img.dtype == np.uint8
        for k, obj in enumerate(objects):
            assert obj.visible >= 1 - synthetic.MAX_HIDDEN
            assert obj.visible < 1.0 or not obj.truncated  # an uncovered object keeps its full extent
            x0, y0, x1, y1 = obj.box
            assert 0 < x0 < x1 < img.shape[1] and 0 < y0 < y1 < img.shape[0]
            for other in objects[k + 1 :]:
                iou, inside = iou_and_inside(obj.box, other.box)
                assert iou <= synthetic.MAX_IOU and inside <= synthetic.MAX_INSIDE
    assert kept < asked and kept > 0.3 * asked


# ------------------------------------------------------------------------------ ensure_dataset and CLI


def test_ensure_dataset_generates_once_and_on_change(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "QUICK_COUNTS", (5, 2))
    path = synthetic.ensure_dataset(tmp_path, quick=True)
    assert path == tmp_path / "synthetic-quick"
    assert len(list((path / "train").glob("*.xml"))) == 5 and len(list((path / "test").glob("*.xml"))) == 2
    marker = json.loads((path / synthetic.MARKER).read_text())
    assert (
        marker["objects"] == list(synthetic.OBJECT_COUNTS) and marker["version"] == synthetic.MARKER_VERSION
    )
    assert files(path) == files(synthetic.generate(tmp_path / "direct", train=5, test=2))
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


def test_ensure_dataset_replaces_a_one_object_folder(tmp_path, monkeypatch):
    """A folder written with other settings (here the one-object data, as before version 2) is regenerated."""
    monkeypatch.setattr(synthetic, "QUICK_COUNTS", (4, 2))
    old = synthetic.generate(tmp_path / "synthetic-quick", train=4, test=2, objects=1)
    settings = json.loads((old / synthetic.MARKER).read_text())
    for key in ("objects", "sizes"):
        del settings[key]
    (old / synthetic.MARKER).write_text(json.dumps({**settings, "version": 1}))
    path = synthetic.ensure_dataset(tmp_path, quick=True)
    assert path == old and json.loads((path / synthetic.MARKER).read_text())["objects"] == [1, 4]
    assert max(len(parse_annotation(x).objects) for x in (path / "train").glob("*.xml")) > 1
    single = synthetic.ensure_dataset(tmp_path, quick=True, objects=1)
    assert single == tmp_path / "synthetic-objects1-1-quick" and path.is_dir()  # a folder of its own
    assert all(len(parse_annotation(x).objects) == 1 for x in (single / "train").glob("*.xml"))


def test_cli_generate_objects_and_sizes(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "one"), "--train", "4", "--test", "2", "--objects", "1"]) == 0
    assert "wrote 4 train and 2 test images (side-by-side, objects per image: 1)" in capsys.readouterr().out
    assert files(tmp_path / "one") == files(synthetic.generate(tmp_path / "api1", train=4, test=2, objects=1))
    args = ["--train", "4", "--test", "2", "--objects", "2-3", "--sizes", "0.1-0.2", "--layout", "folders"]
    assert main(["generate", str(tmp_path / "few"), *args]) == 0
    api = synthetic.generate(
        tmp_path / "api2", train=4, test=2, objects=(2, 3), sizes=(0.1, 0.2), layout="folders"
    )
    assert files(tmp_path / "few") == files(api)
    assert main(["generate", str(tmp_path / "default"), "--train", "4", "--test", "2"]) == 0
    assert files(tmp_path / "default") == files(synthetic.generate(tmp_path / "api3", train=4, test=2))
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "bad"), "--objects", "3-1"]) == 2
    assert "1 <= low <= high" in capsys.readouterr().err
    for bad in (["--objects", "two"], ["--objects", "1-2-3"], ["--sizes", "0.1-"]):
        with pytest.raises(SystemExit) as info:
            main(["generate", str(tmp_path / "bad"), *bad])
        assert info.value.code == 2
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------ planted bad files


def test_plant_bad_files(tmp_path):
    src = synthetic.generate(tmp_path / "syn", train=6, test=0) / "train"
    assert max(len(parse_annotation(x).objects) for x in src.glob("*.xml")) > 1
    dst = tmp_path / "planted"
    bad = synthetic.plant_bad_files(src, dst)
    assert len(bad) == len(synthetic.PLANTED) == 10
    samples = discover(dst)
    start = time.perf_counter()
    good, failed = load(samples)
    assert time.perf_counter() - start < 5
    assert len(samples) == len(good) + len(failed) == 16  # found = loaded + failed
    assert sorted(failed) == sorted(bad)
    expected = [
        "malformed XML",
        "object 1: missing bndbox/xmax",
        "non-numeric bndbox/xmin 'twelve'",
        "degenerate box",
        "outside the",
        "truncated JPEG",
        "empty file",
        "not a decodable image",
        "image file missing",
        "declares entities/DTD, refused",
    ]
    for path, reason in zip(bad, expected):
        assert reason in failed[path].reason, (path, failed[path])
        assert str(failed[path]).startswith(str(path))
    assert {a.image_path.name for a, _ in good} == {p.name for p in src.glob("*.jpg")}
    # A planted box problem is its image's only box: the loader fails the file instead of dropping it.
    ds = load_dataset(dst, 32, method="serial", errors="skip")
    assert not ds.dropped and sorted(f.path for f in ds.failures) == sorted(str(p) for p in bad)
