"""Typed errors for users' mistakes and for registrations that cannot succeed.

Every message is one line that names the file or setting and says what is wrong. The command line prints it and
exits with status 2 (see :mod:`drmime_pl.cli`); the Python API raises it.
"""


class DrmimeError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""


class ConfigError(DrmimeError, ValueError):
    """A configuration file, key or value is wrong."""


class ImageError(DrmimeError, ValueError):
    """An image or mask file is missing, unreadable, or unusable for registration."""


class CheckpointError(DrmimeError, ValueError):
    """A checkpoint is missing or belongs to another run (other transform model or image pair)."""


class RegistrationError(DrmimeError, RuntimeError):
    """The optimisation failed: the loss became NaN or infinite, or the transform degenerated."""


class TransformFileError(DrmimeError, ValueError):
    """A saved transform (``transform.json``, ``.tfm``) is missing, unreadable or does not fit the images."""


class UsageError(DrmimeError):
    """Bad command line or unusable input list (``drmime_pl.evaluate``): reported in one line, exit status 2."""


class RegistrationInterrupted(DrmimeError):
    """Ctrl-C, SIGTERM or SIGHUP (``signum``) stopped the run after a step; a checkpoint was saved to resume from."""

    signum = 2  # SIGINT
