"""The run's configuration: ``TrainConfig`` (the whole run), its length in steps
(``RunSteps``), the architecture it trains (``run_arch``), ``PRECISIONS`` and what a resume
may change (``RESUMABLE_CHANGES``).

* **Configuration.** ``TrainConfig`` is the whole run: model, dataset, recipe, precision,
  seed, logging and checkpointing. ``seres_jax.optim.build`` turns its recipe into the
  optimizer and schedule, ``seres_jax.data.DATASETS`` gives the dataset-derived defaults
  (``run_arch``: input channels and classes; augmentation), and ``TrainConfig.steps`` is the
  one place the run's length in steps is computed.
* **Mixed precision.** ``TrainConfig.precision="bf16"`` runs the model in bfloat16 with
  float32 parameters, statistics and optimizer state; the loss is computed in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import jax.numpy as jnp
import optax

from .. import optim
from ..data.arrays import DataError
from ..data.auto_augment import check_auto_augment
from ..data.catalog import DATASETS, DataOptions
from ..data.images import INTERPOLATIONS, DataConfig
from ..data.pipeline import steps_per_epoch
from ..ema import EmaConfig
from ..optim import CLIP_MODES, SCHEDULE_NAMES, TIMM_OPTIMIZER_NAMES
from ..random_erasing import RandomErasing
from ..scheduler import LRSchedule, create_scheduler, scale_lr
from .errors import TrainingError

PRECISIONS = {"fp32": None, "bf16": jnp.bfloat16}
"""The ``precision`` names a run takes, each with the model's compute dtype (``None``: the
inputs', float32); parameters, statistics and optimizer state stay float32 either way."""
# timm's schedulers seres train steps.
TIMM_SCHEDULES = ("cosine", "tanh", "poly", "step", "multistep", "constant", "plateau")
# timm's --remode values.
ERASE_MODES = ("const", "rand", "pixel")
# timm's --eval-metric: what the plateau scheduler watches (the EMA's, with an EMA).
EVAL_METRICS = {"top1": "val_acc", "top5": "val_acc5", "loss": "val_loss"}
# The optimizers whose momentum (or beta1) torch's OneCycleLR cycles.
_CYCLED = ("sgd", "momentum", "nesterov", "adamw")
RESUMABLE_CHANGES = frozenset(
    {"max_steps", "log_every", "checkpoint_every", "keep", "data_dir", "workers"}
)
"""The ``TrainConfig`` fields a resumed run may change without ``override``: how long it runs,
how often it logs and saves, where the data lives and how many processes read it. Everything
else (epochs too: they shape the schedule) is the recipe."""


@dataclass(frozen=True)
class RunSteps:
    """How long a run is, in optimizer steps: ``per_epoch``, ``total`` (the schedule's span,
    all epochs) and ``last`` (where it stops: ``total`` or ``max_steps``)."""

    per_epoch: int
    total: int
    last: int


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: the model, the data, the recipe, the precision and the seed, and
    how the run logs and saves. Defaults follow the usual SGD ResNet recipe on small images.

    ``model`` is a ``seres_jax.registry`` architecture string; its input channels and classes
    default to the dataset's (``run_arch``). ``None``: ``fit`` was handed a model without a
    name, and a checkpoint of the run converts only with an explicit architecture.
    ``dataset`` names a ``seres_jax.data.DATASETS`` entry (or the ``Dataset`` given to ``fit``);
    ``augment=None`` follows the dataset's default.
    """

    model: str | None = None
    # The starting weights (timm's --initial-checkpoint: a checkpoint path, a seres work
    # directory or an ``hf-hub:`` name; --pretrained: the hub weights of `model`'s tag), the
    # classes (None: the dataset's) and input channels (None: the dataset's) of the head and stem.
    initial_checkpoint: str | None = None
    pretrained: bool = False
    num_classes: int | None = None
    in_chans: int | None = None
    dataset: str | None = None  # None: the name of the Dataset handed to ``fit``
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float | None = 0.1  # None: from lr_base, scaled with the batch (timm's rule)
    lr_base: float | None = None
    lr_base_size: int = 256
    lr_base_scale: str | None = None  # "linear" or "sqrt"; None: timm's choice per optimizer
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_all: bool = False  # True: decay biases and BatchNorm parameters too (torch default)
    opt_eps: float | None = None  # None: the optimizer's own (timm's --opt-eps)
    opt_betas: tuple[float, float] | None = None  # adamw, lamb (timm's --opt-betas)
    clip_grad: float | None = None  # timm's --clip-grad/--clip-mode; None: no clipping
    clip_mode: str = "norm"
    schedule: str = "cosine"  # torch.optim's, per update (ignored with `sched`)
    warmup_epochs: float = 1.0
    # timm's scheduler (its --sched and options), stepped per epoch unless sched_on_updates;
    # None: `schedule`.
    sched: str | None = None
    sched_on_updates: bool = False
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    warmup_prefix: bool = False
    cooldown_epochs: int = 0
    decay_epochs: float = 90
    decay_rate: float = 0.1
    decay_milestones: tuple[int, ...] = (90, 180, 270)
    lr_cycle_mul: float = 1.0
    lr_cycle_decay: float = 0.5
    lr_cycle_limit: int = 1
    lr_k_decay: float = 1.0
    patience_epochs: int = 10
    eval_metric: str = "top1"  # plateau's metric: "top1", "top5" or "loss"
    label_smoothing: float = 0.0
    mixup: float = 0.0  # timm's Mixup alphas; 0: off
    cutmix: float = 0.0
    mix_prob: float = 1.0
    mixup_switch_prob: float = 0.5  # cutmix's share when both are on (timm's)
    # timm's BinaryCrossEntropy on the (mixed) soft targets in place of the cross-entropy.
    bce_loss: bool = False
    bce_target_thresh: float | None = None
    bce_sum: bool = False
    bce_pos_weight: float | None = None
    # Micro-batches per optimizer update (timm's --grad-accum-steps); `batch_size` is the
    # update's whole batch, split into this many.
    grad_accum_steps: int = 1
    # Stochastic depth and dropout before the classifier (timm's --drop-path, --drop): the
    # architecture's drop_path_rate and drop_rate; None: the architecture string's.
    drop_path: float | None = None
    drop: float | None = None
    # timm's ModelEmaV3, evaluated each epoch beside the trained weights.
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    model_ema_warmup: bool = False
    augment: bool | None = None
    color_jitter: float = 0.0
    # timm's training transform and sampler (its train.py names): RandAugment/AutoAugment,
    # random erasing (on the device, after normalisation), repeated augmentation, the crop's
    # scale and ratio, flips, jitter and greyscale probabilities, the crop's interpolation.
    aa: str | None = None
    reprob: float = 0.0
    remode: str = "pixel"
    recount: int = 1
    resplit: bool = False
    aug_repeats: int = 0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter_prob: float | None = None
    grayscale_prob: float = 0.0
    train_interpolation: str | None = None  # None: `interpolation`'s (timm's default: random)
    # Image datasets' preprocessing; None: the model's pretrained data config (timm's).
    image_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    # Per-epoch evaluation's size and crop; None: the weights' test config where they have
    # one (timm's pretrained test_input_size/test_crop_pct), else the training size's.
    val_image_size: int | None = None
    val_crop_pct: float | None = None
    skip_bad_images: bool = False
    workers: int = 0  # grain worker processes (0: threads of the training process)
    precision: str = "fp32"
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 0  # steps; 0: only at the end
    keep: int = 3
    max_steps: int | None = None  # stop early (the schedule still spans all epochs)

    def validate(self, num_devices: int) -> None:
        """Raise ``TrainingError`` naming every bad field at once; ``num_devices`` must divide
        the batch size."""

        def finite_at_least_0(value: float) -> bool:
            return math.isfinite(value) and value >= 0

        checks = [
            (self.optimizer in TIMM_OPTIMIZER_NAMES,
             f"optimizer must be one of {', '.join(TIMM_OPTIMIZER_NAMES)}, "
             f"got {self.optimizer!r}"),
            (self.schedule != "onecycle" or self.optimizer in _CYCLED,
             f"schedule onecycle cycles the momentum of {', '.join(_CYCLED)} only, "
             f"got optimizer {self.optimizer!r}"),
            (self.opt_eps is None or (math.isfinite(self.opt_eps) and self.opt_eps > 0),
             f"opt_eps must be a finite number > 0, got {self.opt_eps}"),
            (self.opt_betas is None or (len(self.opt_betas) == 2
                                        and all(0 <= b < 1 for b in self.opt_betas)),
             f"opt_betas must be two numbers in [0, 1), got {self.opt_betas}"),
            (self.clip_grad is None or (math.isfinite(self.clip_grad) and self.clip_grad > 0),
             f"clip_grad must be a finite number > 0, got {self.clip_grad}"),
            (self.clip_mode in CLIP_MODES,
             f"clip_mode must be one of {', '.join(CLIP_MODES)}, got {self.clip_mode!r}"),
            (self.schedule in SCHEDULE_NAMES,
             f"schedule must be one of {', '.join(SCHEDULE_NAMES)}, got {self.schedule!r}"),
            (self.precision in PRECISIONS,
             f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.lr is None or (math.isfinite(self.lr) and self.lr > 0),
             f"lr must be a finite number > 0, got {self.lr}"),
            (self.lr is not None or self.lr_base is not None, "lr or lr_base is needed"),
            (self.lr_base is None or (math.isfinite(self.lr_base) and self.lr_base > 0),
             f"lr_base must be a finite number > 0, got {self.lr_base}"),
            (self.lr_base_size >= 1, f"lr_base_size must be >= 1, got {self.lr_base_size}"),
            (self.lr_base_scale in (None, "linear", "sqrt"),
             f"lr_base_scale must be linear or sqrt, got {self.lr_base_scale!r}"),
            (self.sched is None or self.sched in TIMM_SCHEDULES,
             f"sched must be one of {', '.join(TIMM_SCHEDULES)}, got {self.sched!r}"),
            (self.sched is None or float(self.warmup_epochs).is_integer(),
             f"warmup_epochs must be a whole number with sched, got {self.warmup_epochs}"),
            (all(math.isfinite(v) and v >= 0 for v in (self.warmup_lr, self.min_lr)),
             f"warmup_lr and min_lr must be finite numbers >= 0, got {self.warmup_lr} and "
             f"{self.min_lr}"),
            (math.isfinite(self.decay_rate) and self.decay_rate > 0,
             f"decay_rate must be a finite number > 0, got {self.decay_rate}"),
            (self.eval_metric in EVAL_METRICS,
             f"eval_metric must be one of {', '.join(EVAL_METRICS)}, got {self.eval_metric!r}"),
            (self.cooldown_epochs >= 0 and self.patience_epochs >= 0,
             "cooldown_epochs and patience_epochs must be >= 0"),
            (finite_at_least_0(self.momentum),
             f"momentum must be a finite number >= 0, got {self.momentum}"),
            (finite_at_least_0(self.weight_decay),
             f"weight_decay must be a finite number >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (finite_at_least_0(self.mixup),
             f"mixup must be a finite number >= 0, got {self.mixup}"),
            (finite_at_least_0(self.cutmix),
             f"cutmix must be a finite number >= 0, got {self.cutmix}"),
            (0 <= self.mix_prob <= 1, f"mix_prob must be in [0, 1], got {self.mix_prob}"),
            (0 <= self.mixup_switch_prob <= 1,
             f"mixup_switch_prob must be in [0, 1], got {self.mixup_switch_prob}"),
            (self.bce_target_thresh is None or 0 <= self.bce_target_thresh <= 1,
             f"bce_target_thresh must be in [0, 1], got {self.bce_target_thresh}"),
            (self.bce_pos_weight is None or (math.isfinite(self.bce_pos_weight)
                                             and self.bce_pos_weight > 0),
             f"bce_pos_weight must be a finite number > 0, got {self.bce_pos_weight}"),
            (self.drop_path is None or 0 <= self.drop_path < 1,
             f"drop_path must be in [0, 1), got {self.drop_path}"),
            (self.drop is None or 0 <= self.drop < 1, f"drop must be in [0, 1), got {self.drop}"),
            (0 <= self.model_ema_decay <= 1,
             f"model_ema_decay must be in [0, 1], got {self.model_ema_decay}"),
            (self.grad_accum_steps >= 1,
             f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}"),
            (self.val_image_size is None or self.val_image_size >= 1,
             f"val_image_size must be >= 1, got {self.val_image_size}"),
            (self.val_crop_pct is None or 0 < self.val_crop_pct <= 1,
             f"val_crop_pct must be in (0, 1], got {self.val_crop_pct}"),
            (self.micro_batch % 2 == 0 or not (self.mixup or self.cutmix),
             "mixup and cutmix need an even batch size (of each micro-batch), got "
             f"{self.micro_batch}"),
            (finite_at_least_0(self.color_jitter),
             f"color_jitter must be a finite number >= 0, got {self.color_jitter}"),
            (0 <= self.reprob <= 1, f"reprob must be in [0, 1], got {self.reprob}"),
            (self.remode in ERASE_MODES,
             f"remode must be one of {', '.join(ERASE_MODES)}, got {self.remode!r}"),
            (self.recount >= 1, f"recount must be >= 1, got {self.recount}"),
            (self.aug_repeats >= 0, f"aug_repeats must be >= 0, got {self.aug_repeats}"),
            (len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1,
             f"scale must be two numbers 0 < low <= high <= 1, got {self.scale}"),
            (len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1]
             and math.isfinite(self.ratio[1]),
             f"ratio must be two finite numbers 0 < low <= high, got {self.ratio}"),
            (all(0 <= p <= 1 for p in (self.hflip, self.vflip, self.grayscale_prob)),
             f"hflip, vflip and grayscale_prob must be in [0, 1], got {self.hflip}, "
             f"{self.vflip} and {self.grayscale_prob}"),
            (self.color_jitter_prob is None or 0 <= self.color_jitter_prob <= 1,
             f"color_jitter_prob must be in [0, 1], got {self.color_jitter_prob}"),
            (self.train_interpolation is None
             or self.train_interpolation in (*INTERPOLATIONS, "random"),
             f"train_interpolation must be random or one of {', '.join(INTERPOLATIONS)}, "
             f"got {self.train_interpolation!r}"),
            (self.image_size is None or self.image_size >= 1,
             f"image_size must be >= 1, got {self.image_size}"),
            (self.crop_pct is None or 0 < self.crop_pct <= 1,
             f"crop_pct must be in (0, 1], got {self.crop_pct}"),
            (self.interpolation is None or self.interpolation in INTERPOLATIONS,
             f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
             f"got {self.interpolation!r}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.num_classes is None or self.num_classes >= 1,
             f"num_classes must be >= 1, got {self.num_classes}"),
            (self.in_chans is None or self.in_chans >= 1,
             f"in_chans must be >= 1, got {self.in_chans}"),
            (not (self.pretrained and self.initial_checkpoint),
             "pretrained and initial_checkpoint exclude each other (one source of weights)"),
            (finite_at_least_0(self.warmup_epochs),
             f"warmup_epochs must be a finite number >= 0, got {self.warmup_epochs}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.checkpoint_every >= 0,
             f"checkpoint_every must be >= 0, got {self.checkpoint_every}"),
            (self.keep >= 1, f"keep must be >= 1, got {self.keep}"),
            (0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}"),
            (self.max_steps is None or self.max_steps >= 1,
             f"max_steps must be >= 1, got {self.max_steps}"),
            (self.batch_size < 1 or self.grad_accum_steps < 1
             or self.batch_size % (num_devices * self.grad_accum_steps) == 0,
             f"batch size {self.batch_size} is not divisible by the {num_devices} devices"
             + (f" x {self.grad_accum_steps} accumulation steps"
                if self.grad_accum_steps > 1 else "")),
        ]  # fmt: skip
        problems = [message for ok, message in checks if not ok]
        if self.aa:
            try:
                check_auto_augment(self.aa)
            except DataError as err:
                problems.append(f"aa: {err}")
        if self.sched in TIMM_SCHEDULES and not problems:
            try:  # what timm itself would crash on or misapply (seres_jax.scheduler checks)
                self.timm_schedule(1)
            except ValueError as err:
                problems.append(f"sched {self.sched}: {err}")
        if problems:
            raise TrainingError("; ".join(problems))

    @property
    def micro_batch(self) -> int:
        """The examples of one forward pass: ``batch_size / grad_accum_steps``."""
        return self.batch_size // max(self.grad_accum_steps, 1)

    def ema_config(self) -> EmaConfig | None:
        """timm's ``ModelEmaV3(decay=model_ema_decay, use_warmup=model_ema_warmup)``, or
        ``None`` without ``model_ema``."""
        if not self.model_ema:
            return None
        return EmaConfig(decay=self.model_ema_decay, use_warmup=self.model_ema_warmup)

    def erasing(self) -> RandomErasing | None:
        """timm's ``RandomErasing(reprob, mode=remode, max_count=recount)``, or ``None`` with
        ``reprob`` 0. ``resplit`` acts only on augmentation splits, which seres does not
        make: it changes nothing here, as in timm without ``--aug-splits``."""
        if not self.reprob:
            return None
        return RandomErasing(self.reprob, mode=self.remode, max_count=self.recount)

    @property
    def augments(self) -> bool:
        """Whether the run augments: ``augment``, or else its dataset's default."""
        if self.augment is not None:
            return self.augment
        spec = DATASETS.get(self.dataset or "")
        return spec is not None and spec.augment

    def data_options(self, *, val_at_test_size: bool = True) -> DataOptions:
        """What the run asks of its dataset: augmentation, and for image datasets the model's
        pretrained data config (``seres_jax.registry.data_config``; where the run starts from
        an ``initial_checkpoint``, the weights' own) with the run's
        ``image_size``, ``crop_pct`` and ``interpolation`` in its place; the validation
        split's at ``val_image_size``/``val_crop_pct``, else the weights' test size and crop
        where they have one and the run sets no ``image_size``/``crop_pct`` of its own
        (``val_at_test_size=False``: the training size's, as timm's
        ``resolve_data_config({}, model=m)``)."""
        from ..registry import data_config

        # timm's resolve_data_config: the weights' own pretrained config where they carry one.
        pretrained = self._weights_data_config() or data_config(self.model)
        train = pretrained.for_eval(self.image_size, self.crop_pct, self.interpolation)
        val = pretrained.for_eval(
            self.val_image_size or self.image_size,
            self.val_crop_pct or self.crop_pct,
            self.interpolation,
            use_test_size=val_at_test_size and self.image_size is None and self.crop_pct is None,
        )
        return DataOptions(
            augment=self.augments,
            data_config=train,
            val_config=val if val != train else None,
            color_jitter=self.color_jitter,
            skip_bad_images=self.skip_bad_images,
            synthetic_size=self.image_size,
            auto_augment=self.aa,
            scale=self.scale,
            ratio=self.ratio,
            train_interpolation=self.train_interpolation,
            hflip=self.hflip,
            vflip=self.vflip,
            color_jitter_prob=self.color_jitter_prob,
            grayscale_prob=self.grayscale_prob,
        )

    def _weights_data_config(self) -> DataConfig | None:
        """The preprocessing ``initial_checkpoint``'s weights were trained with: a timm model's
        ``pretrained_cfg`` (``hf-hub:`` or a timm directory), or the training preprocessing of
        the seres run it belongs to; ``None`` for bare weights."""
        from ..hub import resolve_model
        from .workdir import find_run_config

        if not self.initial_checkpoint:
            return None
        weights = resolve_model(self.initial_checkpoint)
        if weights is not None:
            return weights.data_config
        run = find_run_config(self.initial_checkpoint)
        if run is None:
            return None
        if "data" in run[1]:  # what the run recorded it trained with
            return DataConfig(**run[1]["data"]["train"])
        # A run of an earlier seres: its preprocessing from its config.
        return TrainConfig.from_record(run[1]["config"]).data_options().data_config

    @classmethod
    def from_record(cls, stored: Mapping[str, Any]) -> TrainConfig:
        """The config a run's ``config.json`` records (``"config"``), leaving out fields this
        seres does not have (a later one's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in names})

    def steps(self, num_train: int) -> RunSteps:
        """The run's length in steps over ``num_train`` training images (the one place it is
        computed: ``fit`` and the command line's progress bar both use it). With timm's
        ``aug_repeats`` an epoch is timm's ``RepeatAugSampler`` epoch
        (``seres_jax.data.steps_per_epoch``). With timm's
        ``sched`` the run trains timm's epoch count (its cycles and ``cooldown_epochs``
        included, as timm's ``create_scheduler_v2`` returns it)."""
        per_epoch = steps_per_epoch(num_train, self.batch_size, self.aug_repeats)
        epochs = self.epochs if self.sched is None else self.timm_schedule(per_epoch).num_epochs
        total = epochs * per_epoch
        return RunSteps(per_epoch, total, min(total, self.max_steps or total))

    def resolved(self) -> TrainConfig:
        """This config with ``lr`` computed from ``lr_base`` when it is ``None``, as timm's
        ``train.py`` computes it: scaled by ``batch_size`` (the global batch of an update,
        every device and micro-batch) over ``lr_base_size``."""
        if self.lr is not None or self.lr_base is None:
            return self
        lr = scale_lr(self.lr_base, self.batch_size, lr_base_size=self.lr_base_size,
                      lr_base_scale=self.lr_base_scale, opt=self.optimizer)  # fmt: skip
        return replace(self, lr=lr)

    def timm_schedule(self, steps_per_epoch: int) -> LRSchedule:
        """timm's ``create_scheduler_v2`` for this run's ``sched`` and its options."""
        return create_scheduler(
            self.lr or 0.0, sched=self.sched or "cosine", num_epochs=self.epochs,
            decay_epochs=self.decay_epochs, decay_milestones=self.decay_milestones,
            cooldown_epochs=self.cooldown_epochs, patience_epochs=self.patience_epochs,
            decay_rate=self.decay_rate, min_lr=self.min_lr, warmup_lr=self.warmup_lr,
            warmup_epochs=int(self.warmup_epochs), warmup_prefix=self.warmup_prefix,
            cycle_mul=self.lr_cycle_mul, cycle_decay=self.lr_cycle_decay,
            cycle_limit=self.lr_cycle_limit, k_decay=self.lr_k_decay,
            step_on_epochs=not self.sched_on_updates, updates_per_epoch=max(steps_per_epoch, 1),
            plateau_mode="min" if self.eval_metric == "loss" else "max",
        )  # fmt: skip

    def make_schedule(self, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
        """The learning-rate schedule over ``total_steps``: timm's ``sched``
        (``seres_jax.scheduler``), else ``schedule`` (``seres_jax.optim``)."""
        if self.sched is None:
            return optim.recipe_schedule(self, total_steps, steps_per_epoch)
        timm = self.timm_schedule(steps_per_epoch)
        if timm.plateau is not None:  # the first epoch's lr; `fit` sets each next one
            return optax.constant_schedule(timm.plateau.lr)
        assert timm.schedule is not None
        return timm.schedule

    def make_tx(self, schedule: optax.Schedule, total_steps: int) -> optax.GradientTransformation:
        """The optimizer driven by ``schedule`` (``seres_jax.optim`` builds it; with the
        one-cycle schedule its momentum or β1 cycles too, as in torch's ``OneCycleLR``).
        With ``sched="plateau"`` the lr is a hyperparameter in the optimizer state
        (``optax.inject_hyperparams``), starting at ``schedule(0)``: the metric-driven lr
        changes once an epoch without recompiling the step (``set_learning_rate``)."""
        if self.sched == "plateau":
            factory = functools.partial(optim.recipe_optimizer, self, total_steps=total_steps)
            return optax.inject_hyperparams(lambda learning_rate: factory(schedule=learning_rate))(
                learning_rate=schedule(0)
            )
        return optim.recipe_optimizer(self, schedule, total_steps)


def run_arch(config: TrainConfig, channels: int, num_classes: int) -> str:
    """``config.model`` with the input ``channels`` and ``num_classes`` of the data filled in
    (``config.num_classes``, timm's ``--num-classes``, may ask for more classes),
    e.g. ``"seresnet_tiny:in_ch=1,num_classes=10"``: the architecture the run trains. A model
    that names other channels, or another number of classes than the data has, is a
    ``TrainingError``."""
    from ..registry import MODELS, format_arch, parse_arch

    if config.model is None:
        raise TrainingError("the run names no model (TrainConfig.model is None)")
    name, overrides = parse_arch(config.model)
    channels_arg = MODELS[name].in_channels_arg
    if config.in_chans not in (None, channels):
        raise TrainingError(f"--in-chans {config.in_chans}, but {config.dataset} images have "
                            f"{channels} channels")  # fmt: skip
    if config.num_classes is not None:
        if config.num_classes < num_classes:
            raise TrainingError(f"--num-classes {config.num_classes} is fewer than the "
                                f"{num_classes} classes of {config.dataset}")  # fmt: skip
        num_classes = config.num_classes
    if overrides.get(channels_arg, channels) != channels:
        raise TrainingError(f"--model has {channels_arg}={overrides[channels_arg]}, but "
                            f"{config.dataset} images have {channels} channels")  # fmt: skip
    if overrides.get("num_classes", num_classes) != num_classes:
        raise TrainingError(f"--model has num_classes={overrides['num_classes']}, but "
                            f"{config.dataset} has {num_classes} classes")  # fmt: skip
    # --drop-path / --drop are the architecture's stochastic depth and dropout rates.
    rates = {"drop_path_rate": config.drop_path, "drop_rate": config.drop}
    rates = {key: value for key, value in rates.items() if value is not None}
    accepted = MODELS[name].arguments()
    for key, value in rates.items():
        flag = "--drop-path" if key == "drop_path_rate" else "--drop"
        if key not in accepted:
            raise TrainingError(f"{flag}: {name} has no {key} (no such layer in the model)")
        if overrides.get(key, value) != value:
            raise TrainingError(f"{flag} {value} contradicts --model's {key}={overrides[key]}")
    full = {channels_arg: channels, "num_classes": num_classes, **overrides, **rates}
    return format_arch(name, full)
