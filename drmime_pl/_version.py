"""The version of drmime_pl (a leaf module: what reports the version need not import the package)."""

__version__ = "0.1.0"
