"""drmime_pl: multi-modal image registration by neural mutual information (MINE) and matrix-exponential
transforms optimised on all levels of a Gaussian pyramid at once (DRMIME), on PyTorch Lightning."""

from ._version import __version__
from .api import register, register_many, warp
from .errors import CheckpointError, ConfigError, DrmimeError, ImageError, RegistrationError
from .errors import TransformFileError
from .io.result import Registration

__all__ = ["register", "register_many", "warp", "Registration", "DrmimeError", "ConfigError", "ImageError",
           "CheckpointError", "RegistrationError", "TransformFileError", "__version__"]
