"""What the docs build generates: API inventory, CLI help pages, figures from their measurements.

Imported by ``docs/hooks.py`` (mkdocs) and by ``parity_tests/test_docs.py``; imports neither torch
nor timm, so ``pip install -e ".[docs]"`` is enough to build the site.
"""
