"""What one trainer run needs: the trial's hyperparameters (from the study) and the run's fixed settings.

Hyperparameters are what a study searches over and may differ per trial; settings are the same for every trial of
a study (model, data, training length). Unknown or out-of-range hyperparameters are refused by name, because a
silently ignored typo would make a whole study search nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES
from ftstudy.task.preprocess import PreprocessConfig

TARGET_MODULES = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "attention_mlp": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qv": ["q_proj", "v_proj"],
}
SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
# Run settings a study may search like hyperparameters: the data-efficiency sweep searches the training set's size.
SEARCHABLE_SETTINGS = ("train_samples",)
# How much of a trial one trainer run does: all of it; up to the early step, then checkpoint and exit (screening);
# or from that checkpoint to the end (a promoted trial).
STAGES = ("full", "screen", "resume")


class ConfigError(ValueError):
    """A hyperparameter or setting that cannot be used; the message names it and the allowed values."""


@dataclass(frozen=True)
class Hyperparameters:
    learning_rate: float = 2e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: str = "attention"
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lr_scheduler: str = "linear"
    batch_size: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Hyperparameters:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown hyperparameter(s) {', '.join(unknown)}; the trainer supports {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in params.items():
            kind = type(getattr(cls(), name))
            try:
                values[name] = int(value) if kind is int and float(value).is_integer() else kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"hyperparameter {name}={value!r} is not a {kind.__name__}") from None
        hp = cls(**values)
        hp.check()
        return hp

    def check(self) -> None:
        rules = [
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.lora_r >= 1, "lora_r must be >= 1"),
            (self.lora_alpha > 0, "lora_alpha must be > 0"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (
                self.target_modules in TARGET_MODULES,
                f"target_modules must be one of {', '.join(TARGET_MODULES)}",
            ),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.lr_scheduler in SCHEDULERS, f"lr_scheduler must be one of {', '.join(SCHEDULERS)}"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.max_grad_norm > 0, "max_grad_norm must be > 0"),
        ]
        for ok, message in rules:
            if not ok:
                raise ConfigError(message)


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's parameters as (hyperparameters, run-setting overrides such as ``train_samples``)."""
    settings = {k: v for k, v in params.items() if k in SEARCHABLE_SETTINGS}
    return {k: v for k, v in params.items() if k not in SEARCHABLE_SETTINGS}, settings


@dataclass(frozen=True)
class RunSettings:
    model: str
    data_dir: Path
    output_dir: Path
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    train_samples: int | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    min_steps: int | None = None
    max_seq_len: int = 1024
    early_fraction: float = 0.2
    extra_eval_fractions: tuple[float, ...] = ()
    # Screening in rungs (``promotion.rungs``): the rungs after the early one. A resumed run stops, checkpointed and
    # scored, at the first of them after its checkpoint's step; the study decides whether it goes on.
    rungs: tuple[float, ...] = ()
    eval_samples: int | None = 100
    test_samples: int | None = 100
    eval_batch_size: int = 16
    group_by_length: bool = False  # batches of similar lengths (``ftstudy.trainer.run.batch_stream``)
    eval_loss_points: int = 10
    check_every: int = 5
    seed: int = 0
    device: str = "auto"
    score_base_model: bool = False  # also score the model before any training (the study's zero-shot accuracy)
    stage: str = "full"  # one of STAGES
    # SIGTERM from outside (a drain, a preemption, Kueue suspending the Job): checkpoint and exit ``preempted`` so
    # that the Job's next pod resumes there (a Job's trials); off, a SIGTERM just stops (``ftstudy run`` cancels).
    checkpoint_on_stop: bool = False
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def with_overrides(self, overrides: dict[str, Any]) -> RunSettings:
        """The settings with a trial's searched ones applied (``train_samples``), checked."""
        values: dict[str, Any] = {}
        for name, value in overrides.items():
            try:
                values[name] = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}={value!r} is not an integer") from None
        changed = replace(self, **values)
        changed.check()
        return changed

    def check(self) -> None:
        if not 0 < self.early_fraction < 1:
            raise ConfigError(f"early_fraction must be in (0, 1), got {self.early_fraction}")
        if any(not 0 < f < 1 for f in self.extra_eval_fractions):
            raise ConfigError(f"extra evaluation fractions must be in (0, 1), got {list(self.extra_eval_fractions)}")
        if any(not self.early_fraction < f < 1 for f in self.rungs) or list(self.rungs) != sorted(set(self.rungs)):
            raise ConfigError(
                f"rungs must be increasing fractions in (early_fraction, 1), got {list(self.rungs)} "
                f"(early_fraction {self.early_fraction})"
            )
        for name in ("max_steps", "min_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.epochs <= 0:
            raise ConfigError("epochs must be > 0")
        if self.train_samples is not None and self.train_samples < 0:
            raise ConfigError("train_samples must be >= 0 (0 scores the base model without training)")
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.check_every < 1 or self.eval_loss_points < 1 or self.eval_batch_size < 1:
            raise ConfigError("check_every, eval_loss_points and eval_batch_size must be >= 1")


def total_steps(settings: RunSettings, hp: Hyperparameters, train_examples: int) -> int:
    """Known before training starts, so the early step is known too. ``max_steps`` wins; otherwise the epochs'
    steps, raised to ``min_steps`` so a small training set is repeated rather than barely seen; 0 with no
    training examples (the base model is only scored)."""
    if train_examples == 0:
        return 0
    if settings.max_steps is not None:
        return settings.max_steps
    per_step = hp.batch_size * hp.grad_accum
    return max(1, settings.min_steps or 1, math.ceil(train_examples * settings.epochs / per_step))


def early_step(total: int, fraction: float) -> int:
    """The optimiser step nearest to ``fraction`` of training (at least the first)."""
    return min(total, max(1, round(total * fraction)))
