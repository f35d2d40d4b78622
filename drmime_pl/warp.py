"""``python -m drmime_pl.warp``: apply a saved transform (the command line is :func:`drmime_pl.cli.warp_main`).

``drmime_pl.warp`` is also the API function ``warp(moving, matrix, fixed_shape)``. Importing this submodule
(``import drmime_pl.warp``) makes Python bind the package attribute ``drmime_pl.warp`` to this module, so the module
is made callable: ``drmime_pl.warp(moving, matrix, fixed_shape)`` keeps working either way.
"""
from __future__ import annotations

import sys
import types

from .api import warp as _api_warp
from .cli import warp_main as main  # noqa: F401


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return _api_warp(*args, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
else:
    sys.modules[__name__].__class__ = _CallableModule
