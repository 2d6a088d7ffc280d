"""seres_cli: the ``seres`` console script (``seres train``, ``seres demo``); see ``main``."""
