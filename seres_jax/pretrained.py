"""timm's pretrained data configurations, per model and per published weight tag.

The weights a user brings were trained and evaluated with a preprocessing of their own (input
size, test size, ``crop_pct``, interpolation, mean and std), recorded per weight tag in timm's
``pretrained_cfg``: ``seresnet50.ra2_in1k`` is evaluated at 224 with ``crop_pct`` 0.875,
``seresnet50.a1_in1k`` at 224 with 0.95. ``pretrained.json`` (package data, the record of
``parity_tests/fixtures/record_timm_zoo.py``, which a test keeps equal to it) holds, for every
timm name the registry knows, its default tag and each tag's configuration. An architecture
string names a tag after a dot: ``seresnet50.ra2_in1k:num_classes=10``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["PRETRAINED_FILE", "default_tag", "pretrained_config", "weight_tags"]

PRETRAINED_FILE = Path(__file__).with_name("pretrained.json")
"""The installed ``pretrained.json`` (package data) the functions here read."""
# The DataConfig fields of a timm pretrained_cfg.
_FIELDS = ("input_size", "crop_pct", "interpolation", "mean", "std", "test_input_size",
           "test_crop_pct")  # fmt: skip


@functools.cache
def _table() -> dict[str, Any]:
    models: dict[str, Any] = json.loads(PRETRAINED_FILE.read_text(encoding="utf-8"))["models"]
    return models


def weight_tags(name: str) -> tuple[str, ...]:
    """The weight tags timm publishes for the model ``name`` (none for an unknown name)."""
    return tuple(_table().get(name, {}).get("pretrained_tags", {}))


def default_tag(name: str) -> str | None:
    """The tag ``timm.create_model(name)`` picks; ``None`` for a name timm does not know."""
    entry = _table().get(name)
    return None if entry is None else str(entry["tag"])


def pretrained_config(name: str, tag: str | None = None) -> dict[str, Any] | None:
    """The data configuration (``DataConfig``'s fields) of ``name``'s weights ``tag``
    (default: its default tag); ``None`` for a name timm does not know. An unknown tag is a
    ``KeyError`` naming the known ones."""
    entry = _table().get(name)
    if entry is None:
        return None
    if tag is None or tag == entry["tag"]:
        config = entry["config"]
    elif tag in entry["pretrained_tags"]:
        config = entry["pretrained_tags"][tag]
    else:
        known = ", ".join(entry["pretrained_tags"]) or "none"
        raise KeyError(f"{name} has no weight tag {tag!r}; timm publishes: {known}")
    return {k: config[k] for k in _FIELDS if config.get(k) is not None}
