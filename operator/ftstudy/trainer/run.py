"""One trial from start to finish: train with LoRA, score at the early step and report, keep training, score at
the end on validation, test and independent test, save adapters.

The order of work at the early step matters: the adapter is saved *before* the accuracy is reported, so when the
study reads an early accuracy, the checkpoint it refers to already exists. Every file is written to a temporary
name and renamed, so a SIGTERM or a crash never leaves a half-written adapter or result.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import get_scheduler

from ftstudy.task.dataset import Example, load_jsonl
from ftstudy.trainer.config import TARGET_MODULES, Hyperparameters, RunSettings, early_step, total_steps
from ftstudy.trainer.encoding import Encoded, Encoder, answer_token_budget, training_batch
from ftstudy.trainer.evaluate import Interrupted, accuracy, eval_loss
from ftstudy.trainer.model import load_model
from ftstudy.trainer.reporting import Reporter, TrialStatus, UserAttr

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    COMPLETED = "completed"  # trained to the end and scored
    PRUNED = "pruned"  # the study cancelled the trial; stopped early on purpose
    DIVERGED = "diverged"  # the loss became NaN/inf: scored 0, as the paper's failed high-lr/high-alpha models
    TERMINATED = "terminated"  # SIGTERM: stopped promptly, nothing half-written
    FINISHED_ELSEWHERE = "finished_elsewhere"  # the study finished the trial while it was still training


@dataclass
class TrialResult:
    outcome: Outcome
    total_steps: int
    early_step: int
    steps_done: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def save_adapter(model: Any, target: Path) -> None:
    """Write to a sibling temporary directory, then swap it in: readers see the old adapter or the new one."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def batch_stream(items: list[Encoded], batch_size: int, seed: int) -> Iterator[list[Encoded]]:
    """An endless stream of shuffled micro-batches, reshuffled each epoch, fixed by the seed.

    ``batch_size`` must not exceed ``len(items)``; a last partial batch of an epoch is dropped, so every step
    sees the same number of examples.
    """
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(items), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [items[i] for i in order[start : start + batch_size]]


def train_step(
    model: Any,
    batches: Iterator[list[Encoded]],
    hp: Hyperparameters,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    pad_id: int,
    device: torch.device,
) -> float:
    """One optimiser step over ``grad_accum`` micro-batches; returns the step's mean loss."""
    step_loss = 0.0
    for _ in range(hp.grad_accum):
        batch = {k: v.to(device, non_blocking=True) for k, v in training_batch(next(batches), pad_id).items()}
        loss = model(**batch).loss / hp.grad_accum
        loss.backward()
        step_loss += float(loss.detach())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss


@dataclass
class Data:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    independent_test: list[Example]


def load_data(settings: RunSettings) -> Data:
    attrs = settings.attributes
    directory = settings.data_dir
    independent = directory / "independent_test.jsonl"
    return Data(
        train=load_jsonl(directory / "train.jsonl", attrs, settings.train_samples),
        validation=load_jsonl(directory / "validation.jsonl", attrs, settings.eval_samples),
        test=load_jsonl(directory / "test.jsonl", attrs, settings.test_samples),
        independent_test=load_jsonl(independent, attrs, settings.test_samples) if independent.exists() else [],
    )


class Trainer:
    def __init__(self, settings: RunSettings, reporter: Reporter, stop: threading.Event) -> None:
        settings.check()
        self.settings = settings
        self.reporter = reporter
        self.stop = stop
        self.out = settings.output_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.summary: dict[str, Any] = {}

    def _record(self, attrs: dict[str, Any], to_storage: bool = True) -> None:
        self.summary.update(attrs)
        _write_json_atomic(self.out / "result.json", self.summary)
        if to_storage:
            self.reporter.set_attrs(attrs)

    def run(self) -> TrialResult:
        s = self.settings
        hp = Hyperparameters.from_params(self.reporter.params())
        data = load_data(s)
        torch.manual_seed(s.seed)
        loaded = load_model(s.model, s.device, s.seed)
        tokenizer, device = loaded.tokenizer, loaded.device
        encoder = Encoder(
            tokenizer,
            s.attributes,
            s.max_seq_len,
            answer_token_budget(tokenizer, data.train, s.attributes),
            s.preprocess,
        )
        model = get_peft_model(
            loaded.model,
            LoraConfig(
                r=hp.lora_r,
                lora_alpha=hp.lora_alpha,
                lora_dropout=hp.lora_dropout,
                target_modules=TARGET_MODULES[hp.target_modules],
                task_type="CAUSAL_LM",
            ),
        )
        model.train()
        train_items = [encoder.encode(e) for e in data.train]
        val_items = [encoder.encode(e) for e in data.validation]
        total = total_steps(s, hp, len(train_items))
        early = early_step(total, s.early_fraction)
        loss_every = max(1, math.ceil(total / s.eval_loss_points))
        result = TrialResult(outcome=Outcome.COMPLETED, total_steps=total, early_step=early)

        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        scheduler = get_scheduler(
            hp.lr_scheduler,
            optimizer,
            num_warmup_steps=int(hp.warmup_ratio * total),
            num_training_steps=total,
        )
        self._record(
            {
                UserAttr.TOTAL_STEPS: total,
                UserAttr.EARLY_STEP: early,
                "hyperparameters": asdict(hp),
                "model": s.model,
                "train_examples": len(train_items),
            },
            to_storage=False,
        )
        self.reporter.set_attrs({UserAttr.TOTAL_STEPS: total, UserAttr.EARLY_STEP: early})
        log.info(
            "training %s for %d steps (early evaluation at step %d) on %s, %s",
            s.model,
            total,
            early,
            device,
            loaded.dtype,
        )

        batches = batch_stream(train_items, min(hp.batch_size, len(train_items)), s.seed)
        started = time.monotonic()
        best_loss, best_loss_step = math.inf, 0
        early_reported = False
        for step in range(1, total + 1):
            if self.stop.is_set():
                return self._terminated(result, step - 1)
            step_loss = train_step(model, batches, hp, optimizer, scheduler, tokenizer.pad_token_id, device)
            result.steps_done = step

            if not math.isfinite(step_loss):
                return self._diverged(result, step, early_reported, started)
            if step % s.check_every == 0:
                status = self.reporter.status()
                if status is not TrialStatus.RUNNING:
                    return self._stopped_by_study(result, status, step)
            if step % loss_every == 0 or step == total:
                current = eval_loss(model, val_items, s.eval_batch_size, tokenizer.pad_token_id, device)
                if current < best_loss:
                    best_loss, best_loss_step = current, step
                log.info("step %d/%d train loss %.4f eval loss %.4f", step, total, step_loss, current)
            if step == early:
                try:
                    self._early(model, encoder, data, step, device)
                except Interrupted:
                    return self._terminated(result, step)
                early_reported = True

        try:
            final = accuracy(model, encoder, data.validation, s.eval_batch_size, device, self.stop)
            test = accuracy(model, encoder, data.test, s.eval_batch_size, device, self.stop)
            independent = (
                accuracy(model, encoder, data.independent_test, s.eval_batch_size, device, self.stop)
                if data.independent_test
                else None
            )
        except Interrupted:
            return self._terminated(result, total)
        adapter = self.out / "final_adapter"
        save_adapter(model, adapter)
        attrs: dict[str, Any] = {
            UserAttr.FINAL_ACCURACY: final.mean,
            UserAttr.FINAL_PER_ATTRIBUTE: final.per_attribute,
            UserAttr.TEST_ACCURACY: test.mean,
            UserAttr.TEST_PER_ATTRIBUTE: test.per_attribute,
            UserAttr.BEST_EVAL_LOSS: best_loss,
            UserAttr.BEST_EVAL_LOSS_STEP: best_loss_step,
            UserAttr.FINAL_ADAPTER: str(adapter),
            UserAttr.STEPS_DONE: total,
            UserAttr.TRAIN_SECONDS: round(time.monotonic() - started, 3),
            UserAttr.OUTCOME: Outcome.COMPLETED.value,
        }
        if independent is not None:
            attrs[UserAttr.INDEPENDENT_TEST_ACCURACY] = independent.mean
            attrs[UserAttr.INDEPENDENT_TEST_PER_ATTRIBUTE] = independent.per_attribute
        self._record(attrs)
        log.info("finished: validation %.4f, test %.4f", final.mean, test.mean)
        result.attrs = self.summary
        return result

    def _early(self, model: Any, encoder: Encoder, data: Data, step: int, device: torch.device) -> None:
        s = self.settings
        early = accuracy(model, encoder, data.validation, s.eval_batch_size, device, self.stop)
        adapter = self.out / "early_adapter"
        save_adapter(model, adapter)
        self._record(
            {
                UserAttr.EARLY_ACCURACY: early.mean,
                UserAttr.EARLY_PER_ATTRIBUTE: early.per_attribute,
                UserAttr.EARLY_ADAPTER: str(adapter),
                UserAttr.EARLY_REPORTED_AT: round(time.time(), 3),  # the operator times its decision from here
            }
        )
        # The intermediate value is the signal the study acts on, so it goes last: everything it refers to exists.
        self.reporter.report_early(step, early.mean)
        log.info("early evaluation at step %d: accuracy %.4f (reported)", step, early.mean)

    def _terminated(self, result: TrialResult, step: int) -> TrialResult:
        log.warning("stop requested: ending at step %d", step)
        result.outcome, result.steps_done = Outcome.TERMINATED, step
        self._record({UserAttr.OUTCOME: Outcome.TERMINATED.value, UserAttr.STEPS_DONE: step}, to_storage=False)
        return result

    def _stopped_by_study(self, result: TrialResult, status: TrialStatus, step: int) -> TrialResult:
        outcome = Outcome.PRUNED if status is TrialStatus.PRUNED else Outcome.FINISHED_ELSEWHERE
        log.info("the study marked this trial %s; stopping at step %d", status.value, step)
        result.outcome, result.steps_done = outcome, step
        # The trial is finished in the storage, which refuses further writes: record locally only.
        self._record({UserAttr.OUTCOME: outcome.value, UserAttr.STEPS_DONE: step}, to_storage=False)
        return result

    def _diverged(self, result: TrialResult, step: int, early_reported: bool, started: float) -> TrialResult:
        """A NaN loss is a result, not a crash: report accuracy 0 so the sampler learns to avoid the region."""
        log.warning("loss is not finite at step %d: the model diverged; reporting accuracy 0", step)
        result.outcome, result.steps_done = Outcome.DIVERGED, step
        attrs: dict[str, Any] = {
            UserAttr.OUTCOME: Outcome.DIVERGED.value,
            UserAttr.STEPS_DONE: step,
            UserAttr.FAILURE_REASON: f"training loss became NaN or infinite at step {step}",
            UserAttr.TRAIN_SECONDS: round(time.monotonic() - started, 3),
        }
        if not early_reported:
            attrs[UserAttr.EARLY_ACCURACY] = 0.0
            attrs[UserAttr.EARLY_REPORTED_AT] = round(time.time(), 3)
        self._record(attrs)
        if not early_reported:
            self.reporter.report_early(result.early_step, 0.0)
        return result
