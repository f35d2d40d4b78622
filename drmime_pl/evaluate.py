"""``python -m drmime_pl.evaluate``: register a landmark data set (ANHIR/BIRL pairs or FIRE) and score it.

Usage::

    python -m drmime_pl.evaluate --pairs samples/birl/pairs.csv --out eval/birl model.transform=affine
    python -m drmime_pl.evaluate --fire /data/FIRE --config configs/fire.yaml --out eval/fire
    python -m drmime_pl.evaluate --fire /data/FIRE --transforms eval/fire/transforms --out eval/fire-again
    python -m drmime_pl.evaluate --pairs pairs.csv --out eval/run --batch-size 8
    python -m drmime_pl.evaluate --pairs pairs.csv --out eval/run --devices 4 --accelerator gpu

Inputs
------
``--pairs PAIRS.csv`` (ANHIR/BIRL): columns ``name, fixed_image, moving_image, fixed_landmarks, moving_landmarks``
and optionally ``modality`` (the group of the summary); paths relative to the CSV's folder. Landmark files are
CSVs with columns ``,X,Y``.

``--fire FIRE_DIR``: the folder as FIRE ships it. Pairs are discovered from the ground truth,
``FIRE_DIR/Ground Truth/control_points_<pair>_1_2.txt`` (lines ``x1 y1 x2 y2``, image 1 = fixed); the images are
``FIRE_DIR/Images/<pair>_1.jpg`` (fixed) and ``<pair>_2.jpg`` (moving). The category is the first letter of the
pair name (S, P or A).

Transforms
----------
When evaluate registers, each pair's result files go to ``OUT/transforms/<pair name>/`` (``transform.json`` and
whatever ``output.*`` asks for). ``--transforms DIR`` skips registration and reads ``DIR/<pair name>/transform.json``
instead (its ``matrix``: fixed px -> moving px, ``fixed_shape``; ``seconds`` and ``steps`` if present), so
``--transforms OUT/transforms`` re-scores an earlier run, and any other method can be scored by writing that layout.

Scores
------
TRE of a landmark = ``| matrix(fixed_i) - moving_i |`` in moving-image pixels (ANHIR's rule); rTRE = TRE /
diagonal of the fixed image. Per pair: mean, median, max. ANHIR ranks by the median over pairs of the per-pair
median rTRE; FIRE by the area under the success-rate curve of the per-pair mean TRE over 0..25 px. A pair that
could not be scored (``failed``) never counts as a success; medians and means are over the scored pairs.

Batches
-------
``--batch-size N`` registers N pairs at a time in one optimisation loop (:mod:`drmime_pl.training.fit_many`): each
pair is prepared, judged and written as a one-pair run does it, with its own MINE network, coefficients, sampler and
stopping rule; the next N pairs are prepared while one batch is optimised, and on a CPU the pairs of a batch are
prepared and finished on ``fit.workers`` threads (one per core). Results equal one-at-a-time runs' up to run-to-run
noise, and the files are the same, so either kind of run re-scores the other's pairs. A batch's progress lines come
when it is done; its TensorBoard run is ``OUT/logs/<logging.name>-batch/version_k``.

Several processes
-----------------
``--devices N [--num-nodes M] [--accelerator cpu|gpu|auto]`` splits the pairs over N processes per node (CPU cores
or GPUs; torchrun and SLURM jobs for several nodes) with Lightning Fabric's launcher; rank 0 merges the results into
the same report a single process writes (:mod:`drmime_pl.evaluation.sharded`; README, "Many pairs").

Exit status: 0 when the evaluation completed (failed pairs included), 2 for bad usage, 130 / 143 / 129 when
stopped by SIGINT / SIGTERM / SIGHUP (the outputs then cover the pairs done so far). Started again with the same
``--out``, pairs already registered with the same config are re-scored, not registered again (``--redo``).
"""
from __future__ import annotations

from typing import NoReturn

from .cli import evaluate_main as main
from .evaluation.metrics import PairResult, auc, auc_steps, success_curve, summarise  # documented for scripts

__all__ = ["main", "run", "PairResult", "auc", "auc_steps", "success_curve", "summarise"]


def run() -> NoReturn:
    """The ``drmime-evaluate`` script and ``python -m drmime_pl.evaluate``: :func:`main`, then the process ends
    without Python's teardown (:mod:`drmime_pl.process_exit`)."""
    from .process_exit import run_and_exit

    run_and_exit(main)


if __name__ == "__main__":
    run()
