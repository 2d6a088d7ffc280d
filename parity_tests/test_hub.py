"""timm models from the Hugging Face hub (``seres_jax.hub``; ``seres convert``/``seres eval``
with ``hf-hub:``), through the real ``huggingface_hub`` client: offline against a hub cache
written on disk (``hub_cache.make_hub_cache``, checked with ``scan_cache_dir`` and against the
client's own download), online against a local stand-in for the hub (``hub_cache.HubServer``).

The repository is one timm trained and saved itself (``fixtures/record_timm_hub.py``:
``seresnet18`` narrowed to ``channels=(8, 16, 32, 64)``, 6 photo classes, ``save_for_hf``):
its config gives the architecture, the data config and the class names, its weights load
strictly and give timm's recorded logits, and ``seres eval`` on the photo folder gives timm's
recorded accuracy and loss.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

from huggingface_hub import scan_cache_dir

from seres_cli.main import main
from seres_jax.data.images import DataConfig
from seres_jax.formats import load_checkpoint
from seres_jax.hub import HubError, is_hub, pretrained_source, resolve_hub
from seres_jax.registry import build_flax, variables_template

from .hub_cache import HubServer, hub_env, make_hub_cache, repo_folder
from .photos import CLASS_NAMES, make_image_folder

FIXTURES = Path(__file__).parent / "fixtures" / "timm_hub"
SAVED = FIXTURES / "seresnet18_photos"
RECORD = json.loads((FIXTURES / "seresnet18_photos.json").read_text(encoding="utf-8"))
REPO = "timm/seresnet18_photos"
NAME = f"hf-hub:{REPO}"
CONFIG = json.loads((SAVED / "config.json").read_text(encoding="utf-8"))
FILES = {"config.json": SAVED / "config.json", "model.safetensors": SAVED / "model.safetensors"}
ARCH = "seresnet18:num_classes=6,channels=8-16-32-64"


def config_bytes(config: Any) -> bytes:
    return json.dumps(config).encode()


def edited(**changes: Any) -> dict[str, Any]:
    """The saved config with top-level keys replaced (``None`` removes one)."""
    config = json.loads(json.dumps(CONFIG))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def with_pretrained(**changes: Any) -> dict[str, Any]:
    return edited(pretrained_cfg={**CONFIG["pretrained_cfg"], **changes})


def with_args(**changes: Any) -> dict[str, Any]:
    return edited(model_args={**CONFIG["model_args"], **changes})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A hub cache holding the saved repository at ``main`` and at ``v0`` (another commit:
    its config names the classes in capitals), and a repository with both weight files."""
    root = tmp_path_factory.mktemp("hub")
    v0 = edited(label_names=[n.upper() for n in CLASS_NAMES])
    commits = {
        "main": make_hub_cache(root, REPO, FILES),
        "v0": make_hub_cache(root, REPO, {**FILES, "config.json": config_bytes(v0)}, revision="v0"),
        "both": make_hub_cache(root, "timm/both", {**FILES, "pytorch_model.bin": b"unread"}),
    }
    return root, commits


@pytest.fixture
def offline(cache, monkeypatch):
    hub_env(monkeypatch, cache[0])
    return cache[1]


def one_line_error(source: str, fragment: str) -> str:
    with pytest.raises(HubError) as info:
        resolve_hub(source)
    message = str(info.value)
    assert "\n" not in message and fragment in message, message
    return message


def test_the_cache_is_the_hubs_layout(cache):
    root, commits = cache
    info = scan_cache_dir(root)
    assert info.warnings == []
    repos = {repo.repo_id: repo for repo in info.repos}
    assert set(repos) == {REPO, "timm/both"}
    revisions = {r.commit_hash: r for r in repos[REPO].revisions}
    assert set(revisions) == {commits["main"], commits["v0"]}
    assert revisions[commits["main"]].refs == {"main"}
    assert revisions[commits["v0"]].refs == {"v0"}
    files = {f.file_name: f for f in revisions[commits["main"]].files}
    assert set(files) == set(FILES)
    weights = files["model.safetensors"]
    assert (
        weights.blob_path.name
        == hashlib.sha256(FILES["model.safetensors"].read_bytes()).hexdigest()
    )
    # Both revisions share the weights' blob, as the hub's cache does.
    assert repos[REPO].nb_files == 3


def test_a_download_lays_out_what_make_hub_cache_writes(tmp_path, monkeypatch):
    """huggingface_hub's own download (from the local stand-in) into an empty cache leaves the
    same tree, links and refs as make_hub_cache."""
    files = {name: path.read_bytes() for name, path in FILES.items()}
    with HubServer() as server:
        commit = server.add(REPO, files)
        hub_env(monkeypatch, tmp_path / "downloaded", endpoint=server.endpoint)
        hub = resolve_hub(NAME)
    assert hub.commit == commit
    written = make_hub_cache(tmp_path / "written", REPO, files)
    assert written == commit

    def tree(root: Path) -> dict[str, str]:
        repo = repo_folder(root, REPO)
        return {
            p.relative_to(repo).as_posix(): str(p.readlink())
            if p.is_symlink()
            else p.read_text(errors="replace")[:64]
            for p in sorted(repo.rglob("*"))
            if p.is_file() and ".no_exist" not in p.parts
        }

    assert tree(tmp_path / "downloaded") == tree(tmp_path / "written")
    # model.safetensors was there: the pickle was never asked for.
    assert not any("pytorch_model.bin" in path for _, path in server.requests)


def test_resolve_default_revision_and_at_revision(offline):
    hub = resolve_hub(NAME)
    assert (hub.name, hub.repo_id, hub.revision, hub.commit) == (NAME, REPO, None, offline["main"])
    assert hub.weights.name == "model.safetensors"
    assert hub.weights.parent.name == offline["main"]
    assert hub.weights.read_bytes() == FILES["model.safetensors"].read_bytes()
    at_v0 = resolve_hub(f"{NAME}@v0")
    assert (at_v0.revision, at_v0.commit) == ("v0", offline["v0"])
    assert at_v0.label_names == tuple(n.upper() for n in CLASS_NAMES)
    pinned = resolve_hub(f"{NAME}@{offline['v0']}")
    assert pinned.commit == offline["v0"] and pinned.label_names == at_v0.label_names
    assert is_hub(NAME) and is_hub(Path(NAME)) and not is_hub("hf_hub/model.safetensors")


def test_safetensors_are_preferred_over_the_pickle(offline):
    hub = resolve_hub("hf-hub:timm/both")
    assert hub.weights.name == "model.safetensors"


def test_config_gives_arch_data_config_and_labels(offline):
    hub = resolve_hub(NAME)
    assert hub.arch == ARCH
    assert hub.data_config == DataConfig(input_size=32, crop_pct=0.875, interpolation="bicubic")
    assert hub.data_config.for_eval(use_test_size=True).input_size == 32
    assert hub.label_names == CLASS_NAMES
    assert hub.config["architecture"] == "seresnet18"


def test_timm_zoo_configs_give_the_registrys_data_config():
    """A config as timm's hub repositories hold it (seresnet50.a1_in1k: test size 288) and
    the older flat layout give the data config seres records for that weight tag; the legacy
    SENet's groups are seres' cardinality."""
    from seres_jax.hub import check_hub_config, hub_arch, hub_data_config, read_hub_config
    from seres_jax.pretrained import pretrained_config
    from seres_jax.registry import data_config

    tag = pretrained_config("seresnet50", "a1_in1k")
    assert tag is not None
    pretrained = {
        "tag": "a1_in1k", "input_size": [3, tag["input_size"], tag["input_size"]],
        "test_input_size": [3, tag["test_input_size"], tag["test_input_size"]],
        "crop_pct": tag["crop_pct"], "test_crop_pct": tag["test_crop_pct"],
        "interpolation": tag["interpolation"], "mean": tag["mean"], "std": tag["std"],
        "crop_mode": "center", "num_classes": 1000,
    }  # fmt: skip
    nested = {"architecture": "seresnet50", "num_classes": 1000, "num_features": 2048,
              "global_pool": "avg", "pretrained_cfg": pretrained}  # fmt: skip
    flat = {"architecture": "seresnet50", "num_classes": 1000, "num_features": 2048,
            **pretrained, "labels": [str(i) for i in range(1000)]}  # fmt: skip
    for config in map(check_hub_config, (nested, flat)):
        assert hub_arch(config) == "seresnet50:num_classes=1000"
        assert hub_data_config(config) == data_config("seresnet50.a1_in1k")
    assert hub_data_config(check_hub_config(nested)).test_input_size == 288
    legacy = {"architecture": "legacy_seresnext26_32x4d", "num_classes": 5,
              "model_args": {"groups": 16, "in_chans": 3, "global_pool": "avg"}}  # fmt: skip
    assert (
        hub_arch(check_hub_config(legacy))
        == "legacy_seresnext26_32x4d:num_classes=5,cardinality=16"
    )
    assert read_hub_config(SAVED / "config.json") == CONFIG


def test_honoured_arguments_are_the_registrys():
    """Every timm argument hub_arch passes on is a constructor argument of seres' model."""
    from seres_jax import hub
    from seres_jax.registry import MODELS

    for name in hub._timm_names():
        spec = MODELS[name]
        passed = hub._SAME[spec.flax_path] | set(hub._RENAMED.get(spec.flax_path, {}).values())
        assert passed <= set(spec.arguments()), name
        assert not set(hub._FIXED[spec.flax_path]) & set(spec.arguments()), name


def test_weights_load_strictly_and_give_timms_logits(offline):
    import jax

    hub = resolve_hub(NAME)
    template = variables_template(hub.arch)
    variables = load_checkpoint(hub.weights, template=template).to_variables(template)
    inputs = np.load(FIXTURES / "seresnet18_photos_inputs.npz")["inputs"]  # timm's, NCHW
    # One compilation of the whole network is cheaper here than running it op by op.
    apply = jax.jit(build_flax(hub.arch).apply, static_argnames="train")
    logits = np.asarray(apply(variables, inputs.transpose(0, 2, 3, 1), train=False))
    expected = np.asarray(RECORD["eval"]["logits"], np.float32)
    assert logits.shape == expected.shape == (RECORD["first"], 6)
    # Relative to each image's largest logit (near-zero logits make elementwise ratios noise).
    error = np.abs(logits - expected).max(1) / np.abs(expected).max(1)
    print(f"worst relative logit error against timm: {error.max():.2e}")
    assert error.max() < 1e-4
    assert (logits.argmax(1) == RECORD["eval"]["predictions"][: RECORD["first"]]).all()


def test_only_the_pickle_works(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    state = load_file(FILES["model.safetensors"])
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "weights.bin")
    files = {"config.json": FILES["config.json"], "pytorch_model.bin": tmp_path / "weights.bin"}
    make_hub_cache(tmp_path / "cache", "timm/pickle", files)
    hub_env(monkeypatch, tmp_path / "cache")
    hub = resolve_hub("hf-hub:timm/pickle")
    assert hub.weights.name == "pytorch_model.bin"
    template = variables_template(hub.arch)
    from_pickle = load_checkpoint(hub.weights, template=template).to_state_dict(template)
    assert from_pickle.keys() == state.keys()
    assert all(np.array_equal(np.asarray(from_pickle[k]), state[k]) for k in state)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("hf-hub:", "malformed hub name"),
        ("hf-hub:seresnet50", "malformed hub name"),
        ("hf-hub:timm/a/b", "malformed hub name"),
        ("hf-hub:timm/bad name", "malformed hub name"),
        ("hf-hub:timm/x--y", "malformed hub name"),
        ("hf-hub:timm/x@", "malformed revision"),
        ("hf-hub:timm/x@a@b", "malformed revision"),
        ("hf-hub:timm/not-cached", "not in the hub cache"),
        (f"{NAME}@v9", "config.json at 'v9' is not in the hub cache"),
        (f"{NAME}@{'0' * 40}", "is not in the hub cache"),
    ],
)
def test_offline_errors(offline, name, fragment):
    message = one_line_error(name, fragment)
    if "cache" in fragment:
        assert "HF_HUB_OFFLINE" in message and "HF_HUB_CACHE" in message


def test_offline_snapshot_without_weights(tmp_path, monkeypatch):
    make_hub_cache(tmp_path, "timm/config-only", {"config.json": FILES["config.json"]})
    hub_env(monkeypatch, tmp_path)
    message = one_line_error("hf-hub:timm/config-only", "has neither model.safetensors nor")
    assert "unset HF_HUB_OFFLINE" in message


HOSTILE = [
    (b'{"architecture": "seresnet18", "x": "' + b"a" * (1 << 20) + b'"}', "more than a timm"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"architecture": ', "not valid JSON"),
    (b'{"architecture": "seresnet18", "num_classes": NaN}', "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'["seresnet18"]', "holds a list, not a JSON object"),
    (config_bytes(edited(architecture=None)), "names no architecture"),
    (config_bytes(edited(architecture="resnet50")), "not one seres implements; known: "),
    (config_bytes(edited(architecture="seresnet_tiny")), "not one seres implements"),
    (config_bytes(edited(num_classes="6")), "num_classes must be a JSON integer"),
    (config_bytes(edited(num_classes=True)), "num_classes must be a JSON integer"),
    (config_bytes(edited(num_classes=0)), "contradicts num_classes=0"),
    (config_bytes(edited(num_classes=0, model_args=None)), "without a classifier"),
    (config_bytes(edited(model_args=[8, 16])), "model_args must be a JSON object"),
    (
        config_bytes(edited(num_classes=None, model_args={"num_classes": "6"})),
        "num_classes must be an integer",
    ),
    (config_bytes(edited(pretrained_cfg="224")), "pretrained_cfg must be a JSON object"),
    (config_bytes(edited(global_pool="max", model_args=None)), "has only global_pool='avg'"),
    (config_bytes(edited(label_names=["a", "b"])), "label_names has 2 names for num_classes=6"),
    (config_bytes(edited(label_names=[1, 2, 3, 4, 5, 6])), "label_names must be a list"),
    (config_bytes(with_args(act_layer="relu")), "model_args.act_layer has no counterpart"),
    (config_bytes(with_args(block_args={"attn_layer": "eca"})), "block_args has no counterpart"),
    (config_bytes(with_args(global_pool="catavgmax")), "has only global_pool='avg'"),
    (config_bytes(with_args(output_stride=16)), "has only output_stride=32"),
    (config_bytes(with_args(channels=[8, 16])), "channels must be 4 positive integers"),
    (config_bytes(with_args(channels=[8, 16, 32, 0])), "channels must be 4 positive integers"),
    (config_bytes(with_args(stem_type="deep,num_classes=5")), "not a value seres' model takes"),
    (config_bytes(with_args(stem_type="octopus")), "stem_type must be one of"),
    (config_bytes(with_args(avg_down=1)), "avg_down must be true or false"),
    (config_bytes(with_args(drop_rate=1.5)), "drop_rate must be a rate in [0, 1)"),
    (config_bytes(with_args(drop_rate="x")), "drop_rate must be a number"),
    (config_bytes(with_args(drop_rate=[0.1])), "not a value seres' model takes"),
    (config_bytes(with_args(in_chans=1)), "contradicts in_chans=1"),
    (config_bytes(with_pretrained(input_size=[3, 32, 48])), "square images only"),
    (config_bytes(with_pretrained(input_size=224)), "must be [channels, height, width]"),
    (config_bytes(with_pretrained(crop_pct="0.9")), "crop_pct must be a number"),
    (config_bytes(with_pretrained(crop_pct=-1)), "crop_pct must be a positive number"),
    (config_bytes(with_pretrained(mean=[0.5, 0.5])), "mean and std need 3 values"),
    (config_bytes(with_pretrained(interpolation="magic")), "unknown interpolation 'magic'"),
    (config_bytes(with_pretrained(crop_mode="squash")), "seres crops at the centre only"),
]


@pytest.mark.parametrize(("config", "fragment"), HOSTILE, ids=[f[1] for f in HOSTILE])
def test_hostile_configs_are_one_line_errors(tmp_path, monkeypatch, config, fragment):
    files = {"config.json": config, "model.safetensors": FILES["model.safetensors"]}
    make_hub_cache(tmp_path, "evil/model", files)
    hub_env(monkeypatch, tmp_path)
    assert one_line_error("hf-hub:evil/model", fragment).startswith("hf-hub:evil/model: ")


def test_online_errors_from_the_hubs_answers(tmp_path, monkeypatch):
    """Each answer of the hub through the real client, as the one line that says what to do."""
    weights = FILES["model.safetensors"].read_bytes()
    config = FILES["config.json"].read_bytes()
    with HubServer() as server:
        server.add("timm/gated", {"config.json": config, "model.safetensors": weights})
        server.gated.add("timm/gated")
        server.add("timm/no-config", {"model.safetensors": weights})
        server.add("timm/no-weights", {"config.json": config, "README.md": b"# hi"})
        server.add("timm/pickle", {"config.json": config, "pytorch_model.bin": b"not read"})
        hub_env(monkeypatch, tmp_path, endpoint=server.endpoint)
        cases = [
            ("hf-hub:timm/missing", "no such repository on the hub, or a private one"),
            ("hf-hub:timm/gated", "a gated repository: accept its terms"),
            ("hf-hub:timm/gated@v1", "a gated repository"),
            ("hf-hub:timm/pickle@v1", "the repository has no revision 'v1'"),
            ("hf-hub:timm/no-config", "the repository has no config.json: not a timm model"),
            ("hf-hub:timm/no-weights", "has neither model.safetensors nor pytorch_model.bin"),
        ]
        for name, fragment in cases:
            message = one_line_error(name, fragment)
            if "repository on the hub" in fragment or "gated" in fragment:
                assert "hf auth login" in message and "HF_TOKEN" in message
        assert "not a timm model repository" in one_line_error("hf-hub:timm/no-weights", "")
        # The pickle where the hub has no safetensors, as timm falls back.
        assert resolve_hub("hf-hub:timm/pickle").weights.name == "pytorch_model.bin"
        server.not_a_hub = True
        message = one_line_error("hf-hub:timm/pickle@other", "cannot reach the hub")
        assert "HF_ENDPOINT" in message
    # Nothing of the refused repositories was cached.
    assert not any(repo_folder(tmp_path, r).exists() for r in ("timm/missing", "timm/gated"))


@pytest.mark.slow
def test_no_connection_is_one_line(tmp_path, monkeypatch):
    """A refused connection: huggingface_hub retries with back-off (about 20 s) first."""
    with HubServer() as server:
        endpoint = server.endpoint  # closed when the block ends
    hub_env(monkeypatch, tmp_path, endpoint=endpoint)
    one_line_error(NAME, "cannot reach the hub (")


def test_pretrained_source():
    assert pretrained_source("seresnet50.a1_in1k") == "hf-hub:timm/seresnet50.a1_in1k"
    assert pretrained_source("seresnet50") == "hf-hub:timm/seresnet50.a1_in1k"  # default tag
    assert pretrained_source("seresnext26d_32x4d") == "hf-hub:timm/seresnext26d_32x4d.bt_in1k"
    bad = {
        "seresnet18": "timm publishes no weights seresnet18.untrained",
        "seresnet50.nope": "tags with weights: a1_in1k, a2_in1k, a3_in1k, ra2_in1k",
        "resnet50": "not a timm model name[.tag]",
        "seresnet_tiny": "not a timm model name[.tag]",
        "seresnet50:num_classes=3": "not a timm model name[.tag]",
        "legacy_seresnet18": "outside the hub (a GitHub release)",
    }
    for model, fragment in bad.items():
        with pytest.raises(HubError, match=re.escape(fragment)):
            pretrained_source(model)
    # Every published tag: where timm downloads it from (its recorded hf_hub_id).
    from seres_jax.pretrained import PRETRAINED_FILE

    zoo = json.loads(PRETRAINED_FILE.read_text(encoding="utf-8"))["models"]
    tags = {f"{n}.{t}" for n, entry in zoo.items() for t in entry["pretrained_tags"]}
    assert set(RECORD["hub_ids"]) == tags
    for model, hub_id in RECORD["hub_ids"].items():
        if hub_id is None:
            with pytest.raises(HubError, match="outside the hub"):
                pretrained_source(model)
        else:
            assert pretrained_source(model) == f"hf-hub:{hub_id}"


# The command line.


def test_convert_from_the_hub(offline, tmp_path, capsys):
    out = tmp_path / "photos.msgpack"
    assert main(["convert", NAME, str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"checked against {ARCH} (from {NAME}'s config.json)" in printed
    assert offline["main"][:12] in printed
    template = variables_template(ARCH)
    converted = load_checkpoint(out, template=template).to_state_dict(template)
    from safetensors.numpy import load_file

    saved = load_file(FILES["model.safetensors"])
    assert converted.keys() == saved.keys()
    assert all(np.array_equal(np.asarray(converted[k]), saved[k]) for k in saved)


def cli_error(argv: list[str], fragment: str, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seres: error: ") and fragment in err, err
    return err


def test_convert_errors(offline, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.msgpack"
    cli_error(["convert", NAME, str(out), "--arch", ARCH], "leave --arch out", capsys)
    cli_error(["convert", "hf-hub:timm/absent", str(out)], "not in the hub cache", capsys)
    cli_error(["convert", "hf-hub:timm", str(out)], "malformed hub name", capsys)
    assert not out.exists()
    evil = {"config.json": config_bytes(with_args(act_layer="gelu"))}
    make_hub_cache(tmp_path / "evil", "evil/model", evil)
    hub_env(monkeypatch, tmp_path / "evil")
    cli_error(["convert", "hf-hub:evil/model", str(out)], "act_layer has no counterpart", capsys)
    assert not out.exists()
    # An existing destination is refused before the hub is asked.
    out.write_bytes(b"keep")
    cli_error(["convert", "hf-hub:timm/absent", str(out)], "exists", capsys)
    assert out.read_bytes() == b"keep"


def folder_digest(root: Path) -> str:
    """record_timm_hub.py's digest of the photo folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_eval_from_the_hub_gives_timms_accuracy_and_loss(offline, tmp_path, capsys):
    """On timm's val images, timm's top-1 and loss. The class folders are renamed (in the same
    order) after the images are checked to be the recording's: other names than the config's
    label_names are said, not refused, and change nothing."""
    folder = make_image_folder(
        tmp_path / "photos",
        **{**RECORD["folder"], "size_range": tuple(RECORD["folder"]["size_range"])},
    )
    same_images = folder_digest(folder) == RECORD["folder_sha256"]
    for split in ("train", "val"):
        for index, name in enumerate(CLASS_NAMES):
            (folder / split / name).rename(folder / split / f"class_{index}")
    report = tmp_path / "eval.json"
    argv = ["eval", NAME, "--dataset", "imagefolder", "--data-dir", str(folder),
            "--no-progress", "--compile-cache", "off", "--json", str(report)]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().err == (
        f"seres: warning: the imagefolder classes differ from {NAME}'s label_names (first: "
        "'class_0' vs 'c0_pagoda'); labels are matched by index\n"
    )
    result = json.loads(report.read_text())
    assert (result["arch"], result["commit"], result["weights"]) == (
        ARCH,
        offline["main"],
        "model.safetensors",
    )
    assert result["jax"]["count"] == RECORD["eval"]["count"] == 60
    if not same_images:
        pytest.skip("this Pillow encodes the photo folder into other bytes than the recording's")
    assert result["jax"]["acc"] == RECORD["eval"]["top1"]
    loss, timm_loss = result["jax"]["loss"], RECORD["eval"]["loss"]
    print(f"val loss seres {loss:.6e}, timm {timm_loss:.6e}")
    assert math.isclose(loss, timm_loss, rel_tol=1e-4)


def test_eval_errors(offline, tmp_path, capsys):
    folder = make_image_folder(tmp_path / "three", classes=3, per_class=1, val_per_class=1)
    report = tmp_path / "eval.json"
    base = ["eval", NAME, "--data-dir", str(folder), "--json", str(report)]
    cli_error(base, "--dataset is needed with hf-hub:", capsys)
    with_dataset = [*base, "--dataset", "imagefolder"]
    cli_error([*with_dataset, "--arch", ARCH], "leave --arch out", capsys)
    cli_error(with_dataset, "takes 3-channel images of 6 classes; the imagefolder data has "
              "3 channels, 3 classes", capsys)  # fmt: skip
    cli_error(["eval", "hf-hub:timm/absent", "--dataset", "imagefolder", "--data-dir",
               str(folder)], "not in the hub cache", capsys)  # fmt: skip
    assert not report.exists()
