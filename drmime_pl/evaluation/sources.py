"""Where each pair's transform comes from: a folder of ``transform.json`` files (``--transforms DIR``), or a
registration whose result files go to ``OUT/transforms/<pair name>/`` (skipped when an earlier run with the same
configuration finished it).

A source is a function ``Pair -> {matrix, fixed_shape, seconds, steps, suspect, reason[, skipped]}``; the matrix
maps a fixed-image pixel (x, y, 1) to the moving-image pixel, as ``Registration.matrix``.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DrmimeError
from .datasets import Pair


def check_matrix(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        raise DrmimeError(f"matrix has shape {m.shape}, expected 3 x 3")
    if not np.isfinite(m).all():
        raise DrmimeError("matrix contains NaN or infinite entries")
    return m


def read_transform(path: Path) -> dict:
    """``transform.json`` -> ``{matrix, fixed_shape, seconds, steps}``. Raises DrmimeError."""
    if not path.is_file():
        raise DrmimeError(f"{path}: no transform.json (the registration did not finish)")
    try:
        data = json.loads(path.read_text())
        matrix = check_matrix(data["matrix"])
        fixed_shape = (int(data["fixed_shape"][0]), int(data["fixed_shape"][1]))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DrmimeError(f"{path}: unusable transform.json ({exc.__class__.__name__}: {exc})") from None
    except DrmimeError as exc:
        raise DrmimeError(f"{path}: {exc}") from None
    seconds = data.get("seconds")
    steps = data.get("steps")
    quality = data.get("quality") if isinstance(data.get("quality"), dict) else {}
    suspect, reason = quality.get("suspect"), quality.get("reason")
    return {"matrix": matrix, "fixed_shape": fixed_shape,
            "seconds": float(seconds) if isinstance(seconds, (int, float)) else math.nan,
            "steps": int(steps) if isinstance(steps, int) else None,
            "suspect": bool(suspect) if isinstance(suspect, bool) else None,
            "reason": reason if isinstance(reason, str) else ""}


def image_size(path: Optional[Path]) -> Optional[Tuple[int, int]]:
    """(H, W) from the file's header, or None when it cannot be read (only used as a cross-check)."""
    if path is None or not path.is_file():
        return None
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except Exception:  # noqa: BLE001
        return None


def transform_from_dir(folder: Path) -> Callable[[Pair], dict]:
    """A transform source that reads ``folder/<pair name>/transform.json`` and checks the fixed image's size."""

    def get(pair: Pair) -> dict:
        t = read_transform(folder / pair.name / "transform.json")
        hw = image_size(pair.fixed_image)
        if hw is not None and hw != t["fixed_shape"]:
            raise DrmimeError(
                f"transform.json is for a {t['fixed_shape'][1]}x{t['fixed_shape'][0]} fixed image but "
                f"{pair.fixed_image} is {hw[1]}x{hw[0]} (W x H): transforms of another data set or scale?")
        return t

    return get


def finished_earlier(folder: Path, config_yaml: str) -> Optional[dict]:
    """The result of an earlier registration of this pair with the same configuration, or None: its
    ``transform.json`` must be complete (readable, with a finite 3 x 3 matrix and ``fixed_shape``) and its
    ``config.yaml`` equal to ``config_yaml``."""
    try:
        if (folder / "config.yaml").read_text() != config_yaml:
            return None
        return read_transform(folder / "transform.json")
    except (OSError, UnicodeDecodeError, DrmimeError):
        return None


def transform_by_registration(cfg, out: Path, redo: bool = False, device_index: Optional[int] = None
                              ) -> Callable[[Pair], dict]:
    """A transform source that registers the pair with ``cfg`` and writes its files to ``out/transforms/<name>/``
    (``device_index``: the GPU to use, for a process of a sharded run; default the first).

    A pair whose folder already holds a complete ``transform.json`` made with the same configuration (a run that
    was interrupted, then started again) is not registered again, unless ``redo``; its result is re-scored.

    The source also has ``.batched(pairs, batch_size)``: an iterator of ``(pair, transform dict or exception)`` in
    the pairs' order, registering ``batch_size`` pairs at a time in one optimisation loop
    (:func:`drmime_pl.training.fit_many.fit_batches`); each pair's files and ``config.yaml`` are those a one-pair
    run writes, so either kind of run re-scores the other's results.
    """
    from omegaconf import OmegaConf

    def setup(pair: Pair):
        """The pair's config and, when an earlier run finished it, its result; else None."""
        folder = out / "transforms" / pair.name
        c = copy.deepcopy(cfg)
        c.output.dir = str(folder)
        if pair.fixed_mask is not None:  # in its config.yaml, so that another mask registers the pair again
            c.data.fixed_mask = str(pair.fixed_mask)
        if c.logging.enabled:
            c.logging.name = f"{c.logging.name}-{pair.name}"
        if not redo:
            done = finished_earlier(folder, OmegaConf.to_yaml(c, resolve=True))
            if done is not None:
                done["skipped"] = True
                return c, done
        stale = folder / "transform.json"
        if stale.exists():
            stale.unlink()  # a failed re-run must not leave an older result to be re-scored later
        for label, p in (("fixed", pair.fixed_image), ("moving", pair.moving_image)):
            if p is None:
                raise DrmimeError(f"no {label} image given")
        return c, None

    def get(pair: Pair) -> dict:
        from ..training.fit import fit

        c, done = setup(pair)
        if done is not None:
            return done
        return _as_transform(fit(c, fixed=str(pair.fixed_image), moving=str(pair.moving_image),
                                 fixed_mask=c.data.fixed_mask, device_index=device_index))

    def batched(pairs: Sequence[Pair], batch_size: int) -> Iterator[Tuple[Pair, Union[dict, Exception]]]:
        from ..training.fit_many import PairSpec, fit_batches

        outcomes: List[Union[dict, Exception, None]] = [None] * len(pairs)
        todo, specs = [], []
        for i, pair in enumerate(pairs):
            try:
                c, done = setup(pair)
            except DrmimeError as exc:
                outcomes[i] = exc
                continue
            if done is not None:
                outcomes[i] = done
            else:
                todo.append(i)
                specs.append(PairSpec(str(pair.fixed_image), str(pair.moving_image), fixed_mask=c.data.fixed_mask,
                                      output_dir=c.output.dir, config=c))
        batch_cfg = copy.deepcopy(cfg)
        batch_cfg.output.dir = str(out)  # the batches' TensorBoard runs: OUT/<logging.log_dir>/<name>-batch/
        batch_cfg.logging.name = f"{cfg.logging.name}-batch"
        ready = 0  # pairs[:ready] have been yielded
        finished = iter(())
        if specs:
            finished = (r for batch in fit_batches(batch_cfg, specs, batch_size, device_index) for r in batch)
        for i in todo + [len(pairs)]:
            while ready < i:  # the pairs before the next one to register: known already
                yield pairs[ready], outcomes[ready]
                ready += 1
            if i < len(pairs):
                result = next(finished)
                outcomes[i] = result if isinstance(result, Exception) else _as_transform(result)

    get.batched = batched
    return get


def _as_transform(result) -> dict:
    """A :class:`~drmime_pl.io.result.Registration` as a transform source's dict."""
    return {"matrix": check_matrix(result.matrix), "fixed_shape": tuple(int(v) for v in result.fixed_shape),
            "seconds": float(result.seconds), "steps": int(result.steps),
            "suspect": result.quality.get("suspect") if result.quality else None,
            "reason": (result.quality or {}).get("reason") or ""}
