"""seres_cli: the ``seres`` console script (``seres train``, ``seres demo``); see ``main``."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("seres")
except _metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"
