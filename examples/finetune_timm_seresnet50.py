"""Fine-tune a timm SE-ResNet-50 with seres' command line and give it back to timm: the hub ->
fine-tune -> export -> timm loop, as commands.

With the network, the loop starts from timm's own weights on the Hugging Face hub::

    seres train --model seresnet50.a1_in1k --pretrained --dataset imagefolder --data-dir DIR \\
        --workdir runs/ft --export-dir runs/ft-timm
    seres eval runs/ft-timm --dataset imagefolder --data-dir DIR
    python -c 'import timm; timm.create_model("local-dir:runs/ft-timm", pretrained=True)'

Nothing can be downloaded here, so this script makes the "pretrained" model itself: a
``seresnet50`` trained briefly on 6 classes of photographs (crops of scikit-learn's two sample
photos) and written in timm's hub layout (``--export-dir``: ``config.json``, ``model.safetensors``,
``README.md``: what ``timm.models.save_for_hf`` writes). Then, as a user would with the hub's:

1. ``seres train --initial-checkpoint local-dir:PRE`` fine-tunes it on 3 other classes: the
   architecture and the preprocessing come from its ``config.json``, the 6-class classifier is
   re-initialised for 3 classes (as timm's ``load_pretrained`` does), the optimizer starts fresh;
2. ``--export-dir`` writes the result in timm's layout again;
3. ``seres eval`` of the export gives the run's last evaluation;
4. PyTorch loads the exported weights strictly into ``seres_torch`` (timm's keys), and its logits
   equal JAX's; where timm is installed, ``timm.create_model("local-dir:...")`` loads it too.

Run: ``python examples/finetune_timm_seresnet50.py [--epochs N] [--small] [--out DIR]``
(``--small`` narrows the widths for a quick check; the structure stays SE-ResNet-50's).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from seres_cli.main import main as seres

SMALL = "seresnet50:channels=16-32-64-128,layers=1-1-1-1,stem_width=8"
# Each class: a region of one photo (fractions x0, y0, x1, y1) and a tint, so classes differ.
LOOKS = (
    (0, (0.3, 0.1, 0.75, 0.9), (1.0, 0.85, 0.7)), (1, (0.1, 0.05, 0.9, 0.95), (0.8, 1.0, 0.8)),
    (0, (0.0, 0.0, 1.0, 0.3), (0.75, 0.85, 1.0)), (1, (0.4, 0.3, 1.0, 1.0), (1.0, 0.75, 1.0)),
    (0, (0.0, 0.5, 0.5, 1.0), (1.0, 1.0, 0.7)), (1, (0.0, 0.0, 0.4, 0.6), (0.7, 1.0, 1.0)),
)  # fmt: skip


def photo_folder(root: Path, classes: range, per_class: int = 12) -> Path:
    """An image folder (``train/`` and ``val/``, a directory per class) of random crops."""
    photos = load_sample_images().images
    rng = np.random.default_rng(classes.start)
    for c in classes:
        index, (x0, y0, x1, y1), tint = LOOKS[c]
        img = photos[index]
        h, w = img.shape[:2]
        region = img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)] * np.asarray(tint)
        for split, count in (("train", per_class), ("val", per_class // 3)):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
            for i in range(count):
                top = int(rng.integers(0, region.shape[0] // 3))
                left = int(rng.integers(0, region.shape[1] // 3))
                crop = region[
                    top : top + region.shape[0] * 2 // 3, left : left + region.shape[1] * 2 // 3
                ]
                out = root / split / f"class{c}" / f"{i}.jpg"
                Image.fromarray(crop.clip(0, 255).astype(np.uint8)).save(out, quality=90)
    return root


def run(*argv: str) -> None:
    print("$ seres", " ".join(argv))
    if seres(list(argv)) != 0:
        raise SystemExit(f"seres {argv[0]} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="reduced widths, for a smoke test")
    parser.add_argument("--out", type=Path, help="where to write everything (default: temp)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="seres-finetune-"))
    model = SMALL if args.small else "seresnet50"
    six = photo_folder(out / "photos6", range(6))
    three = photo_folder(out / "photos3", range(3, 6))
    common = ["--dataset", "imagefolder", "--epochs", str(args.epochs), "--batch-size", "8",
              "--lr", "0.02", "--no-progress"]  # fmt: skip

    # The stand-in for the hub's weights: a model in timm's hub layout.
    pre = out / "pretrained-timm"
    run("train", "--model", model, "--image-size", "32", "--data-dir", str(six), *common,
        "--workdir", str(out / "pretrain"), "--export-dir", str(pre))  # fmt: skip
    # 1-2: fine-tune it on 3 classes (a new head) and export in timm's layout.
    tuned = out / "finetuned-timm"
    run("train", "--initial-checkpoint", f"local-dir:{pre}", "--data-dir", str(three), *common,
        "--workdir", str(out / "finetune"), "--export-dir", str(tuned))  # fmt: skip
    # 3: seres eval of the export.
    run("eval", str(tuned), "--dataset", "imagefolder", "--data-dir", str(three),
        "--json", str(out / "eval.json"), "--no-progress")  # fmt: skip

    # 4: PyTorch reads the export: seres_torch strictly (timm's keys), timm where installed.
    import safetensors.torch

    from seres_jax.formats import load_checkpoint
    from seres_jax.hub import resolve_local
    from seres_jax.registry import build_flax, build_torch, variables_template

    exported = resolve_local(tuned)
    torch_model = build_torch(exported.arch).eval()
    torch_model.load_state_dict(safetensors.torch.load_file(str(exported.weights)), strict=True)
    images = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    variables = load_checkpoint(exported.weights).to_variables(variables_template(exported.arch))
    logits_jax = np.asarray(build_flax(exported.arch).apply(variables, images, train=False))
    with torch.no_grad():
        logits_torch = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    diff = float(np.max(np.abs(logits_jax - logits_torch)))
    scale = float(np.max(np.abs(logits_torch)))
    result = json.loads((out / "eval.json").read_text())["jax"]
    print(f"{tuned}: {exported.arch}, classes {exported.label_names}; seres eval top-1 "
          f"{result['acc']:.2%}; PyTorch loads it strictly, largest logit difference "
          f"{diff:.2e} (of {scale:.2e})")  # fmt: skip
    if not diff <= 1e-4 * max(scale, 1.0):
        raise SystemExit("JAX and PyTorch disagree on the exported weights")
    try:
        import timm
    except ImportError:
        print("timm is not installed here; with it: "
              f'timm.create_model("local-dir:{tuned}", pretrained=True)')  # fmt: skip
    else:
        timm.create_model(f"local-dir:{tuned}", pretrained=True)
        print(f'timm.create_model("local-dir:{tuned}", pretrained=True) loaded it')


if __name__ == "__main__":
    main()
