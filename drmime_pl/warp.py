"""``python -m drmime_pl.warp``: apply a saved transform (the command line is :func:`drmime_pl.cli.warp_main`).

``drmime_pl.warp`` is also the API function ``warp(moving, matrix, fixed_shape)``. Importing this submodule
(``import drmime_pl.warp``) makes Python bind the package attribute ``drmime_pl.warp`` to this module, so the module
is made callable: ``drmime_pl.warp(moving, matrix, fixed_shape)`` keeps working either way.
"""
from __future__ import annotations

import sys
import types
from typing import NoReturn

from .api import warp as _api_warp
from .cli import warp_main as main


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return _api_warp(*args, **kwargs)


def run() -> NoReturn:
    """The ``drmime-warp`` script and ``python -m drmime_pl.warp``: :func:`main`, then the process ends without Python's
    teardown (:mod:`drmime_pl.process_exit`)."""
    from .process_exit import run_and_exit

    run_and_exit(main)


if __name__ == "__main__":
    run()
else:
    sys.modules[__name__].__class__ = _CallableModule
