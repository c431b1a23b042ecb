"""The ``sprint2`` command line: argument parsing and printing only; the work lives in the modules.

Exit codes: 0 success, 1 the data or a notebook had failures, 2 bad usage (argparse's own code).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sprint2 import quiet
from sprint2.errors import DataError, StrategyError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already states its default.

    Flags and options whose default is None say in words what happens when they are left out.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text.lower() or action.nargs == 0 or default is None or default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser with its full name ("sprint2 bench loading"), the top level first."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from parsers(sub)


_Subparsers = argparse._SubParsersAction  # what add_subparsers returns; each builder adds one command to it


def _parser() -> argparse.ArgumentParser:
    """The whole command line: the top-level options, then one builder per subcommand, in help order."""
    p = argparse.ArgumentParser(
        prog="sprint2",
        description="Generate, inspect, benchmark, train, evaluate, quantize and run VOC object "
        "detectors: the sprint 2 report as reproducible software.",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at INFO level and show TensorFlow's start-up notices",
    )
    sub = p.add_subparsers(dest="command", required=True)
    builders = (_add_generate, _add_inspect, _add_bench, _add_train, _add_evaluate, _add_quantize)
    for add in (*builders, _add_predict, _add_report):
        add(sub)
    for _, parser in parsers(p):
        parser.formatter_class = _HelpFormatter
        for action in parser._actions:  # each subcommand's --help opens with its one-line summary
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    action.choices[choice.dest].description = choice.help
    return p


def _add_generate(sub: _Subparsers) -> None:
    g = sub.add_parser("generate", help="write the deterministic synthetic VOC dataset")
    g.add_argument("out_dir", type=Path, help="folder to write train/ and test/ into")
    g.add_argument("--train", type=int, default=200, help="training images")
    g.add_argument("--test", type=int, default=50, help="test images")
    g.add_argument("--classes", type=int, default=10, help="shape-and-colour classes")
    g.add_argument("--seed", type=int, default=0, help="the same seed writes byte-identical files")
    g.add_argument(
        "--layout",
        choices=["side-by-side", "voc", "folders"],
        default="side-by-side",
        help="image and XML in one folder, canonical Pascal VOC, or images/ and annotations/ folders",
    )
    g.add_argument(
        "--objects",
        type=_int_range,
        help="objects per image, N or LOW-HIGH (default: 1-4; 1 gives the original one-object data)",
    )
    g.add_argument(
        "--sizes",
        type=_float_range,
        help="object sides as a fraction of the shorter image side, LOW-HIGH "
        "(default: 0.25-0.7 for one object per image, 0.1-0.5 otherwise)",
    )


def _add_inspect(sub: _Subparsers) -> None:
    i = sub.add_parser("inspect", help="count images, objects and classes; list every failure")
    i.add_argument("data_dir", type=Path, help="a VOC dataset folder, in any of the three layouts")
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument(
        "--errors",
        choices=["raise", "skip"],
        default="skip",
        help="skip: list each bad file and load the rest; raise: stop at the first bad file",
    )
    i.add_argument(
        "--scheduler",
        help="Dask scheduler address, or 'local' for a LocalCluster (default: no Dask, local threads)",
    )


def _add_bench(sub: _Subparsers) -> None:
    b = sub.add_parser("bench", help="side-by-side benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    _add_bench_loading(bsub)
    _add_bench_training(bsub)
    _add_bench_detector(bsub)


def _add_bench_loading(bsub: _Subparsers) -> None:
    bl = bsub.add_parser("loading", help="images/s of each loading method")
    bl.add_argument("data_dir", type=Path, help="a VOC dataset folder")
    bl.add_argument("--size", type=int, default=128, help="side of the square every image is resized to")
    bl.add_argument(
        "--min-seconds",
        type=float,
        default=2.0,
        help="loading seconds per method and round, whole passes over the data repeated until reached",
    )
    bl.add_argument(
        "--rounds", type=int, default=5, help="rounds the methods take turns in; images/s is their median"
    )
    bl.add_argument("--workers", type=int, help="pool workers of the parallel methods (default: every core)")
    bl.add_argument("--json", action="store_true", help="print the full result as JSON")


def _add_bench_training(bsub: _Subparsers) -> None:
    bt = bsub.add_parser(
        "training", help="images/s of each model without a strategy, on N logical CPUs and on GPUs"
    )
    bt.add_argument("data_dir", type=Path, help="a VOC dataset folder; its training split is used")
    bt.add_argument(
        "--model",
        default="improved,detector",
        help="comma-separated models (detector, improved, original): the single-box kind the original "
        "sprint timed, beside the detector that sprint2 train trains",
    )
    bt.add_argument(
        "--replicas", default="1,2,4", help="comma-separated logical CPU counts, each under MirroredStrategy"
    )
    bt.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help="steady-state training seconds per setting and round, epochs streamed back to back",
    )
    bt.add_argument("--rounds", type=int, default=5, help="rounds the settings take turns in")
    bt.add_argument("--size", type=int, default=64, help="single-box models' input side")
    bt.add_argument("--batch", type=int, default=32, help="single-box models' batch per replica")
    bt.add_argument(
        "--detector-size",
        type=_size,
        help="detector input S or H,W, multiples of 32 (default: its schedule's for the data)",
    )
    bt.add_argument(
        "--detector-batch", type=int, help="detector batch per replica (default: its schedule's for the data)"
    )
    bt.add_argument(
        "--precision",
        choices=["auto", "float32", "mixed_bfloat16"],
        default="auto",
        help="the detector's on CPU settings; auto = mixed_bfloat16 where the CPU has bf16, else float32",
    )
    bt.add_argument(
        "--max-images", type=int, help="train on the first N training images only (default: all of them)"
    )
    bt.add_argument("--json", action="store_true", help="print the full result as JSON")


def _add_bench_detector(bsub: _Subparsers) -> None:
    bd = bsub.add_parser(
        "detector", help="test mAP of the detector's defaults per dataset, time budget and seed"
    )
    bd.add_argument("data_dirs", type=Path, nargs="+", help="VOC dataset folders")
    bd.add_argument("--budgets", default="900", help="comma-separated training budgets in seconds")
    bd.add_argument("--seeds", default="0,1", help="comma-separated seeds; figures are means over them")
    bd.add_argument(
        "--out", type=Path, default=Path("runs/bench-detector"), help="folder for the runs (one per setting)"
    )
    bd.add_argument("--json", action="store_true", help="print the summaries and runs as JSON")


def _add_train(sub: _Subparsers) -> None:
    """`sprint2 train`: what to train and where; the schedule's options come from _add_train_schedule."""
    t = sub.add_parser("train", help="train a model and evaluate it against the trivial baseline")
    t.add_argument("data_dir", type=Path, help="a VOC dataset folder with a test split (else 20%% held out)")
    t.add_argument(
        "--model",
        choices=["detector", "improved", "original"],
        default="detector",
        help="detector (every object) or a single-box model (one class and box per image)",
    )
    t.add_argument(
        "--epochs",
        type=int,
        help="most epochs to train (default: detector from the data, within --budget; others 40)",
    )
    t.add_argument(
        "--batch", type=int, help="batch size per replica (default: detector from its schedule; others 16)"
    )
    t.add_argument(
        "--strategy",
        choices=["auto", "cpu", "gpu", "multiworker"],
        default="auto",
        help="auto: every GPU, else the CPU; cpu; gpu; multiworker: the cluster in TF_CONFIG",
    )
    t.add_argument(
        "--replicas",
        type=int,
        help="replicas to train on: the first N GPUs, or N logical CPUs where there is no GPU; multiworker "
        "checks it against TF_CONFIG (default: every GPU, else one CPU)",
    )
    t.add_argument(
        "--size",
        type=_size,
        help="input size S or H,W (detector: multiples of 32, default from the data; others: default 64)",
    )
    t.add_argument(
        "--out",
        type=Path,
        default=Path("runs/train"),
        help="output folder; a run whose checkpoints are there resumes from them",
    )
    t.add_argument("--seed", type=int, default=0, help="split, shuffling and initialisation seed")
    t.add_argument(
        "--recipe",
        default="auto",
        help="a recipe of sprint2.recipes.RECIPES (detector, synthetic, small-photos), or auto: "
        "detector for the detector; small-photos under 400 training images, synthetic otherwise",
    )
    _add_train_schedule(t)
    t.add_argument("--json", action="store_true", help="print metrics.json on stdout")


def _add_train_schedule(t: argparse.ArgumentParser) -> None:
    """`sprint2 train`'s optimiser, validation, precision and time-budget options."""
    t.add_argument(
        "--learning-rate", type=float, help="peak learning rate (default: the schedule's, or 2e-3)"
    )
    t.add_argument(
        "--weight-decay",
        type=float,
        help="> 0: AdamW with this decoupled weight decay (default: 0, plain Adam)",
    )
    t.add_argument(
        "--val-fraction",
        type=float,
        help="share of the training split held out to pick the best epoch (default: the dataset's own "
        "val split if it has one and the recipe validates, else the recipe's share)",
    )
    t.add_argument(
        "--patience",
        type=int,
        help="epochs without a better validation score before stopping (default: the recipe's, 15 for the "
        "detector and 8 otherwise; without a validation split every epoch trains)",
    )
    t.add_argument(
        "--precision",
        choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
        help="detector (default: auto = mixed_float16 on GPUs, mixed_bfloat16 on CPUs with bf16, else "
        "float32); the single-box models train in float32",
    )
    t.add_argument(
        "--budget",
        type=float,
        help="detector: training time budget in seconds that the epoch count respects (default: 900)",
    )


def _add_evaluate(sub: _Subparsers) -> None:
    e = sub.add_parser("evaluate", help="score a saved model on a split of a dataset beside the baseline")
    e.add_argument("model", type=Path, help="model.keras (its model.json card must be beside it)")
    e.add_argument("data_dir", type=Path, help="a VOC dataset folder")
    e.add_argument("--split", choices=["test", "val", "train"], default="test", help="the split to score")
    e.add_argument("--json", action="store_true", help="print the scores as JSON")


def _add_quantize(sub: _Subparsers) -> None:
    q = sub.add_parser("quantize", help="convert to TFLite variants and measure size, speed, accuracy")
    q.add_argument("model", type=Path, help="model.keras (its model.json card must be beside it)")
    q.add_argument("data_dir", type=Path, help="a VOC dataset folder; its test split is measured")
    q.add_argument(
        "--out", type=Path, help="folder for the .tflite files (default: tflite/ beside the model)"
    )
    q.add_argument(
        "--qat",
        action="store_true",
        help="detector: also fine-tune quantization-aware (tf_keras twin, one device) and measure qat_int8",
    )
    q.add_argument("--qat-epochs", type=int, default=2, help="epochs of quantization-aware fine-tuning")
    q.add_argument(
        "--qat-control",
        action="store_true",
        help="with --qat: also fine-tune the float twin the same way and report its mAP (the control)",
    )
    q.add_argument("--rounds", type=int, default=5, help="rounds the variants take turns in for latency")
    q.add_argument("--min-seconds", type=float, default=1.0, help="seconds per variant, round and batch size")
    q.add_argument("--batch", type=int, default=8, help="images per call for the batched latency")
    q.add_argument(
        "--max-images", type=int, help="measure on the first N test images only (default: all of them)"
    )
    q.add_argument("--threads", type=int, help="LiteRT interpreter threads (default: every core)")
    q.add_argument("--json", action="store_true", help="print the full result as JSON")


def _add_predict(sub: _Subparsers) -> None:
    pr = sub.add_parser("predict", help="run a trained model on image files and folders")
    pr.add_argument("model", type=Path, help="a .keras or .tflite model with its model.json beside it")
    pr.add_argument("paths", type=Path, nargs="+", help="image files and folders (searched recursively)")
    pr.add_argument(
        "--out", type=Path, default=Path("predictions"), help="folder for the drawn images, XML and JSON"
    )
    pr.add_argument("--score", type=float, help="score threshold (default: the model card's)")
    pr.add_argument("--batch", type=int, default=16, help="images per model call")
    pr.add_argument("--json", action="store_true", help="print detections.json on stdout")


def _add_report(sub: _Subparsers) -> None:
    r = sub.add_parser("report", help="run every notebook headless into an HTML report")
    r.add_argument("--quick", action="store_true", help="small synthetic data, one or two epochs")
    r.add_argument("--data", type=Path, help="a VOC dataset (default: generated synthetic data)")
    r.add_argument("--out", type=Path, default=Path("reports"), help="folder for the notebooks and HTML")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sprint2`` console script.

    Run as a command (``argv`` None), TensorFlow's start-up notices are dropped from stderr unless
    ``--verbose``; a caller that passes ``argv`` (tests, other programs) keeps its stderr as it is.
    """
    args = _parser().parse_args(argv)
    if argv is None and not args.verbose:
        quiet.filter_process_stderr()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return _COMMANDS[args.command](args)
    except DataError as exc:
        print(f"sprint2: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"sprint2: error: {exc}", file=sys.stderr)
        return 2
    except StrategyError as exc:  # a lost worker, logical CPUs asked for too late: the user acts on it
        print(f"sprint2: error: {exc}", file=sys.stderr)
        return 1


def _range_parts(text: str) -> list[str]:
    """'N' or 'LOW-HIGH' split into one or two parts; ArgumentTypeError (exit 2) otherwise."""
    parts = text.split("-")
    if not 1 <= len(parts) <= 2 or not all(p.strip() for p in parts):
        raise argparse.ArgumentTypeError(f"expected N or LOW-HIGH, got {text!r}")
    return parts


def _int_range(text: str) -> tuple[int, int]:
    try:
        values = [int(p) for p in _range_parts(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers N or LOW-HIGH, got {text!r}") from None
    return values[0], values[-1]


def _float_range(text: str) -> tuple[float, float]:
    try:
        values = [float(p) for p in _range_parts(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers LOW-HIGH, got {text!r}") from None
    return values[0], values[-1]


def _generate(args: argparse.Namespace) -> int:
    from sprint2.synthetic import OBJECT_COUNTS, generate

    objects = args.objects or OBJECT_COUNTS
    out = generate(
        args.out_dir,
        train=args.train,
        test=args.test,
        classes=args.classes,
        seed=args.seed,
        layout=args.layout,
        objects=objects,
        sizes=args.sizes,
    )
    each = f"{objects[0]}" if objects[0] == objects[1] else f"{objects[0]}-{objects[1]}"
    print(
        f"wrote {args.train} train and {args.test} test images ({args.layout}, objects per image: {each}) "
        f"to {out}"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from sprint2.loading import inspect_dataset

    _need_dir(args.data_dir)
    summary = inspect_dataset(args.data_dir, errors=args.errors, scheduler=args.scheduler)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{args.data_dir}: {summary['images']} images, {summary['objects']} objects, "
            f"{len(summary['classes'])} classes, {len(summary['failed'])} failed, "
            f"{len(summary['dropped_boxes'])} boxes dropped"
        )
        _table([{"class": k, "objects": v} for k, v in summary["classes"].items()])
        for failure in summary["failed"]:
            print(f"FAILED {failure['path']}: {failure['error']}")
        for box in summary["dropped_boxes"]:  # the image loaded without this box
            print(f"DROPPED {box['path']}: object {box['index']}: {box['reason']}")
    return 1 if summary["failed"] else 0


def _numbers(text: str, kind: type, option: str) -> list:
    """A comma-separated option as a list of numbers."""
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option}: expected comma-separated numbers, got {text!r}") from None


def _bench_detector(args: argparse.Namespace) -> int:
    from sprint2.bench_detector import bench_detector

    result = bench_detector(
        args.data_dirs,
        budgets=_numbers(args.budgets, float, "--budgets"),
        seeds=_numbers(args.seeds, int, "--seeds"),
        out_dir=args.out,
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _table([s.row() for s in result.summaries])
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.bench == "detector":
        return _bench_detector(args)
    _need_dir(args.data_dir)
    if args.bench == "loading":
        from sprint2.bench_loading import bench_loading

        result = bench_loading(
            args.data_dir,
            size=args.size,
            rounds=args.rounds,
            min_seconds=args.min_seconds,
            workers=args.workers,
        )
        if args.json:
            print(json.dumps(result, indent=2))
            return 0
        columns = "images_per_s spread seconds_per_pass cpu_ms_per_image".split()
        _table([{"method": k, **{c: v[c] for c in columns}} for k, v in result["methods"].items()])
        for key, value in result.items():
            if key not in ("methods", "ratios_from", "spread_definition"):
                print(f"{key}: {value}")
        return 0
    from sprint2.bench_training import bench_training

    replicas = _numbers(args.replicas, int, "--replicas")
    result = bench_training(
        args.data_dir,
        models=[m.strip() for m in args.model.split(",") if m.strip()],
        replicas=replicas,
        min_seconds=args.min_seconds,
        rounds=args.rounds,
        size=args.size,
        batch=args.batch,
        detector_size=args.detector_size,
        detector_batch=args.detector_batch,
        precision=args.precision,
        max_images=args.max_images,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    columns = "model setting replicas precision images_per_s spread first_epoch_s speedup efficiency"
    _table([{k: row[k] for k in [*columns.split(), "achieved_gflops"]} for row in result["rows"]])
    for name, model in result["models"].items():
        ceiling = model["cpu_ceiling"]
        overhead = model["strategy_overhead"]
        print(
            f"{name}: {ceiling['train_gflop_per_image']:.3f} GFLOP per training image, "
            f"{ceiling['achieved_gflops']:.1f} GFLOP/s without a strategy = "
            f"{ceiling['fraction_of_matmul']:.1%} of the {ceiling['peak_dtype']} matmul peak "
            f"({ceiling['matmul_gflops']:.0f} GFLOP/s); mirrored x1 overhead "
            + ("n/a" if overhead is None else f"{overhead:+.1%}")
        )
    for item in result["skipped"]:
        print(f"skipped {item['setting']}: {item['reason']}")
    return 0


def _size(text: str) -> int | tuple[int, int]:
    """--size: S (square) or H,W."""
    try:
        parts = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be S or H,W, got {text!r}") from None
    if len(parts) == 1 and parts[0] > 0:
        return parts[0]
    if len(parts) == 2 and min(parts) > 0:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"size must be S or H,W with positive numbers, got {text!r}")


def _train(args: argparse.Namespace) -> int:
    _need_dir(args.data_dir)
    if args.val_fraction is not None and not 0.0 <= args.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.budget is not None and args.budget <= 0:
        raise ValueError(f"--budget must be positive seconds, got {args.budget}")
    from sprint2.experiment import run_training
    from sprint2.loading import LoadOptions
    from sprint2.recipes import DEFAULT_SIZE

    detector = args.model == "detector"
    if args.size is not None:
        load = LoadOptions(size=args.size, errors="skip")
    else:  # the detector's size comes from its schedule
        load = None if detector else LoadOptions(size=DEFAULT_SIZE, errors="skip")
    result = run_training(
        args.data_dir,
        model=args.model,
        recipe=args.recipe,
        out_dir=args.out,
        strategy=args.strategy,
        replicas=args.replicas,
        seed=args.seed,
        load=load,
        epochs=args.epochs,
        batch_size=args.batch,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        val_fraction=args.val_fraction,
        patience=args.patience,
        precision=args.precision,
        time_budget_s=args.budget,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['model']}: strategy {result['strategy']} with {result['replicas']} replica(s), "
            f"recipe {result['recipe']}, {result['precision']}, "
            f"{result['epochs']} epochs, {result['images_per_s']:.1f} images/s"
            + (f" (resumed at epoch {result['start_epoch']})" if result.get("start_epoch", 1) > 1 else "")
        )
        _scores_table(result["test"], result["baseline"])
        print(f"saved to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    _need_dir(args.data_dir)
    from sprint2.experiment import evaluate_model

    result = evaluate_model(args.model, args.data_dir, split=args.split)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['model']} ({result['kind']}) on {result['images']} {result['split']} images, "
            f"score threshold {result['score_threshold']:.3f}"
        )
        _scores_table(result["scores"], result["baseline"])
    return 0


def _scores_table(scores: dict[str, Any], baseline: dict[str, Any]) -> None:
    """The plain numbers (not the per-class dicts) of a model and the baseline, one row each."""
    rows = [
        {"": name, **{k: v for k, v in part.items() if not isinstance(v, dict)}}
        for name, part in (("model", scores), ("baseline", baseline))
    ]
    _table(rows)


def _quantize(args: argparse.Namespace) -> int:
    from sprint2.quantize import quantize_report

    if not args.model.is_file():
        raise FileNotFoundError(f"{args.model}: model file not found")
    _need_dir(args.data_dir)
    if args.qat_epochs < 0 or args.rounds < 1 or not args.min_seconds > 0 or args.batch < 1:
        raise ValueError("need --qat-epochs >= 0, --rounds >= 1, --min-seconds > 0 and --batch >= 1")
    out = args.out or args.model.parent / "tflite"
    result = quantize_report(
        args.model,
        args.data_dir,
        out_dir=out,
        rounds=args.rounds,
        min_seconds=args.min_seconds,
        batch_size=args.batch,
        max_images=args.max_images,
        num_threads=args.threads,
        qat=args.qat,
        qat_epochs=args.qat_epochs,
        qat_control=args.qat_control,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [result["reference"], *result["variants"]]
    _table([{k: v for k, v in row.items() if not isinstance(v, (list, dict))} for row in rows])
    qat = result.get("qat")
    if qat and qat.get("error"):
        print(f"quantization-aware training failed at {qat.get('stage')}: {qat['error']}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from sprint2.predict import load_predictor, run_predict

    if args.score is not None and not 0.0 <= args.score <= 1.0:
        raise ValueError(f"--score must be in [0, 1], got {args.score}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    try:
        predictor = load_predictor(args.model)
    except DataError as exc:  # an unusable model or card is a usage error, not a bad image
        print(f"sprint2: error: {exc}", file=sys.stderr)
        return 2
    result = run_predict(predictor, args.paths, args.out, score_threshold=args.score, batch_size=args.batch)
    for error in result["errors"]:
        print(f"sprint2: FAILED {error['path']}: {error['reason']}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        found = sum(len(image["detections"]) for image in result["images"])
        print(
            f"{len(result['images'])} images, {found} detections, {len(result['errors'])} failed; "
            f"wrote {args.out}"
        )
    return 1 if result["errors"] else 0


def _report(args: argparse.Namespace) -> int:
    from sprint2.errors import ReportError
    from sprint2.report import run_report

    try:
        runs = run_report(args.out, data_dir=args.data, quick=args.quick, progress=sys.stdout)
    except ReportError as exc:
        print(f"sprint2: report failed: {exc}", file=sys.stderr)
        return 1
    _table([{"notebook": r.name, "status": r.status, "seconds": r.seconds} for r in runs])
    print(f"index: {Path(args.out).resolve() / 'index.html'}")
    return 0


def _table(rows: list[dict[str, Any]]) -> None:
    """Print dicts as an aligned plain-text table (sprint2.table.Table, light to import)."""
    from sprint2.table import Table

    if rows:
        print(Table(rows))


def _need_dir(path: Path) -> None:
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: not a directory")


_COMMANDS = {
    "generate": _generate,
    "inspect": _inspect,
    "bench": _bench,
    "train": _train,
    "evaluate": _evaluate,
    "quantize": _quantize,
    "predict": _predict,
    "report": _report,
}

if __name__ == "__main__":
    sys.exit(main())
