"""The benchmark's NNX parts (``benchmarks/seres_bench``): the ``jax_nnx`` runner trains and
infers a tiny model through ``seres_jax.nnx.train.compile_steps`` without compiling twice, the
report puts NNX's column and its NNX/linen and NNX/eager ratios next to the others only when
NNX ran, ``jax_nnx`` runs by default and the NNX design section on request, and the design
section's figures, ratios, goal and merge follow from a child's answer (canned; the live child
is a slow test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_bench_report import bench_results

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = "seresnet_tiny:base=8,n=1"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from seres_bench import cli, configs, nnx_design, report, worker

    return cli, configs, nnx_design, report, worker


def _spec(**extra) -> dict:
    spec = {
        "arch": TINY, "image_size": 8, "batch": 4, "steps": 1, "repeats": 1, "warmup": 0,
        "device": "cpu", "bf16": False, "seed": 0,
    }  # fmt: skip
    return spec | extra


def test_nnx_runner_trains_and_infers_without_recompiling(bench):
    import jax

    from seres_jax.nnx.train import compile_steps
    from seres_jax.registry import build_flax
    from seres_jax.train import init_variables, make_mesh

    _, _, _, _, worker = bench
    runners = worker.model_runners(_spec(impl="jax_nnx"))
    linen = jax.eval_shape(lambda: init_variables(build_flax(TINY), (8, 8, 3), 0))
    assert runners.params == sum(p.size for p in jax.tree.leaves(linen["params"]))
    assert (runners.precision, runners.info["devices"]) == ("fp32", 1)
    runners.train(1)
    runners.infer(1)
    runners.train(2)  # back from eval mode: the same program
    steps = compile_steps(make_mesh([jax.devices("cpu")[0]]))  # the runner's (cached per mesh)
    assert steps.train._cache_size() == 1
    flops = runners.flops()
    assert flops["train"] > 2 * flops["infer"] > 0
    with pytest.raises(ValueError, match="jax_nnx does not run ema"):
        worker.model_runners(_spec(impl="jax_nnx", ema={"decay": 0.9}))


def _entry(report, configs, nnx: bool) -> dict:
    entry = report.empty_entry("tiny", configs.CONFIGS["tiny"], 128, 2)
    impls = {"jax": (100.0, 800.0, 5.0), "torch_eager": (200.0, 1000.0, 1.0)}
    if nnx:
        impls["jax_nnx"] = (98.0, 840.0, 6.0)
    for impl, (train, infer, first) in impls.items():
        answer = {
            "params": 700_000, "precision": "fp32", "errors": {},
            "train": {"img_s": train, "first_step_s": first},
            "infer": {"img_s": infer, "first_step_s": first / 5},
            "peak_rss_mib": 1000.0, "device_peak_mib": None,
        }  # fmt: skip
        report.fill_entry(entry, impl, answer)
    entry["skipped"]["torch_compile"] = "not in --impls"
    if not nnx:
        entry["skipped"]["jax_nnx"] = "not in --impls"
    report.add_ratios(entry)
    return entry


def test_report_shows_nnx_column_and_ratios_only_when_nnx_ran(bench):
    _, configs, _, report, _ = bench
    entry = _entry(report, configs, nnx=True)
    assert entry["jax_nnx_vs_jax"]["train_img_s"] == pytest.approx(0.98)
    assert entry["jax_nnx_vs_torch_eager"]["infer_img_s"] == pytest.approx(0.84)
    assert entry["jax_nnx_vs_jax"]["first_step_train_s"] == pytest.approx(1.2)
    markdown = report.render_markdown(bench_results(entry))
    assert (
        "| config | metric | JAX | JAX NNX | PyTorch eager | torch.compile | linen/eager "
        "| linen/compile | NNX/linen | NNX/eager |\n" in markdown
    )
    assert "| train img/s | 100 | 98.0 | 200 | skipped | 0.50× | – | 0.98× | 0.49× |\n" in markdown
    assert "| infer img/s | 800 | 840 | 1,000 | skipped | 0.80× | – | 1.05× | 0.84× |\n" in markdown
    assert "The goal for NNX/linen is ≥ 0.97× in img/s." in markdown
    # Without NNX: the table as before NNX existed, no note about its absence.
    plain = report.render_markdown(bench_results(_entry(report, configs, nnx=False)))
    assert (
        "| config | metric | JAX | PyTorch eager | torch.compile | JAX/eager | JAX/compile |\n"
        in plain
    )
    assert "| train img/s | 100 | 200 | skipped | 0.50× | – |\n" in plain
    assert "jax_nnx" not in plain and "NNX" not in plain
    # An entry from a results file older than jax_nnx (no key for it) still renders.
    old = _entry(report, configs, nnx=False)
    for key in ("params_by_impl", "train_img_s", "infer_img_s", "first_step_s", "peak_mem_mib"):
        del old[key]["jax_nnx"]
    assert report.render_markdown(bench_results(old)) == plain


def test_nnx_is_opt_in_and_wired(bench):
    cli, _, nnx_design, _, worker = bench
    default = cli.build_parser().parse_args([])
    assert default.impls == ["jax", "jax_nnx", "torch_eager", "torch_compile"]
    assert "nnx-design" not in cli.apply_only(default)  # opt-in: minutes
    args = cli.build_parser().parse_args(["--only", "nnx-design", "--nnx-design-models", "tiny"])
    assert cli.apply_only(args) == {"nnx-design"} and args.nnx_design and args.skip_models
    assert args.nnx_design_models == ["tiny"]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--nnx-design-models", "resnet"])
    assert cli.WORKER_KINDS["nnx_design"] is nnx_design.design_worker
    # jax_nnx runs JAX on the chosen platform, as jax does; torch workers stay off it.
    assert "JAX_PLATFORMS" not in worker.worker_env("model", "jax_nnx", "gpu", Path("/x"))
    assert worker.worker_env("model", "torch_eager", "gpu", Path("/x"))["JAX_PLATFORMS"] == "cpu"


def _answer(step: dict[str, float], dispatch_ms: dict[str, float]) -> dict:
    options = {"xla_cpu_experimental_ynn_fusion_type": "x"}
    seres = {"linen", "nnx_tree"}
    compiled = {"temp_bytes": 3 * 2**20, "argument_bytes": 2**20, "convolutions": 44}
    forward = {"temp_bytes": 2**20, "argument_bytes": 2**20, "convolutions": 20}
    return {
        "infer": {
            api: {
                "first_call_s": 1.0,
                "compiler_options": options,
                "call_s": [seconds, seconds * 1.2, seconds],
                "compiled": forward | {"hlo_instructions": 900, "fusions": 80},
            }
            for api, seconds in (("linen", 0.16), ("nnx", 0.2))
        },
        "params": 700_000,
        "errors": {},
        "pytree_ms": {
            "linen_train_state": {"ms": 0.05, "leaves": 196},
            "nnx_model_optimizer": {"ms": 1.25, "leaves": 196},
        },
        "variants": {
            name: {
                "first_call_s": 6.0,
                "compiler_options": options if name in seres else None,
                "step_s": [seconds, seconds * 1.5, seconds * 0.9],
                "dispatch_s": [dispatch_ms[name] / 1e3, dispatch_ms[name] / 2e3],
                "pipelined_s": [seconds * 0.99] * 3 if name in seres else [],
                "compiled": compiled
                | {"hlo_instructions": 8268 + (name != "linen"), "fusions": 664},
            }
            for name, seconds in step.items()
        },
    }


def test_design_figures_ratios_goal_and_markdown(bench):
    _, _, design, report, _ = bench
    entry = design.empty_model_entry("tiny", 32, 128, 3)
    step = {"linen": 1.0, "nnx_graph": 1.25, "nnx_tree": 1.02, "linen_xla_defaults": 2.0}
    dispatch = {"linen": 2.0, "nnx_graph": 60.0, "nnx_tree": 30.0, "linen_xla_defaults": 2.0}
    design.finish_model(entry, _answer(step, dispatch))
    variants = entry["variants"]
    assert variants["nnx_tree"]["img_s"] == pytest.approx(128 / 1.02)
    assert variants["nnx_tree"]["vs_linen"] == pytest.approx(1 / 1.02)
    # (a) has XLA's defaults: against linen with the same, 2.0 s a step.
    assert variants["nnx_graph"]["vs_linen"] == pytest.approx(0.8)
    assert variants["nnx_graph"]["vs_linen_same_options"] == pytest.approx(1.6)
    assert (variants["nnx_graph"]["dispatch_ms"], variants["nnx_graph"]["dispatch_min_ms"]) == (
        pytest.approx(45.0),
        pytest.approx(30.0),
    )
    assert variants["nnx_graph"]["pipelined_img_s"] is None
    assert entry["goal"]["train_pipelined"] == {
        "linen": pytest.approx(128 / 0.99),
        "nnx": pytest.approx(128 / 1.0098),
        "ratio": pytest.approx(1 / 1.02),
    }
    assert entry["goal"]["infer"]["ratio"] == pytest.approx(0.8)
    assert entry["infer"]["nnx"]["img_s"] == pytest.approx(128 / 0.2)
    assert design.goal_status(entry) == (
        "(c) ÷ linen: train (synchronised) 0.980×, train (loop) 0.980×, inference 0.800× "
        "(throughput goal ≥ 0.97×, loop and inference: not met); compiled train step: temp "
        "and argument bytes and convolutions the same, HLO instructions +1 (8,269 against "
        "8,268); compiled inference: temp and argument bytes and convolutions the same, HLO "
        "instructions +0 (900 against 900)"
    )
    section = {
        "created": "2026-01-01T00:00:00+00:00",
        "command": ["bench.py", "--only", "nnx-design"],
        "machine": {"cpu": "cpu", "cores": 2, "loadavg_start": [1.0], "loadavg_end": [1.0]},
        "settings": {"device": "cpu", "quick": False, "warmup": 1},
        "models": {"tiny": entry},
        "notes": [],
    }
    markdown = design.nnx_design_markdown({"nnx_design": section})
    assert "## NNX: how to jit the training step" in markdown
    assert (
        "| (c) `seres_jax.nnx.train.compile_steps` | seres | 1.020 | 125 | 0.98× | 0.98× | "
        "6.00 | 22.5 / 15.0 | 3.0 | 1.0 | 8,269 | 44 | 664 |\n" in markdown
    )
    assert "| (a) `nnx.jit(train_step, donate_argnums=(0, 1))` | XLA defaults | 1.250 |" in markdown
    assert (
        "- tiny: pytree flatten + unflatten per call: linen's `TrainState` 0.05 ms (196 "
        "leaves), NNX's `(model, optimizer)` 1.25 ms (196 leaves)\n" in markdown
    )
    assert "| tiny | train, 2 calls then one wait (a training loop) | 129 | 127 | 0.98× |\n" in (
        markdown
    )
    assert "| tiny | inference (eval mode), 2 calls then one wait | 800 | 640 | 0.80× |\n" in (
        markdown
    )
    assert design.nnx_design_markdown({}) == ""
    failed = design.empty_model_entry("seresnet50", 64, 8, 8)
    design.finish_model(failed, {"fatal": "worker exited with status 1: boom"})
    assert failed["errors"] == {"child": "worker exited with status 1: boom"}
    assert design.goal_status(failed) == ""
    # --only nnx-design merges its models by name into an earlier file, keeping the others.
    old = {"configs": {"tiny": 1}, "nnx_design": {"models": {"tiny": 1, "seresnet50": 2}}}
    new = {"configs": {}, "nnx_design": {"created": "new", "models": {"tiny": 3}, "notes": []}}
    merged = report.merge_results(old, new, {"nnx-design"})
    assert merged["nnx_design"]["models"] == {"tiny": 3, "seresnet50": 2}
    assert merged["configs"] == {"tiny": 1}
    # Off the CPU seres compiles with XLA's defaults: the options-off twins are left out.
    assert design.variant_names("gpu") == ["linen", "nnx_graph", "nnx_cached", "nnx_tree"]
    assert len(design.variant_names("cpu")) == 6


@pytest.mark.slow
def test_design_child_measures_every_variant(bench):
    _, configs, design, _, _ = bench
    names = list(configs.NNX_DESIGN_VARIANTS)
    spec = _spec(kind="nnx_design", rounds=2, warmup=1, variants=names)
    result = design.design_worker(spec)
    assert set(result["variants"]) == set(names) and not result["errors"]
    assert set(result["infer"]) == {"linen", "nnx"}
    for got in result["infer"].values():
        assert len(got["call_s"]) == 2 and got["compiled"]["convolutions"] > 0
    assert (
        result["infer"]["nnx"]["compiled"]["temp_bytes"]
        == (result["infer"]["linen"]["compiled"]["temp_bytes"])
    )
    for name, got in result["variants"].items():
        assert len(got["step_s"]) == len(got["dispatch_s"]) == 2
        assert len(got["pipelined_s"]) == (2 if name in design.GOAL_VARIANTS else 0)
        assert got["compiled"]["convolutions"] > 0
        assert (got["compiler_options"] is not None) == configs.NNX_DESIGN_VARIANTS[
            name
        ].seres_options
    # The same program whichever way it is jitted: (c) is linen's, (a), (b), (d) each other's.
    stats = {n: got["compiled"] for n, got in result["variants"].items()}
    assert stats["nnx_tree"]["temp_bytes"] == stats["linen"]["temp_bytes"]
    assert stats["nnx_graph"]["convolutions"] == stats["nnx_tree_xla_defaults"]["convolutions"]
