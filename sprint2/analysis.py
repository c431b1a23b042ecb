"""The analysis behind the notebooks' tables: rankings, failure breakdowns, targets, comparisons of loads.

NumPy only, no TensorFlow: each function takes arrays, a LoadedDataset or the plain dicts that the
benchmarks, training and quantization return, and gives back numbers, rows for `sprint2.table`, or a
ready `Table` where a notebook shows the rows as they are (`key_value_table`, `split_table`, `file_table`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sprint2.dataset import Failure, LoadedDataset
from sprint2.errors import DataError
from sprint2.evaluate import largest_index, pairwise_iou
from sprint2.images import box_iou
from sprint2.table import Table, table

Row = dict[str, Any]


def key_value_rows(mapping: Mapping[str, Any]) -> list[Row]:
    """One {"what", "value"} row per item; list values are joined with commas."""
    return [
        {"what": k, "value": ", ".join(map(str, v)) if isinstance(v, list | tuple) else v}
        for k, v in mapping.items()
    ]


def key_value_table(title: str, mapping: Mapping[str, Any]) -> Table:
    """key_value_rows as a two-column table headed by title: a notebook's "what, value" summary."""
    return table(key_value_rows(mapping), [(title, "what", "{}"), ("", "value", "{}")])


# ---------------------------------------------------------------------------------------------- loading
def describe_layouts(root: Path | str) -> list[Row]:
    """Write a tiny synthetic dataset in each VOC layout under root and report what `discover` pairs."""
    from sprint2.synthetic import LAYOUTS, generate
    from sprint2.voc import discover

    rows = []
    for layout in LAYOUTS:
        data = generate(Path(root) / layout, train=6, test=2, classes=3, seed=1, layout=layout)
        pairs = discover(data, None if layout == "folders" else "train")
        files = [p for p in data.rglob("*") if p.is_file() and not p.name.startswith(".")]
        rows.append(
            {
                "layout": layout,
                "pairs found": len(pairs),
                "first image": str(pairs[0].image_path.relative_to(data)),
                "its XML": str(pairs[0].xml_path.relative_to(data)),
                "files": len(files),
            }
        )
    return rows


def loading_rows(bench: Mapping[str, Any]) -> list[Row]:
    """bench_loading's methods as rows: images/s and the ratio to the plain loop ("serial")."""
    serial = bench["methods"]["serial"]["images_per_s"]
    return [
        {"method": name, "images/s": m["images_per_s"], "vs plain loop": m["images_per_s"] / serial}
        for name, m in bench["methods"].items()
    ]


def failure_rows(failures: Sequence[Failure]) -> list[Row]:
    """One row per file that failed to load: its name and the reason."""
    return [{"file": Path(f.path).name, "reason": f.error} for f in failures]


def load_comparison(a: LoadedDataset, b: LoadedDataset) -> list[Row]:
    """Field by field, whether two loads of the same data agree (LoadedDataset.differences)."""
    differ = set(a.differences(b))
    return [{"compared": f.name, "identical": f.name not in differ} for f in dataclasses.fields(a)]


# ---------------------------------------------------------------------------------------------- dataset
def ground_truth(annotations: Sequence[Any]) -> tuple[list[np.ndarray], list[list[str]]]:
    """Per annotation, its boxes as a (K, 4) float32 array and its class names, for the drawing functions."""
    boxes = [np.array([o.box for o in a.objects], np.float32).reshape(-1, 4) for a in annotations]
    return boxes, [[o.name for o in a.objects] for a in annotations]


def loader_box_error(
    loaded: LoadedDataset, annotations: Sequence[Any], originals: Sequence[np.ndarray], mode: str
) -> float:
    """Largest |difference| in pixels between the loader's boxes and resize_image + transform_boxes
    applied here to the same originals; each annotation's image must be in the loaded dataset."""
    from sprint2.images import resize_image, transform_boxes

    row_of = {Path(p): i for i, p in enumerate(loaded.paths)}
    worst = 0.0
    for ann, image, expected in zip(annotations, originals, ground_truth(annotations)[0]):
        row = row_of.get(Path(ann.image_path))
        if row is None:
            raise DataError(
                ann.image_path, "not in the loaded dataset (it failed to load or is another folder)"
            )
        _, how = resize_image(image, loaded.size, mode=mode)
        direct = transform_boxes(expected, how)
        got = np.asarray(loaded.boxes[row], np.float32).reshape(-1, 4)
        if got.shape != direct.shape:
            raise DataError(
                ann.image_path, f"the loader kept {len(got)} boxes, the annotation has {len(direct)}"
            )
        if len(got):
            worst = max(worst, float(np.abs(got - direct).max()))
    return worst


def class_counts(ds: LoadedDataset) -> dict[str, int]:
    """Objects per class, in the dataset's class order."""
    counts = np.bincount(
        np.concatenate([np.asarray(lab, np.int64) for lab in ds.labels] or [np.zeros(0, int)]),
        minlength=len(ds.class_names),
    )
    return {name: int(counts[i]) for i, name in enumerate(ds.class_names)}


def dataset_summary(ds: LoadedDataset) -> Row:
    """Images, objects, classes, the median box area as a fraction of the image, most objects in one image."""
    boxes = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in ds.boxes] or [np.zeros((0, 4))])
    height, width = ds.size
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (height * width)
    return {
        "images": len(ds),
        "objects": int(len(boxes)),
        "classes": len(ds.class_names),
        "median_box_area": float(np.median(area)) if len(area) else 0.0,
        "max_objects_per_image": max((len(b) for b in ds.boxes), default=0),
    }


def split_table(splits: Mapping[str, LoadedDataset | None]) -> Table:
    """dataset_summary of each split that exists (None: a split the run does not have), as a table."""
    return table(
        [{"split": name, **dataset_summary(ds)} for name, ds in splits.items() if ds is not None],
        [
            ("split", "split", "{}"),
            ("images", "images", "{}"),
            ("objects", "objects", "{}"),
            ("classes", "classes", "{}"),
            ("median box area (of image)", "median_box_area", "{:.1%}"),
            ("most objects in one image", "max_objects_per_image", "{}"),
        ],
    )


def objects_per_image(ds: LoadedDataset) -> dict[str, int]:
    """Images by their number of annotated objects, every count from 0 to the largest (keys "0", "1", ...)."""
    counts = np.bincount([len(b) for b in ds.boxes], minlength=1) if len(ds) else np.zeros(1, np.int64)
    return {str(k): int(v) for k, v in enumerate(counts)}


# ------------------------------------------------------------------------------------------ timing runs
def setting_label(row: Mapping[str, Any]) -> str:
    """A short bar label for a bench_training row: "no strategy", or "xN CPU" / "xN GPU" (N replicas)."""
    if str(row["setting"]).startswith("no strategy"):
        return "no strategy"
    return f"x{row['replicas']} {str(row['device']).upper()}"


def best_row(rows: Sequence[Mapping[str, Any]], key: str, **match: Any) -> Mapping[str, Any]:
    """The row with the largest `key` among those whose fields equal `match` (e.g. device="cpu")."""
    candidates = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if not candidates:
        raise ValueError(f"no row matches {match}")
    return max(candidates, key=lambda r: r[key])


def allreduce_share(projection: Mapping[str, Any], gpus: int = 8) -> list[Row]:
    """Per interconnect, the projected all-reduce time at `gpus` GPUs as a fraction of the compute step."""
    rows = [r for r in projection["rows"] if r["gpus"] == gpus]
    return [
        {"link": r["link"], "gpus": gpus, "allreduce_share": r["t_allreduce_s"] / r["t_compute_s"]}
        for r in rows
    ]


def projection_rows(projection: Mapping[str, Any], gpus: Sequence[int] = (1, 2, 4, 8)) -> list[Row]:
    """project_multi_gpu's rows for the given GPU counts, with the all-reduce and step times in ms."""
    return [
        {**r, "allreduce_ms": 1e3 * r["t_allreduce_s"], "step_ms": 1e3 * r["step_s"]}
        for r in projection["rows"]
        if r["gpus"] in gpus
    ]


# --------------------------------------------------------------------------------------------- training
def run_rows(runs: Mapping[str, Mapping[str, Any]], wall_s: Mapping[str, float]) -> list[Row]:
    """One row per run_training result: its metrics, the train / val / test split and the call's wall time."""
    return [
        {
            **m,
            "model": name,
            "split": f"{m['train_images']} / {m['val_images']} / {m['test_images']}",
            "wall_s": wall_s[name],
        }
        for name, m in runs.items()
    ]


def largest_difference(
    a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]], keys: Sequence[str]
) -> float:
    """The largest |a[m][k] - b[m][k]| over the models m of a and the keys k (two scorings of one model)."""
    return max(abs(float(a[m][k]) - float(b[m][k])) for m in a for k in keys)


def _selection_iou(epoch: Mapping[str, Any]) -> float:
    """The IoU an epoch is chosen by: validation when the run had a validation set, else training."""
    return epoch["val_mean_iou"] if epoch.get("val_mean_iou") is not None else epoch["mean_iou"]


def history_rows(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Row]:
    """Per model: the last epoch's training and validation accuracy and IoU, and the best validation IoU.

    Without validation (None or absent) the best epoch is picked by the training IoU.
    """
    rows = []
    for model, history in histories.items():
        if not history:
            raise ValueError(f"{model}: empty training history")
        last, best = history[-1], max(history, key=_selection_iou)
        rows.append(
            {
                "model": model,
                "epochs": len(history),
                "accuracy": last.get("accuracy"),
                "val_accuracy": last.get("val_accuracy"),
                "mean_iou": last.get("mean_iou"),
                "val_mean_iou": last.get("val_mean_iou"),
                "best_val_mean_iou": best.get("val_mean_iou"),
                "best_epoch": int(best["epoch"]),
            }
        )
    return rows


def box_mse(pred_boxes: np.ndarray, target_boxes: np.ndarray, valid: np.ndarray) -> float:
    """Mean squared box error in pixels² over the valid images; one (4,) box stands for every image."""
    target = np.asarray(target_boxes, np.float64).reshape(-1, 4)
    pred = np.broadcast_to(np.asarray(pred_boxes, np.float64), target.shape)
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("box_mse needs at least one valid image")
    return float(np.mean((pred[valid] - target[valid]) ** 2))


SCORE_KEYS = ("accuracy", "mean_iou", "hit_rate_iou50", "map50")


def score_rows(
    scores: Mapping[str, Mapping[str, Any]],
    boxes: Mapping[str, np.ndarray],
    target_boxes: np.ndarray,
    valid: np.ndarray,
) -> list[Row]:
    """One row per model: the evaluate() scores in SCORE_KEYS that it has, plus its box MSE."""
    return [
        {
            "model": name,
            **{k: s[k] for k in SCORE_KEYS if k in s},
            "box_mse": box_mse(boxes[name], target_boxes, valid),
        }
        for name, s in scores.items()
    ]


def per_class_rows(values: Mapping[str, Mapping[str, Any]], class_names: Sequence[str]) -> list[Row]:
    """One row per class with each model's value (e.g. AP@0.5) in a column named after the model."""
    return [{"class": c, **{model: v.get(c) for model, v in values.items()}} for c in class_names]


@dataclass(frozen=True)
class Cases:
    """Each image's prediction against its largest object, with what the failure analysis needs.

    Arrays have one entry per image; images without objects have valid False (and are never ranked).
    """

    valid: np.ndarray  # bool: the image has a target object
    target_labels: np.ndarray
    target_boxes: np.ndarray
    pred_labels: np.ndarray
    pred_boxes: np.ndarray
    scores: np.ndarray  # probability of the predicted class
    iou: np.ndarray
    other_object: np.ndarray  # bool: the box overlaps another annotated object by IoU >= the threshold
    area: np.ndarray  # target box area / image area
    near_edge: np.ndarray  # bool: the target box comes within the edge margin of the border
    objects: np.ndarray  # annotated objects in the image
    iou_threshold: float = 0.5

    @property
    def correct(self) -> np.ndarray:
        return self.valid & (self.pred_labels == self.target_labels)

    @property
    def rows(self) -> np.ndarray:
        """Indices of the images with a target."""
        return np.flatnonzero(self.valid)

    @property
    def accuracy(self) -> float:
        return float(self.correct[self.valid].mean()) if self.valid.any() else 0.0

    def ranked(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(best, worst) n images: worst are wrong classes first, then the lowest IoU; best the reverse."""
        rows = self.rows
        order = rows[np.lexsort((self.iou[rows], self.correct[rows]))]
        return order[::-1][:n], order[:n]

    def summary(self, idx: Sequence[int] | np.ndarray, name: str) -> Row:
        """Counts and medians over images idx: wrong class, right class but low IoU, box on another object,
        objects per image (mean), target area (median) and the share of targets near the border."""
        idx = np.asarray(idx, np.int64)
        if len(idx) == 0 or not self.valid[idx].all():
            raise ValueError("summary needs one or more images that have a target")
        right = self.correct[idx]
        return {
            "images": name,
            "wrong_class": int((~right).sum()),
            "low_iou": int((right & (self.iou[idx] < self.iou_threshold)).sum()),
            "other_object": int(self.other_object[idx].sum()),
            "objects": float(self.objects[idx].mean()),
            "area": float(np.median(self.area[idx])),
            "near_edge": float(self.near_edge[idx].mean()),
        }


def analyse_cases(
    probs: np.ndarray, boxes: np.ndarray, ds: LoadedDataset, *, iou_threshold: float = 0.5, edge: float = 0.05
) -> Cases:
    """Score one predicted box per image against the image's largest object, as evaluate() does.

    A box "on another object" overlaps some other annotated object of its image by IoU >= iou_threshold:
    the model chose a different target, rather than misplacing the box. "Near the edge" means within
    `edge` of the image side from the border.
    """
    probs = np.asarray(probs, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(ds)
    if len(probs) != n or len(boxes) != n:
        raise ValueError(f"got {len(probs)} class rows and {len(boxes)} boxes for {n} images")
    height, width = ds.size
    t_labels, t_boxes = np.full(n, -1, np.int64), np.zeros((n, 4), np.float32)
    other = np.zeros(n, bool)
    for i, (gt, labels) in enumerate(zip(ds.boxes, ds.labels)):
        gt = np.asarray(gt, np.float32).reshape(-1, 4)
        target = largest_index(gt)
        if target < 0:
            continue
        t_labels[i], t_boxes[i] = int(np.asarray(labels)[target]), gt[target]
        overlaps = pairwise_iou(boxes[i : i + 1], gt)[0]
        overlaps[target] = 0.0
        other[i] = bool(overlaps.max() >= iou_threshold)
    pred = probs.argmax(1) if n else np.zeros(0, np.int64)
    near = (
        (t_boxes[:, 0] < edge * width)
        | (t_boxes[:, 1] < edge * height)
        | (t_boxes[:, 2] > (1 - edge) * width)
        | (t_boxes[:, 3] > (1 - edge) * height)
    )
    return Cases(
        valid=t_labels >= 0,
        target_labels=t_labels,
        target_boxes=t_boxes,
        pred_labels=pred,
        pred_boxes=boxes,
        scores=probs[np.arange(n), pred],
        iou=box_iou(boxes, t_boxes),
        other_object=other,
        area=(t_boxes[:, 2] - t_boxes[:, 0]) * (t_boxes[:, 3] - t_boxes[:, 1]) / (height * width),
        near_edge=near,
        objects=np.array([len(b) for b in ds.boxes], np.int64),
        iou_threshold=iou_threshold,
    )


def top_confusions(confusion: np.ndarray, class_names: Sequence[str], n: int = 5) -> list[Row]:
    """The n most frequent (true, predicted) pairs off the diagonal, with their share of the true class."""
    counts = np.asarray(confusion, np.int64)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    pairs = sorted(zip(*np.nonzero(off)), key=lambda rc: (-off[rc], rc))[:n]
    return [
        {
            "true": class_names[r],
            "predicted": class_names[c],
            "images": int(off[r, c]),
            "share": float(off[r, c] / counts[r].sum()),
        }
        for r, c in pairs
    ]


def recall_range(confusion: np.ndarray, class_names: Sequence[str]) -> Row:
    """Lowest and highest per-class recall (diagonal / row total) over the classes present, and the
    number of misclassified images."""
    counts = np.asarray(confusion, np.int64)
    totals = counts.sum(1)
    present = np.flatnonzero(totals)
    if not len(present):
        raise ValueError("the confusion matrix is empty")
    recall = counts.diagonal()[present] / totals[present]
    low, high = present[int(recall.argmin())], present[int(recall.argmax())]
    return {
        "lowest": float(recall.min()),
        "lowest_class": class_names[low],
        "highest": float(recall.max()),
        "highest_class": class_names[high],
        "misclassified": int(totals.sum() - counts.diagonal().sum()),
        "images": int(totals.sum()),
    }


def file_rows(folders: Sequence[Path], root: Path, recursive: bool = False) -> list[Row]:
    """The files in each folder (and its subfolders when recursive): path relative to root, size in kB."""
    found = (sorted(Path(folder).rglob("*") if recursive else Path(folder).iterdir()) for folder in folders)
    files = [f for listing in found for f in listing if f.is_file()]
    return [{"file": f.relative_to(root).as_posix(), "kB": f.stat().st_size / 1e3} for f in files]


def file_table(folders: Sequence[Path], root: Path, recursive: bool = False, title: str = "file") -> Table:
    """file_rows as a table: the files under the header title, their sizes in kB to one decimal."""
    return table(file_rows(folders, root, recursive), [(title, "file", "{}"), ("size (kB)", "kB", "{:.1f}")])


# ----------------------------------------------------------------------------------------- quantization
#: How each check of sprint2.quantize.check_targets is shown: label, number format, comparison. Both
#: kinds have the first two; a detector adds map50_drop, a single-box model the last two.
TARGET_LABELS: dict[str, tuple[str, str, str]] = {
    "size_ratio": ("size vs float32", "{:.2f}x", "<="),
    "speedup": ("speedup vs Keras float", "{:.2f}x", ">="),
    "map50_drop": ("mAP@0.5 drop", "{:+.3f}", "<="),
    "accuracy_drop": ("accuracy drop", "{:+.1%}", "<="),
    "mean_iou_drop": ("mean IoU drop", "{:+.3f}", "<="),
}


def target_rows(checks: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[Row]:
    """One row per target the checks hold (in TARGET_LABELS order): its limit, and per variant the
    measured value with "met" or "MISSED"."""
    if not checks:
        raise ValueError("no variants to show")
    first = next(iter(checks.values()))
    rows = []
    for key, (label, fmt, op) in TARGET_LABELS.items():
        if key not in first:
            continue
        row: Row = {"target": label, "limit": f"{op} {fmt.format(first[key]['limit'])}"}
        for variant, check in checks.items():
            row[variant] = f"{fmt.format(check[key]['value'])} {'met' if check[key]['met'] else 'MISSED'}"
        rows.append(row)
    return rows


def missed_targets(check: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Labels of the targets one variant misses (empty when it meets them all)."""
    return [TARGET_LABELS.get(key, (key,))[0] for key, t in check.items() if not t["met"]]


# ------------------------------------------------------------------------------ timing, per model
def bench_model_rows(result: Mapping[str, Any]) -> list[Row]:
    """One row per model of a bench_training result: input, batch, precision, parameters, GFLOP per
    training image, achieved GFLOP/s without a strategy against the matmul peak of its dtype, the
    mirrored x1 overhead, the no-strategy images/s, the largest spread of any of its settings and what
    the input pipeline alone delivers."""
    rows = []
    for name, model in result["models"].items():
        ceiling = model["cpu_ceiling"]
        mine = [r for r in result["rows"] if r["model"] == name]
        rows.append(
            {
                "model": name,
                "input": "x".join(str(v) for v in model["input_hw"]),
                "batch": model["batch_per_replica"],
                "precision": model["precision"],
                "parameters": model["parameters"],
                "images_per_s": mine[0]["images_per_s"],  # the no-strategy row
                "largest_spread": max(r["spread"] for r in mine),
                "train_gflop_per_image": ceiling["train_gflop_per_image"],
                "achieved_gflops": ceiling["achieved_gflops"],
                "peak_dtype": ceiling["peak_dtype"],
                "matmul_gflops": ceiling["matmul_gflops"],
                "fraction_of_peak": ceiling["fraction_of_matmul"],
                "strategy_overhead": model["strategy_overhead"],
                "input_pipeline_images_per_s": ceiling["input_pipeline_images_per_s"],
            }
        )
    return rows


def values_by_model(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """{model: {setting label: row[key]}} over bench_training rows, the shape viz.plot_grouped_bars takes."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        out.setdefault(str(row["model"]), {})[setting_label(row)] = row[key]
    return out


def flops_by_model(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{model: {"training, no strategy": achieved GFLOP/s, "matmul peak (dtype)": GFLOP/s}} of a
    bench_training result, each model against the peak of the dtype it computes in."""
    out = {}
    for name, model in result["models"].items():
        ceiling = model["cpu_ceiling"]
        out[name] = {
            "training, no strategy": ceiling["achieved_gflops"],
            f"matmul peak ({ceiling['peak_dtype']})": ceiling["matmul_gflops"],
        }
    return out


def projection_rows_by_model(result: Mapping[str, Any], gpus: Sequence[int] = (1, 2, 4, 8)) -> list[Row]:
    """projection_rows of every model of a bench_training result, each row with its model's name."""
    return [
        {"model": name, **row}
        for name, model in result["models"].items()
        for row in projection_rows(model["projection"], gpus)
    ]


def allreduce_share_by_model(result: Mapping[str, Any], gpus: int = 8) -> list[Row]:
    """allreduce_share of every model of a bench_training result, with its model's name and gradient MB."""
    return [
        {"model": name, "gradient_mb": model["projection"]["grad_bytes"] / 1e6, **row}
        for name, model in result["models"].items()
        for row in allreduce_share(model["projection"], gpus)
    ]


def bench_figures(result: Mapping[str, Any]) -> dict[str, Any]:
    """The key figures of a bench_training result for the report index, keyed by model (and setting)."""
    models = result["models"]
    mirrored = [r for r in result["rows"] if r["device"] == "cpu" and "mirrored" in r["setting"]]
    return {
        "no_strategy_images_per_s": {n: r["images_per_s"] for n, r in _no_strategy(result).items()},
        "mirrored_images_per_s": {f"{r['model']} x{r['replicas']}": r["images_per_s"] for r in mirrored},
        "mirrored_efficiency": {f"{r['model']} x{r['replicas']}": r["efficiency"] for r in mirrored},
        "strategy_overhead": {n: m["strategy_overhead"] for n, m in models.items()},
        "largest_spread": {n: max(r["spread"] for r in result["rows"] if r["model"] == n) for n in models},
        "train_gflop_per_image": {n: m["cpu_ceiling"]["train_gflop_per_image"] for n, m in models.items()},
        "achieved_gflops": {n: m["cpu_ceiling"]["achieved_gflops"] for n, m in models.items()},
        "fraction_of_peak": {n: m["cpu_ceiling"]["fraction_of_matmul"] for n, m in models.items()},
        "matmul_gflops": dict(result["matmul_gflops"]),
        "input_pipeline_images_per_s": {
            n: m["cpu_ceiling"]["input_pipeline_images_per_s"] for n, m in models.items()
        },
        "projected_speedup_8_gpus": {
            f"{n} {r['link']}": r["speedup"]
            for n, m in models.items()
            for r in m["projection"]["rows"]
            if r["gpus"] == 8
        },
        "gpus": result["gpus"],
        "skipped": [s["setting"] for s in result["skipped"]],
    }


def _no_strategy(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {r["model"]: r for r in result["rows"] if r["setting"].startswith("no strategy")}


def primary_model(result: Mapping[str, Any]) -> str:
    """The model a bench_training result is read for first: the detector when it ran, else the first."""
    names = list(result["models"])
    if not names:
        raise ValueError("the result holds no model")
    return "detector" if "detector" in names else names[0]


# -------------------------------------------------------------------------------------------- scale-out
#: The test scores a worker's row shows, by model kind: the detector's detection metrics, or the
#: single-box models' accuracy and IoU.
WORKER_SCORES: dict[str, tuple[str, ...]] = {
    "detector": ("map50", "map50_95"),
    "single-box": ("accuracy", "mean_iou", "map50"),
}


def worker_score_rows(metrics: Sequence[Mapping[str, Any]]) -> list[Row]:
    """One row per multi-worker training process from its --json metrics: chief, replicas, the epochs
    it trained (from start_epoch, > 1 after a resume) and its test scores (WORKER_SCORES of its kind)."""
    rows = []
    for i, m in enumerate(metrics):
        kind = "detector" if m.get("model") == "detector" else "single-box"
        test = m.get("test", {})
        rows.append(
            {
                "worker": i,
                "model": m.get("model"),
                "chief": m.get("strategy_info", {}).get("is_chief"),
                "replicas": m.get("replicas"),
                "epochs": f"{m['start_epoch']}..{m['epochs']}" if "epochs" in m else None,
                **{f"test {k}": test.get(k) for k in WORKER_SCORES[kind]},
                "train seconds": m.get("train_seconds"),
            }
        )
    return rows
