"""Tests for sprint2.voc: parsing, every error kind, safe XML, the three layouts, the real datasets."""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path

import pytest

from sprint2 import synthetic
from sprint2.voc import (
    Annotation,
    DataError,
    Sample,
    VocObject,
    check_against_image,
    class_names_from,
    discover,
    parse_annotation,
    screen_boxes,
)


def voc_xml(
    objects: str,
    size: str = "<size><width>100</width><height>80</height><depth>3</depth></size>",
    filename: str = "a.jpg",
) -> str:
    return f"<annotation><folder>x</folder><filename>{filename}</filename>{size}{objects}</annotation>"


def obj(name: str = "cat", box=("10", "20", "30", "40"), extra: str = "") -> str:
    fields = "".join(
        f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box) if v is not None
    )
    return f"<object><name>{name}</name>{extra}<bndbox>{fields}</bndbox></object>"


def write(tmp_path: Path, text: str | bytes, name: str = "a.xml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# ----------------------------------------------------------------------------------------------- parsing


def test_parse_float_coords_multiple_objects_and_flags(tmp_path):
    xml = voc_xml(
        obj("cat", ("48.5", "20", "60.25", "40.0"), "<difficult>1</difficult><truncated>0</truncated>")
        + obj("dog", ("1", "2", "3", "4"), "<truncated>1</truncated>")
        + obj("cat", ("5", "6", "7", "8"))
    )
    ann = parse_annotation(write(tmp_path, xml), image_path=tmp_path / "a.jpg")
    assert (ann.width, ann.height, ann.depth) == (100, 80, 3)
    assert ann.objects == (
        VocObject("cat", (48.5, 20.0, 60.25, 40.0), difficult=True, truncated=False),
        VocObject("dog", (1.0, 2.0, 3.0, 4.0), difficult=False, truncated=True),
        VocObject("cat", (5.0, 6.0, 7.0, 8.0)),
    )
    assert class_names_from([ann]) == ["cat", "dog"]


def test_size_absent_gives_zero_and_image_path_defaults_beside_xml(tmp_path):
    ann = parse_annotation(write(tmp_path, voc_xml(obj(), size="", filename="pic.png")))
    assert (ann.width, ann.height) == (0, 0)
    assert ann.image_path == tmp_path / "pic.png"


def test_image_path_default_in_voc_tree(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "JPEGImages" / "0001.jpg").write_bytes(b"x")
    ann = parse_annotation(write(tmp_path / "Annotations", voc_xml(obj(), filename="0001.jpg"), "0001.xml"))
    assert ann.image_path == tmp_path / "JPEGImages" / "0001.jpg"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty file"),
        ("   \n", "empty file"),
        ("<annotation><object><name>cat</name>", "malformed XML"),
        ("<notvoc/>", "not a VOC annotation"),
        (voc_xml("<object><bndbox/></object>"), "object 1: missing name"),
        (voc_xml(obj() + "<object><name>dog</name></object>"), "object 2: missing bndbox"),
        (voc_xml(obj() + obj("dog", ("1", "2", None, "4"))), "object 2: missing bndbox/xmax"),
        (voc_xml(obj("cat", ("abc", "2", "3", "4"))), "object 1: non-numeric bndbox/xmin 'abc'"),
        (voc_xml(obj("cat", ("1", "nan", "3", "4"))), "object 1: non-finite bndbox/ymin"),
        (voc_xml(obj("cat", ("10", "2", "10", "4"))), "object 1: degenerate box (10, 2, 10, 4)"),
        (voc_xml(obj("cat", ("1", "9", "3", "4"))), "object 1: degenerate box"),
        (voc_xml(obj("cat", extra="<difficult>maybe</difficult>")), "object 1: bad difficult value 'maybe'"),
        (voc_xml(obj(), size="<size><width>wide</width></size>"), "size: non-numeric width 'wide'"),
    ],
)
def test_parse_errors_name_file_and_reason(tmp_path, text, reason):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        parse_annotation(path)
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(info.value) == f"{path}: {info.value.reason}"


def test_unknown_class_only_with_class_names(tmp_path):
    path = write(tmp_path, voc_xml(obj("cat") + obj("yeti")))
    assert len(parse_annotation(path).objects) == 2
    with pytest.raises(DataError, match=r"object 2: unknown class 'yeti' \(known: cat, dog\)"):
        parse_annotation(path, class_names=["dog", "cat"])


def test_check_false_keeps_degenerate_box_but_not_unknown_classes(tmp_path):
    path = write(tmp_path, voc_xml(obj("cat", ("5", "5", "5", "5"))))
    assert parse_annotation(path, check=False).objects[0].box == (5.0, 5.0, 5.0, 5.0)
    with pytest.raises(DataError, match="object 1: unknown class 'cat'"):
        parse_annotation(path, class_names=["dog"], check=False)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match="annotation file missing"):
        parse_annotation(tmp_path / "nope.xml")


def test_data_error_pickles_with_path_and_reason():
    err = pickle.loads(pickle.dumps(DataError(Path("/x/y.xml"), "empty file")))
    assert isinstance(err, DataError) and err.path == Path("/x/y.xml") and err.reason == "empty file"
    assert str(err) == "/x/y.xml: empty file"


# --------------------------------------------------------------------------------- check_against_image


def annotation(box, width=100, height=80) -> Annotation:
    return Annotation(Path("a.xml"), Path("a.jpg"), width, height, 3, (VocObject("cat", box),))


def test_size_mismatch_warns_and_uses_real_size(caplog):
    with caplog.at_level(logging.WARNING, logger="sprint2.voc"):
        fixed = check_against_image(annotation((10, 10, 50, 50), 100, 80), 120, 90)
    assert (fixed.width, fixed.height) == (120, 90)
    assert "100x80" in caplog.text and "120x90" in caplog.text


def test_absent_size_is_filled_silently(caplog):
    with caplog.at_level(logging.WARNING, logger="sprint2.voc"):
        fixed = check_against_image(annotation((10, 10, 50, 50), 0, 0), 120, 90)
    assert (fixed.width, fixed.height) == (120, 90) and caplog.text == ""


@pytest.mark.parametrize(
    "box, clipped",
    [
        ((0, 0, 100, 80), (0, 0, 100, 80)),
        ((-1, -1, 101, 81), (0, 0, 100, 80)),  # exactly 1 px over: tolerated and clipped
        ((1, 1, 100.5, 80.5), (1, 1, 100, 80)),
    ],
)
def test_box_within_one_pixel_is_clipped(box, clipped):
    assert check_against_image(annotation(box), 100, 80).objects[0].box == clipped


@pytest.mark.parametrize(
    "box", [(0, 0, 101.5, 80), (-2, 0, 50, 50), (0, 0, 50, 82), (0, -1.01, 5, 5), (100.5, 10, 101, 20)]
)
def test_box_outside_image_is_error(box):
    with pytest.raises(DataError) as info:
        check_against_image(annotation(box), 100, 80)
    assert info.value.path == Path("a.xml") and "object 1: box" in info.value.reason


def test_screen_boxes_keeps_the_good_boxes_and_names_each_dropped_one(caplog):
    boxes = [
        (10, 10, 50, 50),
        (5, 5, 5, 9),
        (-1, 0, 101, 20),
        (0, 0, 150, 20),
        (100.5, 10, 101, 20),
        (7, 9, 3, 12),
    ]
    objects = tuple(VocObject("cat", b, difficult=i == 2, truncated=i == 0) for i, b in enumerate(boxes))
    ann = Annotation(Path("a.xml"), Path("a.jpg"), 100, 80, 3, objects)
    with caplog.at_level(logging.WARNING, logger="sprint2.voc"):
        kept, dropped = screen_boxes(ann, 100, 80)
    assert caplog.text == ""  # <size> agrees with the image
    assert [o.box for o in kept.objects] == [(10, 10, 50, 50), (0, 0, 100, 20)]  # the second one clipped
    assert [(o.difficult, o.truncated) for o in kept.objects] == [(False, True), (True, False)]
    assert [index for index, _ in dropped] == [2, 4, 5, 6]  # 1-based, in the file's order
    assert dropped[0][1] == "degenerate box (5, 5, 5, 9) (needs xmax > xmin and ymax > ymin)"
    assert dropped[1][1] == "box (0, 0, 150, 20) outside the 100x80 image a.jpg"
    assert dropped[2][1] == "box (100.5, 10, 101, 20) has no area inside the 100x80 image a.jpg"
    assert dropped[3][1].startswith("degenerate box (7, 9, 3, 12)")
    with pytest.raises(DataError) as info:  # the strict form raises the first of them
        check_against_image(ann, 100, 80)
    assert info.value.path == Path("a.xml") and info.value.reason == "object 2: " + dropped[0][1]
    with pytest.raises(DataError, match="image has no pixels"):
        screen_boxes(ann, 0, 80)


# ------------------------------------------------------------------------------------------- security

BILLION_LAUGHS = synthetic.BILLION_LAUGHS.replace(b"%s", b"a.jpg")


def test_billion_laughs_refused_fast(tmp_path):
    path = write(tmp_path, BILLION_LAUGHS)
    start = time.perf_counter()
    with pytest.raises(DataError, match="declares entities/DTD, refused"):
        parse_annotation(path)
    assert time.perf_counter() - start < 0.5


def test_billion_laughs_in_utf16_refused_fast(tmp_path):
    text = BILLION_LAUGHS.decode().replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>')
    path = write(tmp_path, text.encode("utf-16"))
    assert b"<!ENTITY" not in path.read_bytes()  # a naive byte scan would miss it
    start = time.perf_counter()
    with pytest.raises(DataError, match="declares entities/DTD, refused"):
        parse_annotation(path)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file://{secret}">]>',
        '<!DOCTYPE annotation [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>',
        '<!DOCTYPE annotation SYSTEM "file://{secret}">',
    ],
)
def test_external_entity_never_read(tmp_path, doctype):
    secret_value = "TOP-SECRET-7f3a9c"
    secret = tmp_path / "secret.txt"
    secret.write_text(secret_value)
    body = voc_xml(obj("&secret;")) if "ENTITY secret" in doctype else voc_xml(obj())
    path = write(tmp_path, doctype.format(secret=secret) + body)
    try:
        result = repr(parse_annotation(path))
    except DataError as exc:
        result = str(exc) + repr(exc.args)
        assert "declares entities/DTD, refused" in exc.reason
    assert secret_value not in result


# ------------------------------------------------------------------------------------------- discovery


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {
        layout: synthetic.generate(root / layout, train=6, test=3, classes=3, layout=layout)
        for layout in synthetic.LAYOUTS
    }


def test_discover_side_by_side(layouts):
    root = layouts["side-by-side"]
    train = discover(root / "train")
    assert len(train) == 6 and len(discover(root / "test")) == 3
    assert discover(root, split="train") == train
    assert all(s.image_path == s.xml_path.with_suffix(".jpg") for s in train)
    assert [s.xml_path for s in train] == sorted(s.xml_path for s in train)
    with pytest.raises(DataError, match="subfolders test, train hold image\\+XML pairs") as info:
        discover(root)
    assert info.value.path == root


def test_discover_voc(layouts):
    root = layouts["voc"]
    assert len(discover(root)) == 9
    train, test = discover(root, "train"), discover(root, "test")
    assert [s.xml_path.stem for s in train] == [f"train_{i:05d}" for i in range(6)]
    assert {s.xml_path.stem for s in test} == {f"test_{i:05d}" for i in range(3)}
    assert all(s.image_path == root / "JPEGImages" / f"{s.xml_path.stem}.jpg" for s in train + test)
    with pytest.raises(DataError, match="split file for split 'val' not found") as info:
        discover(root, "val")
    assert info.value.path == root / "ImageSets" / "Main" / "val.txt"


def test_discover_voc_matches_by_id_then_filename(tmp_path):
    for folder in ("Annotations", "JPEGImages"):
        (tmp_path / folder).mkdir()
    for name in ("0001.jpg", "other.jpg", "0002_scan.png"):
        (tmp_path / "JPEGImages" / name).write_bytes(b"x")
    write(tmp_path / "Annotations", voc_xml(obj(), filename="other.jpg"), "0001.xml")  # the id wins
    write(
        tmp_path / "Annotations", voc_xml(obj(), filename="0002_scan.png"), "0002.xml"
    )  # no 0002.*: <filename>
    got = {s.xml_path.name: s.image_path.name for s in discover(tmp_path)}
    assert got == {"0001.xml": "0001.jpg", "0002.xml": "0002_scan.png"}


def test_discover_folders(layouts):
    root = layouts["folders"]
    samples = discover(root)
    assert len(samples) == 9
    assert all(
        s.image_path.parent == root / "images" and s.image_path.stem == s.xml_path.stem for s in samples
    )


def test_discover_voc_split_lists_unknown_id(tmp_path, layouts):
    root = tmp_path / "voc"
    import shutil

    shutil.copytree(layouts["voc"], root)
    (root / "ImageSets" / "Main" / "train.txt").write_text("train_00000\nghost_42\n")
    with pytest.raises(DataError, match="line 2: id 'ghost_42' has no annotation") as info:
        discover(root, "train")
    assert info.value.path == root / "ImageSets" / "Main" / "train.txt"


def test_discover_keeps_sample_with_missing_image(tmp_path, layouts):
    import shutil

    root = tmp_path / "sbs"
    shutil.copytree(layouts["side-by-side"] / "train", root)
    (root / "train_00002.jpg").unlink()
    samples = discover(root)
    assert len(samples) == 6
    missing = [s for s in samples if not s.image_path.exists()]
    assert missing == [Sample(root / "train_00002.jpg", root / "train_00002.xml")]


def test_discover_matches_by_filename_then_stem(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    for name in ("photo1.jpg", "b.png", "c.jpg"):
        (tmp_path / "images" / name).write_bytes(b"x")
    write(tmp_path / "annotations", voc_xml(obj(), filename="photo1.jpg"), "label_a.xml")  # by <filename>
    write(tmp_path / "annotations", voc_xml(obj(), filename="wrong.jpg"), "b.xml")  # by stem
    write(tmp_path / "annotations", voc_xml(obj(), filename="C:\\data\\c.jpg"), "zz.xml")  # Windows path
    write(tmp_path / "annotations", voc_xml(obj(), filename="gone.jpg"), "x.xml")  # missing
    got = {s.xml_path.name: s.image_path.name for s in discover(tmp_path)}
    assert got == {"label_a.xml": "photo1.jpg", "b.xml": "b.png", "zz.xml": "c.jpg", "x.xml": "gone.jpg"}
    assert not (tmp_path / "images" / "gone.jpg").exists()


def test_discover_bad_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        discover(tmp_path / "nothing")
    assert info.value.path == tmp_path / "nothing"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no Pascal VOC annotations") as info:
        discover(tmp_path / "empty")
    assert info.value.path == tmp_path / "empty"
    with pytest.raises(DataError, match="split 'train' requested"):
        discover(tmp_path / "empty", split="train")


# ---------------------------------------------------------------------------------------- real datasets


def test_raccoon(shared_datasets):
    samples = discover(shared_datasets / "raccoon")
    assert len(samples) == 200
    assert all(s.image_path.is_file() and s.image_path.parent.name == "images" for s in samples)
    anns = [parse_annotation(s.xml_path, s.image_path) for s in samples]
    assert sum(len(a.objects) for a in anns) == 217
    assert class_names_from(anns) == ["raccoon"]
    assert all(a.image_path.stem == a.xml_path.stem for a in anns)


def test_bccd_splits_and_degenerate_boxes(shared_datasets):
    root = shared_datasets / "bccd"
    samples = discover(root)
    assert len(samples) == 364 and all(s.image_path.is_file() for s in samples)
    splits = {}
    for split in ("train", "val", "test", "trainval"):
        listed = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        splits[split] = {s.xml_path.stem for s in discover(root, split)}
        assert splits[split] == set(listed)
    assert splits["train"] | splits["val"] == splits["trainval"]
    assert not splits["trainval"] & splits["test"]

    anns, errors = [], {}
    for s in samples:
        try:
            anns.append(parse_annotation(s.xml_path, s.image_path))
        except DataError as exc:
            errors[exc.path.name] = exc.reason
    assert sorted(errors) == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert all("degenerate box" in reason for reason in errors.values())
    assert class_names_from(anns) == ["Platelets", "RBC", "WBC"]
    assert max(len(a.objects) for a in anns) <= 30
    for name, index in (("BloodImage_00338", 13), ("BloodImage_00343", 4)):  # one bad box among many
        ann = parse_annotation(root / "Annotations" / f"{name}.xml", check=False)
        kept, dropped = screen_boxes(ann, ann.width, ann.height)
        assert [i for i, _ in dropped] == [index] and len(kept.objects) == len(ann.objects) - 1 > 10
