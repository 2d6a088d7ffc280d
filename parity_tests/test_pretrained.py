"""Weight tags: ``--arch seresnet50.ra2_in1k`` picks timm's preprocessing of those weights, for
every model and tag timm publishes (``seres_jax/pretrained.json``, recorded from timm)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from parity_tests.helpers import one_error_line
from seres_cli.main import main
from seres_jax.pretrained import PRETRAINED_FILE, default_tag, pretrained_config, weight_tags
from seres_jax.registry import MODELS, RegistryError, data_config, parse_arch, weight_tag
from seres_jax.train import TrainConfig

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = json.loads((FIXTURES / "timm_data_configs.json").read_text())["models"]


def test_every_recorded_timm_model_is_registered_with_its_tags():
    zoo = json.loads(gzip.decompress((FIXTURES / "timm_zoo.json.gz").read_bytes()))["models"]
    assert set(RECORDED) == set(zoo)
    assert set(RECORDED) <= set(MODELS)
    shipped = json.loads(PRETRAINED_FILE.read_text())["models"]
    assert set(shipped) == set(RECORDED)
    for name, entry in RECORDED.items():
        assert default_tag(name) == entry["tag"]
        assert weight_tags(name) == tuple(entry["pretrained_tags"])


@pytest.mark.parametrize(
    ("arch", "size", "crop", "test_size"),
    [
        ("seresnet50", 224, 0.95, 288),  # timm's default tag: a1_in1k
        ("seresnet50.a1_in1k", 224, 0.95, 288),
        ("seresnet50.ra2_in1k:num_classes=10", 224, 0.875, 288),
        ("seresnextaa101d_32x8d.sw_in12k_ft_in1k_288", 288, 0.95, 320),
        ("legacy_seresnet50.in1k", 224, 0.875, None),
    ],
)
def test_a_tag_picks_its_weights_preprocessing(arch, size, crop, test_size):
    name, tag = arch.partition(":")[0].partition(".")[::2]
    recorded = RECORDED[name]["pretrained_tags"].get(tag, RECORDED[name]["config"])
    assert (recorded["input_size"], recorded["crop_pct"]) == (size, crop)  # the fixture's word
    config = data_config(arch)
    assert (config.input_size, config.crop_pct, config.test_input_size) == (size, crop, test_size)
    assert config.interpolation == recorded["interpolation"]
    assert list(config.mean) == recorded["mean"] and list(config.std) == recorded["std"]
    # What seres train / eval preprocess with, --crop-pct and --image-size still winning.
    options = TrainConfig(model=arch).data_options()
    assert (options.data_config.input_size, options.data_config.crop_pct) == (size, crop)
    options = TrainConfig(model=arch, crop_pct=1.0, image_size=160).data_options()
    assert (options.data_config.input_size, options.data_config.crop_pct) == (160, 1.0)


def test_the_tag_does_not_change_the_network():
    assert parse_arch("seresnet50.ra2_in1k:num_classes=10") == ("seresnet50", {"num_classes": 10})
    assert weight_tag("seresnet50.ra2_in1k:num_classes=10") == "ra2_in1k"
    assert weight_tag("seresnet50:num_classes=10") is None
    assert pretrained_config("seresnet_tiny") is None  # not a timm model: timm's defaults
    assert data_config("seresnet_tiny:base=8").input_size == 224


def test_an_unknown_tag_names_the_published_ones(tmp_path, capsys):
    with pytest.raises(RegistryError, match="timm publishes: a1_in1k, a2_in1k, a3_in1k, ra2_in1k"):
        parse_arch("seresnet50.ra3_in1k")
    with pytest.raises(RegistryError, match="no weight tag"):
        parse_arch("seresnet_tiny.in1k")
    code = main(["train", "--model", "seresnet50.nope", "--workdir", str(tmp_path / "w")])
    line = one_error_line(capsys, code)
    assert "seresnet50 has no weight tag 'nope'" in line
    assert not (tmp_path / "w").exists()
