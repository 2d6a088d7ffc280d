"""A run's starting weights (``seres_jax.train.initial``, ``seres train --initial-checkpoint``):
timm's ``adapt_input_conv`` against its recorded outputs
(``fixtures/record_timm_adapt_input_conv.py``), the classifier re-initialised and the stem
adapted on a real architecture, and a checkpoint of another architecture refused naming its
keys."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from seres_jax.convert import ConversionError, flax_to_state_dict
from seres_jax.formats import save_state_dict
from seres_jax.registry import variables_template
from seres_jax.train.initial import adapt_input_conv, initial_weights

FIXTURES = Path(__file__).parent / "fixtures"
ARCH = "seresnet18:channels=8-16-32-64,layers=1-1-1-1"


def test_adapt_input_conv_equals_timms():
    recorded = np.load(FIXTURES / "timm_adapt_input_conv.npz")
    for n in (1, 2, 4, 5):
        np.testing.assert_array_equal(adapt_input_conv(n, recorded["rgb"]), recorded[f"rgb/{n}"])
    np.testing.assert_array_equal(adapt_input_conv(1, recorded["s2d"]), recorded["s2d/1"])
    np.testing.assert_array_equal(adapt_input_conv(3, recorded["rgb"]), recorded["rgb"])
    with pytest.raises(ConversionError, match="cannot adapt a 12-channel input kernel to 2"):
        adapt_input_conv(2, recorded["s2d"])


def _variables(arch: str, seed: int):
    # Random values of the architecture's shapes: what initial_weights reads of an
    # initialisation, without compiling one.
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda t: rng.standard_normal(t.shape).astype(t.dtype),
                        variables_template(arch))  # fmt: skip


def test_head_reinitialised_stem_adapted_rest_loaded(tmp_path):
    """A 6-class RGB checkpoint onto a 3-class greyscale run: every tensor is the
    checkpoint's but the classifier (the run's own initialisation, as timm drops it) and the
    stem convolution (timm's adapt_input_conv); the record names both."""
    source = _variables(f"{ARCH},num_classes=6", 1)
    path = tmp_path / "source.safetensors"
    save_state_dict(flax_to_state_dict(source), path)
    fresh = _variables(f"{ARCH},num_classes=3,in_chans=1", 2)
    start = initial_weights(path, fresh)
    assert start.reinitialised == ("fc.weight", "fc.bias")
    assert start.adapted == ("conv1.weight",)
    got, theirs, mine = (flax_to_state_dict(v) for v in (start.variables, source, fresh))
    for key, value in got.items():
        if key in start.reinitialised:
            np.testing.assert_array_equal(value, mine[key])
        elif key in start.adapted:
            np.testing.assert_array_equal(value, adapt_input_conv(1, theirs[key]))
        else:
            np.testing.assert_array_equal(value, theirs[key])
    assert start.record() == {
        "source": str(path), "sha256": start.sha256,
        "reinitialised": ["fc.weight", "fc.bias"], "adapted": ["conv1.weight"],
    }  # fmt: skip
    same = initial_weights(path, _variables(f"{ARCH},num_classes=6", 5))
    assert same.reinitialised == () and same.adapted == () and same.sha256 == start.sha256
    jax.tree.map(np.testing.assert_array_equal, same.variables, source)


def test_another_architecture_is_refused_naming_its_keys(tmp_path):
    path = tmp_path / "deeper.safetensors"
    deeper = _variables("seresnet18:channels=8-16-32-64,layers=2-1-1-1", 1)
    save_state_dict(flax_to_state_dict(deeper), path)
    with pytest.raises(ConversionError, match=r"layer1\.1\.conv1\.weight"):
        initial_weights(path, _variables(f"{ARCH},num_classes=1000", 2))
    wider = _variables("seresnet18:channels=8-16-32-128,layers=1-1-1-1", 1)
    save_state_dict(flax_to_state_dict(wider), path, force=True)
    with pytest.raises(ConversionError, match=r"layer4\.0\.conv1\.weight"):
        initial_weights(path, _variables(f"{ARCH},num_classes=1000", 2))


def test_seres_train_refuses_another_architecture_in_one_error(tmp_path, capsys):
    """``seres train --initial-checkpoint`` of a narrower network: the error names the file,
    the run's architecture and the differing keys, exit 2, no work directory."""
    from seres_cli.main import main

    path = tmp_path / "narrow.safetensors"
    save_state_dict(flax_to_state_dict(_variables("seresnet_tiny:in_ch=1,base=8", 1)), path)
    workdir = tmp_path / "run"
    code = main(["train", "--initial-checkpoint", str(path), "--workdir", str(workdir),
                 "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not workdir.exists()
    first = err.splitlines()[0]
    assert first.startswith(f"seres: error: checking {path} against seresnet_tiny:"), err
    assert "stem.0.weight" in err or "stage1" in err, err


def test_a_seres_run_as_the_source_gives_its_recorded_preprocessing(tmp_path):
    """Weights from a seres work directory bring the preprocessing that run recorded in its
    config.json (what it trained with), as a timm model's pretrained_cfg would; bare weights
    leave the model's own."""
    import dataclasses
    import json

    from seres_jax.data.images import DataConfig
    from seres_jax.train import TrainConfig

    source = TrainConfig(model=ARCH, dataset="imagefolder")
    trained = DataConfig(input_size=48, crop_pct=0.9, interpolation="bilinear")
    record = {"config": dataclasses.asdict(source), "arch": f"{ARCH},num_classes=3",
              "data": {"train": dataclasses.asdict(trained)}}  # fmt: skip
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    run = TrainConfig(model=ARCH, initial_checkpoint=str(tmp_path / "run"))
    assert run.data_options().data_config == trained
    weights = tmp_path / "bare.safetensors"
    weights.write_bytes(b"")
    bare = TrainConfig(model=ARCH, initial_checkpoint=str(weights)).data_options().data_config
    assert bare.input_size == 224  # timm's seresnet18 default
