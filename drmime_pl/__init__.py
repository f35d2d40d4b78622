"""drmime_pl: multi-modal image registration by neural mutual information (MINE) and matrix-exponential
transforms optimised on all levels of a Gaussian pyramid at once (DRMIME), on PyTorch Lightning."""

__version__ = "0.1.0"

from .api import register, warp  # noqa: E402
from .errors import CheckpointError, ConfigError, DrmimeError, ImageError, RegistrationError  # noqa: E402
from .errors import TransformFileError  # noqa: E402
from .result import Registration  # noqa: E402

__all__ = ["register", "warp", "Registration", "DrmimeError", "ConfigError", "ImageError", "CheckpointError",
           "RegistrationError", "TransformFileError", "__version__"]
