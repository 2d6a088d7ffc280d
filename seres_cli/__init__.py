"""seres_cli: the ``seres`` console script (``seres train``, ``seres demo``); see ``main``."""

from seres import __version__

__all__ = ["__version__"]
