"""Landmark data sets: the pairs to evaluate and their points.

An ANHIR/BIRL pair list (:func:`read_pairs_csv`, ``--pairs``) or a FIRE folder as it ships (:func:`discover_fire`,
``--fire``; pairs from its ground-truth files, category = first letter of the name), narrowed by globs
(:func:`select_pairs`); the landmarks of a pair, paired up to the shorter list (:func:`read_points`). The formats
are described in :mod:`drmime_pl.evaluate` and the README.
"""
from __future__ import annotations

import csv
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DrmimeError, UsageError
from ..io.landmarks import read_fire_control_points, read_landmarks_csv

REQUIRED_PAIR_COLUMNS = ("name", "fixed_image", "moving_image", "fixed_landmarks", "moving_landmarks")
#: What a list of pairs to register only (``python -m drmime_pl.fit --pairs``) needs; landmark columns may be there.
IMAGE_PAIR_COLUMNS = REQUIRED_PAIR_COLUMNS[:3]


@dataclass
class Pair:
    """One image pair to score. ``control_points`` (FIRE) replaces the two landmark files (ANHIR). ``fixed_mask``:
    the pixels of the fixed image to register on (``data.fixed_mask`` of this pair)."""

    name: str
    group: str
    fixed_image: Optional[Path]
    moving_image: Optional[Path]
    fixed_landmarks: Optional[Path] = None
    moving_landmarks: Optional[Path] = None
    control_points: Optional[Path] = None
    fixed_mask: Optional[Path] = None


def _check_name(name: str, where: str) -> None:
    if not name:
        raise UsageError(f"{where}: empty pair name")
    if name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"{where}: pair name {name!r} must be a plain folder name (no / or \\)")


def read_pairs_csv(path, landmarks: bool = True) -> List[Pair]:
    """ANHIR/BIRL pair list. Raises :class:`UsageError` for a missing file, missing columns or bad names.

    A row with an empty path cell stays in the list (it is reported as a failed pair). An optional ``fixed_mask``
    column gives a pair its mask (an empty cell: none). ``landmarks=False``: only
    ``name, fixed_image, moving_image`` are required (a list to register, not to score); landmark columns that are
    there are read all the same.
    """
    required = REQUIRED_PAIR_COLUMNS if landmarks else IMAGE_PAIR_COLUMNS
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: pairs file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            # cells beyond the header come under the key None: ignored
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: unreadable pairs file ({exc})") from None
    missing = [c for c in required if c not in fields]
    if missing:
        raise UsageError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}"
                         " [, modality, fixed_mask]")
    base = path.parent
    resolve = lambda cell: (base / cell) if cell else None  # noqa: E731 - absolute cells stay absolute
    pairs, seen = [], set()
    for i, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue
        name = row["name"]
        _check_name(name, f"{path}, line {i}")
        if name in seen:
            raise UsageError(f"{path}, line {i}: pair name {name!r} appears twice")
        seen.add(name)
        pairs.append(Pair(name=name, group=row.get("modality", ""), fixed_image=resolve(row["fixed_image"]),
                          moving_image=resolve(row["moving_image"]),
                          fixed_landmarks=resolve(row.get("fixed_landmarks", "")),
                          moving_landmarks=resolve(row.get("moving_landmarks", "")),
                          fixed_mask=resolve(row.get("fixed_mask", ""))))
    if not pairs:
        raise UsageError(f"{path}: no pairs listed")
    return pairs


def fire_category(name: str) -> str:
    """FIRE's category is the first letter of the pair name: S, P or A."""
    return name[:1].upper()


def _fire_image(images: Path, stem: str) -> Path:
    jpg = images / f"{stem}.jpg"
    if jpg.exists():
        return jpg
    others = sorted(p for p in images.glob(f"{stem}.*") if p.is_file())
    return others[0] if others else jpg


def discover_fire(folder) -> List[Pair]:
    """All pairs with ground truth: ``Ground Truth/control_points_<pair>_1_2.txt``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: FIRE folder not found")
    truth = folder / "Ground Truth"
    if not truth.is_dir():
        raise UsageError(f"{folder}: no 'Ground Truth' folder (expected FIRE's layout: Images/, Ground Truth/)")
    prefix, suffix = "control_points_", "_1_2.txt"
    names = sorted(p.name[len(prefix):-len(suffix)] for p in truth.glob(f"{prefix}*{suffix}") if p.is_file())
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"{truth}: no control_points_<pair>_1_2.txt files")
    for n in names:  # a name becomes a folder under OUT/transforms/: no "..", no separators
        _check_name(n, str(truth / f"{prefix}{n}{suffix}"))
    images = folder / "Images"
    return [Pair(name=n, group=fire_category(n), fixed_image=_fire_image(images, f"{n}_1"),
                 moving_image=_fire_image(images, f"{n}_2"), control_points=truth / f"{prefix}{n}{suffix}")
            for n in names]


def select_pairs(pairs: Sequence[Pair], only: Sequence[str] = (), exclude: Sequence[str] = ()) -> List[Pair]:
    """Keep pairs whose name matches any ``only`` glob (all when none given) and no ``exclude`` glob."""
    keep = [p for p in pairs if not only or any(fnmatch.fnmatchcase(p.name, g) for g in only)]
    return [p for p in keep if not any(fnmatch.fnmatchcase(p.name, g) for g in exclude)]


def pair_up(fixed: np.ndarray, moving: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Landmark files of unequal length pair up to the shorter (ANHIR's rule)."""
    n = min(len(fixed), len(moving))
    return fixed[:n], moving[:n]


def read_points(pair: Pair) -> Tuple[np.ndarray, np.ndarray]:
    """(fixed, moving) ``N x 2`` points of a pair, paired up to the shorter list. Raises DrmimeError."""
    if pair.control_points is not None:
        fixed, moving = read_fire_control_points(pair.control_points)
    else:
        if pair.fixed_landmarks is None or pair.moving_landmarks is None:
            which = "fixed_landmarks" if pair.fixed_landmarks is None else "moving_landmarks"
            raise DrmimeError(f"no {which} file given")
        fixed, moving = read_landmarks_csv(pair.fixed_landmarks), read_landmarks_csv(pair.moving_landmarks)
    fixed, moving = pair_up(fixed, moving)
    if len(fixed) == 0:
        raise DrmimeError("no landmarks to compare")
    return fixed, moving
