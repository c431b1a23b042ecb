"""What a saved model needs beside its weights to be used on new images: a small JSON card.

`sprint2 train` writes `model.json` next to `model.keras`, `sprint2 quantize` writes `<variant>.json`
beside each `<variant>.tflite`; `predict`, `evaluate` and `quantize` read it to know the classes, the
network input size, how images were resized, and the score threshold chosen on validation data.
Light: no TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sprint2.errors import DataError

CARD_VERSION = 1


@dataclass
class ModelCard:
    """kind: "detector", "improved" or "original"; input_hw: (height, width) of the network input."""

    kind: str
    class_names: list[str]
    input_hw: tuple[int, int]
    resize_mode: str = "stretch"
    score_threshold: float = 0.3
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path | str) -> Path:
        """Writes the card as JSON (path: the card itself, or the model file it belongs to)."""
        path = card_path(path)
        data = {"version": CARD_VERSION, **asdict(self), "input_hw": list(self.input_hw)}
        path.write_text(json.dumps(data, indent=2))
        return path

    @classmethod
    def read(cls, path: Path | str) -> ModelCard:
        """The card of a model file (or the card file itself); DataError naming the file when unusable."""
        path = card_path(path)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != CARD_VERSION:
                raise ValueError(f"card version {data.get('version')!r}, expected {CARD_VERSION}")
            return cls(
                kind=str(data["kind"]),
                class_names=[str(c) for c in data["class_names"]],
                input_hw=(int(data["input_hw"][0]), int(data["input_hw"][1])),
                resize_mode=str(data.get("resize_mode", "stretch")),
                score_threshold=float(data.get("score_threshold", 0.3)),
                extra=dict(data.get("extra", {})),
            )
        except FileNotFoundError:
            raise DataError(
                path,
                "model card missing (train writes model.json, quantize <variant>.json beside each .tflite)",
            ) from None
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise DataError(path, f"not a usable model card ({exc})") from None


def card_path(path: Path | str) -> Path:
    """A model file's card: the .json of the same stem beside it (int8.tflite -> int8.json), else the
    folder's model.json when only that exists (one card shared by the folder); a .json path as is."""
    path = Path(path)
    if path.suffix == ".json":
        return path
    own = path.with_suffix(".json")
    shared = path.parent / "model.json"
    return shared if not own.is_file() and shared.is_file() else own
