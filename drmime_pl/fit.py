"""``python -m drmime_pl.fit --config configs/fire.yaml [key=value ...]``: register a pair, log to TensorBoard,
checkpoint, and write the result files.

The command line is :func:`drmime_pl.cli.fit_main`; the job, as a function of a config, is
:func:`drmime_pl.training.fit.fit` (:func:`drmime_pl.register` is its Python face).
"""
from __future__ import annotations

from typing import NoReturn

from .cli import fit_main as main

__all__ = ["main", "run"]


def run() -> NoReturn:
    """The ``drmime-fit`` script and ``python -m drmime_pl.fit``: :func:`main`, then the process ends without Python's
    teardown (:mod:`drmime_pl.process_exit`)."""
    from .process_exit import run_and_exit

    run_and_exit(main)


if __name__ == "__main__":
    run()
