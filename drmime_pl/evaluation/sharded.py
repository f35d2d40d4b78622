"""``evaluate --devices N [--num-nodes M]``: the pairs split over processes (CPU cores, GPUs, nodes) by Lightning
Fabric's own launcher, the report merged at the end.

Fabric's ``ddp`` strategy starts the processes (gloo on CPU, NCCL on CUDA GPUs) or, under ``torchrun`` or SLURM
(``srun``), joins the ones the launcher started. Rank ``r`` of ``W`` registers ``pairs[r::W]`` with the
single-process loop (:func:`drmime_pl.evaluation.run.run`): every registration is a one-device run with its own
seed, so it gives what a single-process run gives, and writes ``OUT/transforms/<pair>/`` as that run would (an
earlier complete result with the same config is re-scored, not registered again: a killed sharded run resumes).
Progress goes to ``OUT/.rank<r>.pairs.csv``; at the end each rank writes its results to ``OUT/.rank<r>.json``,
all wait at a barrier, and rank 0 merges the files in the pairs' original order, writes ``pairs.csv``,
``summary.md`` and ``success.png`` with the ordinary report code and deletes the rank files. On several nodes
``OUT`` must be a folder every node sees (a shared file system).

Stop signals: each rank stops as the single-process loop does (after the current optimisation step, completed
pairs kept), writes its rank file and goes to the barrier, and rank 0 writes the report of the pairs done, marked
INTERRUPTED, and exits with 128 + the signal. Ctrl-C reaches every process of the terminal's process group; srun
and torchrun pass SIGTERM on to every rank; and rank 0, stopped by SIGTERM or SIGHUP, passes it on to the
processes it started itself (a local ``--devices N`` run), so ``kill <pid of rank 0>`` stops them all. The other
ranks exit with status 0 once their rank file is written (Fabric's launcher kills every process when one exits
with another status).
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from ..errors import DrmimeError, UsageError
from ..io.atomic import write_json_atomic
from .datasets import Pair
from .metrics import PairResult
from .run import run

#: How long a rank that is done waits at the barrier for the others (a rank may have hours of pairs left).
BARRIER_TIMEOUT = timedelta(days=7)

#: ``fit.accelerator`` -> Fabric's accelerator.
_ACCELERATORS = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "auto": "auto"}


def rank_file(out: Path, rank: int) -> Path:
    return out / f".rank{rank}.json"


def rank_csv(out: Path, rank: int) -> Path:
    return out / f".rank{rank}.pairs.csv"


def make_fabric(accelerator: str, devices: int, num_nodes: int):
    """A Fabric with the ``ddp`` strategy (gloo on CPU, NCCL on CUDA). Raises UsageError for a setting it refuses."""
    if accelerator not in _ACCELERATORS:
        raise UsageError(f"--devices {devices}: accelerator {accelerator!r} cannot run several processes "
                         f"(use cpu, gpu or auto)")
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    try:
        return Fabric(accelerator=_ACCELERATORS[accelerator], devices=devices, num_nodes=num_nodes,
                      strategy=DDPStrategy(timeout=BARRIER_TIMEOUT))
    except Exception as exc:  # noqa: BLE001 - Lightning's MisconfigurationException, ValueError, RuntimeError
        text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise UsageError(f"--devices {devices} --num-nodes {num_nodes} --accelerator {accelerator}: {text}") from None


def run_sharded(pairs: Sequence[Pair], make_source: Callable[[Optional[int]], Callable], mode: str, out: Path,
                accelerator: str, devices: int, num_nodes: int = 1, reraise: bool = False, batch_size: int = 1):
    """Score ``pairs`` over ``devices`` processes on each of ``num_nodes`` nodes. ``make_source(device_index)``
    builds the transform source in each process (``device_index``: its GPU, or None on CPU).

    Returns, in rank 0, ``(results, interrupted)`` as :func:`~drmime_pl.evaluation.run.run` does (results in the
    order of ``pairs``); in the other ranks None (their results are in rank 0's)."""
    fabric = make_fabric(accelerator, devices, num_nodes)
    return fabric.launch(_rank_main, list(pairs), make_source, mode, Path(out), reraise, batch_size)


def _single_process_lightning() -> None:
    """Each registration in a rank is a one-process Lightning run: its logger and checkpoints must act as rank 0's
    (Fabric set ``rank_zero_only.rank`` to this process's rank, which would silence them)."""
    from lightning_fabric.utilities import rank_zero as fabric_rank_zero
    from pytorch_lightning.utilities import rank_zero as pl_rank_zero

    for module in (fabric_rank_zero, pl_rank_zero):
        module.rank_zero_only.rank = 0


def _forward_signal(fabric, signum: int) -> None:
    """Rank 0, stopped by SIGTERM or SIGHUP: pass it on to the processes Fabric's launcher started here (SIGINT,
    Ctrl-C, already reached them through the terminal; a second one would abort their current step)."""
    if signum == signal.SIGINT:
        return
    for proc in getattr(getattr(fabric.strategy, "launcher", None), "procs", None) or []:
        if proc.poll() is None:
            try:
                proc.send_signal(signum)
            except OSError:
                pass


def _rank_main(fabric, pairs: List[Pair], make_source, mode: str, out: Path, reraise: bool, batch_size: int = 1):
    from ..training.signals import signum_of

    rank, world = fabric.global_rank, fabric.world_size
    _single_process_lightning()
    device_index = None
    if fabric.device.type == "cuda":
        device_index = fabric.device.index
    else:
        import torch

        torch.set_num_threads(1)  # one process per core (fit.threads > 0 still overrides it in each fit)
    mine = pairs[rank::world]
    print(f"drmime_pl.evaluate: rank {rank} of {world} ({fabric.device}): {len(mine)} of {len(pairs)} pairs",
          file=sys.stderr, flush=True)
    results, interrupted = run(mine, make_source(device_index), mode, out, reraise=reraise,
                               csv_path=rank_csv(out, rank), prefix=f"rank {rank}: ",
                               batch_size=batch_size)
    if interrupted and rank == 0:
        _forward_signal(fabric, interrupted)
    write_json_atomic({"rank": rank, "world_size": world, "pairs": [p.name for p in mine],
                       "interrupted": int(interrupted or 0),
                       "results": [_result_to_json(r) for r in results]}, rank_file(out, rank))
    try:
        fabric.barrier()
    except KeyboardInterrupt as exc:  # a signal while waiting is seen when the barrier returns
        interrupted = interrupted or signum_of(exc)
    if rank != 0:
        return None
    return merge(pairs, out, world, interrupted)


def merge(pairs: Sequence[Pair], out: Path, world: int, interrupted=False) -> Tuple[List[PairResult], object]:
    """Rank 0: read every rank's file, return ``(results in the order of pairs, interrupted)`` and delete the rank
    files. A missing rank file (a rank that died, or ``OUT`` not shared between nodes) is reported on stderr and its
    pairs are missing from the results, as those of an interrupted run."""
    by_name = {}
    for k in range(world):
        path = rank_file(out, k)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"drmime_pl.evaluate: rank {k}: no results ({path}: {exc.__class__.__name__}); on several nodes "
                  f"--out must be a folder every node sees", file=sys.stderr)
            interrupted = interrupted or signal.SIGTERM
            continue
        interrupted = interrupted or int(data.get("interrupted") or 0) or False
        for item in data.get("results", []):
            result = _result_from_json(item)
            by_name[result.name] = result
    for k in range(world):
        for path in (rank_file(out, k), rank_csv(out, k)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
    return [by_name[p.name] for p in pairs if p.name in by_name], interrupted


def _result_to_json(result: PairResult) -> dict:
    def plain(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
        if hasattr(value, "item"):  # numpy scalars
            return plain(value.item())
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(result).items()}


def _result_from_json(item: dict) -> PairResult:
    fields = {f.name: f for f in dataclasses.fields(PairResult)}
    values = {}
    for key, value in item.items():
        if key not in fields:
            raise DrmimeError(f"rank file: unknown field {key!r}")
        if isinstance(fields[key].default, float):  # the float scores: None was NaN
            value = math.nan if value is None else float(value)
        values[key] = value
    return PairResult(**values)
