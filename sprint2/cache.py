"""The on-disk cache of loaded datasets: one ``.npz`` per load, keyed by its files and settings.

A hit costs a stat per file and one read of the arrays, so a notebook's second load is instant. Files
are written atomically (temporary file, then rename); a missing or unreadable cache file is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sprint2.dataset import DroppedBox, Failure, LoadedDataset
from sprint2.voc import Sample

logger = logging.getLogger(__name__)

#: Bump when the cached arrays' meaning changes, so old cache files are never read.
#: 2: JPEGs decoded at reduced scale when that still covers the target.
#: 3: an invalid box is dropped from its image instead of failing it; per-box difficult/truncated.
CACHE_VERSION = 3


def _file_stamp(path: Path, root: Path) -> list[Any]:
    """(relative path, size, mtime_ns) of a file, or (path, None, None) when it is missing."""
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = str(path)
    try:
        st = path.stat()
    except OSError:
        return [rel, None, None]
    return [rel, st.st_size, st.st_mtime_ns]


def cache_key(
    samples: Sequence[Sample],
    root: Path,
    size: tuple[int, int],
    mode: str,
    class_names: Sequence[str] | None,
    split: str | None,
) -> str:
    """Hash of everything a cached load depends on.

    Files are identified by relative path, size and mtime_ns rather than a content hash: a stat per
    file keeps a cache hit instant, while hashing would read every byte on every run (most of a cold
    load's cost). Editing, replacing or touching a file changes its stamp; only a copy that preserves
    both size and mtime would go unnoticed.
    """
    files = [[_file_stamp(s.xml_path, root), _file_stamp(s.image_path, root)] for s in samples]
    payload = {
        "version": CACHE_VERSION,
        "files": files,
        "size": list(size),
        "mode": mode,
        "class_names": list(class_names) if class_names is not None else None,
        "split": split,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_file(cache_dir: Path | str, root: Path, key: str) -> Path:
    """Where the load with this key is cached: ``<cache_dir>/<dataset folder name>-<key prefix>.npz``."""
    return Path(cache_dir) / f"{root.name or 'dataset'}-{key[:24]}.npz"


def _concat(parts: list[np.ndarray], dtype: type, width: int | None = None) -> np.ndarray:
    """The per-image arrays end to end (an empty array of the right shape when there are none)."""
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, width) if width else (0,), dtype)


def save_cached(path: Path, ds: LoadedDataset, root: Path) -> None:
    """Write the arrays and metadata of ``ds`` to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "class_names": ds.class_names,
        "found": ds.found,
        "size": list(ds.size),
        "paths": [_file_stamp(p, root)[0] for p in ds.paths],
        "failures": [[f.path, f.error] for f in ds.failures],
        "dropped": [[d.path, d.index, d.reason] for d in ds.dropped],
    }
    counts = np.array([len(b) for b in ds.boxes], dtype=np.int64)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        images=ds.images,
        counts=counts,
        boxes=_concat(ds.boxes, np.float32, 4),
        labels=_concat(ds.labels, np.int32),
        difficult=_concat(ds.difficult, bool),
        truncated=_concat(ds.truncated, bool),
        meta=np.array(json.dumps(meta)),
    )
    os.replace(tmp, path)
    logger.info("cached %d images to %s", len(ds.paths), path)


def load_cached(path: Path, root: Path) -> LoadedDataset | None:
    """The dataset cached at ``path``, or None when the file is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            counts = npz["counts"]
            cuts = np.cumsum(counts)[:-1]
            ragged = {
                name: np.split(npz[name], cuts) if len(counts) else []
                for name in ("boxes", "labels", "difficult", "truncated")
            }
            images = npz["images"]
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None
    paths = [Path(p) if Path(p).is_absolute() else root / p for p in meta["paths"]]
    logger.info("loaded %d images from cache %s", len(paths), path)
    return LoadedDataset(
        images=images,
        class_names=meta["class_names"],
        paths=paths,
        failures=[Failure(p, e) for p, e in meta["failures"]],
        dropped=[DroppedBox(p, i, r) for p, i, r in meta["dropped"]],
        found=meta["found"],
        size=tuple(meta["size"]),
        **ragged,
    )
