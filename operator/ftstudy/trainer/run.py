"""One trial from start to finish: train with LoRA, score at the early step and report, keep training, score at
the end on validation, test and independent test, save adapters.

The order of work at the early step matters: the adapter is saved *before* the accuracy is reported, so when the
study reads an early accuracy, the checkpoint it refers to already exists. Every file is written to a temporary
name and renamed, so a SIGTERM or a crash never leaves a half-written adapter or result.

A run may do part of a trial (``RunSettings.stage``): ``screen`` stops at the early step, after writing a full
checkpoint (``ftstudy.trainer.checkpoint``) and before reporting, and exits so its accelerator is free; ``resume``
loads that checkpoint and trains from the next step to the end, exactly as the uninterrupted run would have, or,
with ``RunSettings.rungs`` (screening in rungs), to the first rung after the checkpoint's step, where it checkpoints,
then scores validation and records it (``rung_accuracy``), and exits screened again (``_rung``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import get_scheduler

from ftstudy import faults
from ftstudy.retry import Stopped
from ftstudy.task.dataset import Example, load_jsonl
from ftstudy.task.scoring import Accuracy
from ftstudy.trainer import checkpoint
from ftstudy.trainer.artifacts import Artifacts, LocalArtifacts
from ftstudy.trainer.atomic import replace_directory
from ftstudy.trainer.config import (
    TARGET_MODULES,
    Hyperparameters,
    RunSettings,
    early_step,
    split_params,
    total_steps,
)
from ftstudy.trainer.distributed import ALONE, World
from ftstudy.trainer.encoding import Encoded, Encoder, answer_token_budget, answer_tokens, training_batch
from ftstudy.trainer.evaluate import Interrupted, accuracy, eval_loss
from ftstudy.trainer.loss import answer_loss
from ftstudy.trainer.model import load_model
from ftstudy.trainer.reporting import PAGE_SCORES, Reporter, TrialStatus, UserAttr

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    COMPLETED = "completed"  # trained to the end and scored
    PRUNED = "pruned"  # the study cancelled the trial; stopped early on purpose
    DIVERGED = "diverged"  # the loss became NaN/inf: scored 0, as the paper's failed high-lr/high-alpha models
    TERMINATED = "terminated"  # SIGTERM: stopped promptly, nothing half-written
    FINISHED_ELSEWHERE = "finished_elsewhere"  # the study finished the trial while it was still training
    SCREENED = "screened"  # stopped at the early step with a checkpoint (stage screen); the study may resume it
    # SIGTERM from outside with ``checkpoint_on_stop``: checkpointed where it stopped; the same command resumes there
    PREEMPTED = "preempted"


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
    replace_directory(tmp, target)


GROUP_BATCHES = 16  # group_by_length: micro-batches' worth of the shuffled order sorted together


def batch_stream(
    items: list[Encoded], batch_size: int, seed: int, skip: int = 0, group_by_length: bool = False
) -> Iterator[list[Encoded]]:
    """An endless stream of shuffled micro-batches, reshuffled each epoch, fixed by the seed.

    ``batch_size`` must not exceed ``len(items)``; a last partial batch of an epoch is dropped, so every step
    sees the same number of examples. ``skip``: start after that many micro-batches (a resumed trial's data-order
    position); the epochs' permutations are still drawn, so the order after the skip is the uninterrupted one.
    ``group_by_length``: a batch is padded to its longest example, so each run of ``GROUP_BATCHES`` batches of the
    shuffled order is sorted by length before it is cut, and the epoch's batches are then shuffled: examples of
    similar length share a batch (less padding to compute), which batches come when stays random.
    """
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(items), generator=generator).tolist()
        usable = len(order) - len(order) % batch_size
        batches = [order[start : start + batch_size] for start in range(0, usable, batch_size)]
        if group_by_length:
            batches = _grouped(order[:usable], items, batch_size, generator)
        for batch in batches:
            if skip:
                skip -= 1
                continue
            yield [items[i] for i in batch]


def _grouped(order: list[int], items: list[Encoded], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    span = batch_size * GROUP_BATCHES
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: len(items[i]))
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def train_step(
    model: Any,
    batches: Iterator[list[Encoded]],
    hp: Hyperparameters,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    pad_id: int,
    device: torch.device,
    world: World = ALONE,
) -> float:
    """One optimiser step over ``grad_accum`` micro-batches; returns the step's mean loss. On several processes
    (``world``) each takes its share of every micro-batch's examples and the gradients are summed: the same step."""
    step_loss = 0.0
    for _ in range(hp.grad_accum):
        examples = next(batches)
        if world.size == 1:
            batch = {k: v.to(device, non_blocking=True) for k, v in training_batch(examples, pad_id).items()}
            loss = answer_loss(model, batch) / hp.grad_accum
        else:
            tokens = answer_tokens(examples)  # the whole micro-batch's, on every rank
            mine = world.share(examples)
            if not mine or tokens == 0:
                continue
            batch = {k: v.to(device, non_blocking=True) for k, v in training_batch(mine, pad_id).items()}
            loss = answer_loss(model, batch, reduction="sum") / (tokens * hp.grad_accum)
        loss.backward()  # type: ignore[no-untyped-call]
        step_loss += float(loss.detach())
    params = [p for group in optimizer.param_groups for p in group["params"]]
    world.sum_gradients(params)
    step_loss = world.total(step_loss)
    torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss


@dataclass
class Progress:
    """Where a trial's training stands: what a screening run checkpoints and a resumed run continues from."""

    step: int = 0
    best_loss: float = math.inf
    best_loss_step: int = 0
    losses: list[float] = field(default_factory=list)  # the training loss of every step so far
    accuracy_at: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    # A preemption inside the scoring after ``step``: that scoring is still to do (a resumed run does it first).
    redo: bool = False


@dataclass
class Data:
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    independent_test: list[Example]


@dataclass
class Scores:
    """Validation, test and independent-test accuracy of one model state."""

    validation: Accuracy
    test: Accuracy
    independent_test: Accuracy | None


def _page_scores(scores: Scores) -> dict[str, Any]:
    pages = {"validation": list(scores.validation.per_example), "test": list(scores.test.per_example)}
    if scores.independent_test is not None:
        pages["independent_test"] = list(scores.independent_test.per_example)
    return pages


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
    def __init__(
        self,
        settings: RunSettings,
        reporter: Reporter,
        stop: threading.Event,
        artifacts: Artifacts | None = None,
        world: World = ALONE,
    ) -> None:
        settings.check()
        self.settings = settings
        self.reporter = reporter
        self.stop = stop
        self.out = settings.output_dir  # written here first; ``artifacts`` publishes it (an object store, or nothing)
        self.artifacts: Artifacts = artifacts or LocalArtifacts()
        self.world = world  # several processes: rank 0 does all but training (ftstudy.trainer.distributed)
        self.out.mkdir(parents=True, exist_ok=True)
        self.summary: dict[str, Any] = {}
        self.eval_seconds = 0.0
        self._halted = False  # several processes: the ranks agreed to stop at this step (``_sync``)
        self._rng_ranks: list[Any] = []  # and each rank's random generators then, for the checkpoint

    def _record(self, attrs: dict[str, Any], to_storage: bool = True) -> None:
        self.summary.update(attrs)
        if not self.world.main:
            return
        _write_json_atomic(self.out / "result.json", self.summary)
        self.artifacts.publish(self.out, "result.json")
        if to_storage:
            self.reporter.set_attrs(attrs)

    def _accuracy(self, model: Any, encoder: Encoder, examples: list[Example], device: torch.device) -> Accuracy:
        started = time.monotonic()
        faults.point("trainer.scoring", wake=self.stop)
        try:
            return accuracy(model, encoder, examples, self.settings.eval_batch_size, device, self.stop)
        finally:
            self.eval_seconds += time.monotonic() - started

    def _scores(self, model: Any, encoder: Encoder, data: Data, device: torch.device) -> Scores:
        independent = data.independent_test
        return Scores(
            self._accuracy(model, encoder, data.validation, device),
            self._accuracy(model, encoder, data.test, device),
            self._accuracy(model, encoder, independent, device) if independent else None,
        )

    def _sync(self, stopping: bool) -> None:
        """Several processes, once per step on rank 0 (``World.decide``): does any rank stop here? If so, every rank
        hands in its random generators' state, for a checkpoint that resumes each one exactly."""
        if self.world.size == 1 or self._halted:
            return
        if self.world.decide(stopping or self.stop.is_set()):
            self._halted = True
            self._rng_ranks = self.world.gather(checkpoint.rng_state())

    def _training_over(self) -> None:
        """A stop after the last step (in the final scoring, or its report): the other ranks have left the loop, so
        none hands in its random generators (``_sync``), and a checkpoint without them is refused on resume ("written
        by 1 process(es)"). No step is left to draw from them: each rank resumes with rank 0's."""
        if self.world.size > 1 and not self._rng_ranks:
            self._rng_ranks = [checkpoint.rng_state()] * self.world.size

    def _stop_requested(self) -> bool:
        """A SIGTERM to act on at the top of a step: at once alone; on several processes only once every rank
        knows (``_sync``), or rank 0 would leave the others waiting inside the step's all-reduce."""
        return self.stop.is_set() if self.world.size == 1 else self._halted

    def run(self) -> TrialResult:
        params = self.world.broadcast(self.reporter.params() if self.world.main else None)
        hp_params, overrides = split_params(params)
        hp = Hyperparameters.from_params(hp_params)
        s = self.settings = self.settings.with_overrides(overrides)
        data = load_data(s)
        torch.manual_seed(s.seed)
        loaded = load_model(s.model, s.device, s.seed)
        tokenizer, device = loaded.tokenizer, loaded.device
        log.info("%s loaded on %s", s.model, device)
        encoder = Encoder(
            tokenizer,
            s.attributes,
            s.max_seq_len,
            answer_token_budget(tokenizer, s.attributes),
            s.preprocess,
        )
        self.eval_seconds = 0.0
        started = time.monotonic()  # train_seconds: from here (the base model's scoring included) to the end
        if self.world.main:
            self.artifacts.fetch(self.out)
        self.world.barrier()  # the other ranks read what rank 0 fetched (one pod: the same scratch directory)
        preempted = s.checkpoint_on_stop and checkpoint.preempted_at(self.out) is not None
        if not self.world.main and not data.train:
            return TrialResult(Outcome.COMPLETED, 0, 0)
        if self.world.main and ((s.score_base_model and s.stage != "resume" and not preempted) or not data.train):
            # Generation over every page: minutes for a large model on a CPU, so say what the silence is.
            pages = len(data.validation) + len(data.test) + len(data.independent_test)
            log.info("scoring the base model (zero-shot) on %d pages first", pages)
            try:
                base = self._score_base_model(loaded.model, encoder, data, device)
            except Interrupted:
                if s.checkpoint_on_stop:
                    return self._preempted_untrained(TrialResult(Outcome.PREEMPTED, 0, 0))
                return self._terminated(TrialResult(Outcome.TERMINATED, 0, 0), 0)
            if not data.train:
                return self._untrained(base)
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
        extra_steps = {early_step(total, f) for f in s.extra_eval_fractions} - {early}
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
        identity = {"hyperparameters": asdict(hp), "total_steps": total, "early_step": early, "model": s.model,
                    "train_examples": len(train_items), "seed": s.seed}  # fmt: skip
        if s.group_by_length:  # the data order: a checkpoint written without it must not resume with it
            identity["group_by_length"] = True
        progress = Progress()
        if s.stage == "resume" or preempted:
            progress = self._resume(model, optimizer, scheduler, identity)
            started -= progress.train_seconds  # train_seconds counts the screening run too, not the wait between
            self.eval_seconds = progress.eval_seconds
            rung_scores = self.summary.get(UserAttr.RUNG_ACCURACY.value, {})
            at_rung = progress.step in {early_step(total, f) for f in s.rungs}
            if s.stage == "resume" and at_rung and str(progress.step) not in rung_scores:
                # A rung's checkpoint whose score was never recorded: the run stopped between the two (a crash, or
                # an object store that took the checkpoint after its client gave up). Score that rung now; exact,
                # since scoring draws no random number.
                log.info("the rung at step %d was checkpointed but not scored: scoring it", progress.step)
                progress.redo = True
        # The first step whose work after training (scoring, a rung) is still to do: the checkpoint's own step when
        # a preemption stopped that work, else the next one.
        pending = progress.step if progress.redo else progress.step + 1
        # The rung this run stops at (a resumed one only): the first from that step on, before the end.
        rung_step = next((r for r in sorted({early_step(total, f) for f in s.rungs}) if pending <= r < total), 0)
        rung_step = rung_step if s.stage == "resume" else 0
        self._record(
            {
                UserAttr.TOTAL_STEPS: total,
                UserAttr.EARLY_STEP: early,
                "hyperparameters": asdict(hp),
                "model": s.model,
            },
            to_storage=False,
        )
        if self.world.main:
            self.reporter.set_attrs(
                {UserAttr.TOTAL_STEPS: total, UserAttr.EARLY_STEP: early, UserAttr.TRAIN_EXAMPLES: len(train_items)}
            )
        log.info(
            "training %s for %d steps (early evaluation at step %d) on %s, %s%s",
            s.model,
            total,
            early,
            device,
            loaded.dtype,
            f", resumed after step {progress.step}" if progress.step else "",
        )
        if preempted:
            log.info("resumed from the checkpoint written when this trial was preempted at step %d", progress.step)
            steps = self.summary.get(UserAttr.PREEMPTED_AT_STEPS.value)
            if steps and self.world.main:  # told again (the same list): the preempted run may not have reached it
                self.reporter.set_attrs({UserAttr.PREEMPTED_AT_STEPS: steps})

        micro = min(hp.batch_size, len(train_items))
        batches = batch_stream(train_items, micro, s.seed, progress.step * hp.grad_accum, s.group_by_length)
        early_reported = pending > early
        optimiser = (optimizer, scheduler)
        trained = progress.step  # the step whose training the model's state holds
        if not self.world.main:
            return self._follow(result, model, batches, hp, optimiser, tokenizer.pad_token_id, device, pending, trained)
        for step in range(pending, total + 1):
            result.steps_done = step
            if step > trained:  # not a step whose training a preempted run did already
                if self._stop_requested():
                    return self._stopped(result, model, optimiser, identity, progress, started, trained, redo=False)
                step_loss = train_step(model, batches, hp, optimizer, scheduler, tokenizer.pad_token_id, device,
                                       self.world)  # fmt: skip
                trained = step
                progress.losses.append(step_loss)
                if not math.isfinite(step_loss):
                    self._sync(True)
                    return self._diverged(result, step, early_reported, started)
                if step % s.check_every == 0:
                    try:
                        status = self.reporter.status()
                    except Stopped:  # the database out of reach at a SIGTERM: stopped at the next safe point
                        status = TrialStatus.RUNNING
                    if status is not TrialStatus.RUNNING:
                        self._sync(True)
                        return self._stopped_by_study(result, status, step)
            if step % loss_every == 0 or step == total:
                loss_started = time.monotonic()
                current = eval_loss(model, val_items, s.eval_batch_size, tokenizer.pad_token_id, device)
                self.eval_seconds += time.monotonic() - loss_started
                if current < progress.best_loss:
                    progress.best_loss, progress.best_loss_step = current, step
                log.info("step %d/%d train loss %.4f eval loss %.4f", step, total, progress.losses[-1], current)
            try:
                if step == rung_step:
                    progress.step = step
                    self._sync(True)
                    return self._rung(model, encoder, data, device, optimiser, identity, progress, result, started)
                if step == early and s.stage == "screen":
                    progress.step = step
                    self._sync(True)
                    return self._screen(model, encoder, data, device, optimiser, identity, progress, result, started)
                if step == early:
                    self._early(model, encoder, data, step, device)
                    early_reported = True
                elif step in extra_steps:
                    progress.accuracy_at[str(step)] = self._accuracy(model, encoder, data.validation, device).mean
                    self._record({UserAttr.ACCURACY_AT_STEP: progress.accuracy_at})
            # inside this step's scoring, or its report retried through an outage when the SIGTERM came: a preempted
            # run does both again when resumed (the report is idempotent: the same value, set again)
            except (Interrupted, Stopped) as stopped:
                if isinstance(stopped, Stopped):
                    log.warning("%s: the run that resumes reports it", stopped)
                self._sync(True)
                return self._stopped(result, model, optimiser, identity, progress, started, step, redo=True)
            faults.point(f"trainer.after-step.{step}", wake=self.stop)
            self._sync(False)

        try:
            final = self._scores(model, encoder, data, device)
        except Interrupted:
            self._training_over()
            return self._stopped(result, model, optimiser, identity, progress, started, total, redo=True)
        save_adapter(model, self.out / "final_adapter")
        adapter = self.artifacts.publish(self.out, "final_adapter")
        attrs: dict[str, Any] = {
            **self._score_attrs(final),
            UserAttr.BEST_EVAL_LOSS: progress.best_loss,
            UserAttr.BEST_EVAL_LOSS_STEP: progress.best_loss_step,
            UserAttr.FINAL_ADAPTER: adapter,
            UserAttr.STEPS_DONE: total,
            UserAttr.TRAIN_SECONDS: round(time.monotonic() - started, 3),
            UserAttr.EVAL_SECONDS: round(self.eval_seconds, 3),
            UserAttr.OUTCOME: Outcome.COMPLETED.value,
        }
        try:
            self._record(attrs)
        except Stopped as stopped:  # a SIGTERM while the result waits out an outage: the next run scores it again
            log.warning("%s: the run that resumes reports it", stopped)
            self._training_over()
            return self._stopped(result, model, optimiser, identity, progress, started, total, redo=True)
        _write_json_atomic(self.out / "loss_curve.json", {"train_loss": progress.losses})
        _write_json_atomic(self.out / PAGE_SCORES, _page_scores(final))
        for name in ("loss_curve.json", PAGE_SCORES):
            self.artifacts.publish(self.out, name)
        log.info(
            "finished: validation %.4f, test %.4f (%.0f%% of the time scoring)",
            final.validation.mean,
            final.test.mean,
            100 * self.eval_seconds / max(time.monotonic() - started, 1e-9),
        )
        result.attrs = self.summary
        return result

    @staticmethod
    def _score_attrs(scores: Scores) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            UserAttr.FINAL_ACCURACY: scores.validation.mean,
            UserAttr.FINAL_PER_ATTRIBUTE: scores.validation.per_attribute,
            UserAttr.TEST_ACCURACY: scores.test.mean,
            UserAttr.TEST_PER_ATTRIBUTE: scores.test.per_attribute,
        }
        if scores.independent_test is not None:
            attrs[UserAttr.INDEPENDENT_TEST_ACCURACY] = scores.independent_test.mean
            attrs[UserAttr.INDEPENDENT_TEST_PER_ATTRIBUTE] = scores.independent_test.per_attribute
        return attrs

    def _score_base_model(self, model: Any, encoder: Encoder, data: Data, device: torch.device) -> Scores:
        """The model before any LoRA: what fine-tuning has to beat (recorded as the zero-shot accuracy)."""
        scores = self._scores(model, encoder, data, device)
        attrs: dict[str, Any] = {
            UserAttr.ZERO_SHOT_ACCURACY: scores.validation.mean,
            UserAttr.ZERO_SHOT_TEST_ACCURACY: scores.test.mean,
        }
        if scores.independent_test is not None:
            attrs[UserAttr.ZERO_SHOT_INDEPENDENT_TEST_ACCURACY] = scores.independent_test.mean
        self._record(attrs)
        log.info("base model (zero-shot): validation %.4f, test %.4f", scores.validation.mean, scores.test.mean)
        return scores

    def _untrained(self, base: Scores) -> TrialResult:
        """``train_samples`` 0: the trial is the base model, scored (a data-efficiency sweep's zero point)."""
        attrs: dict[str, Any] = {
            UserAttr.TOTAL_STEPS: 0,
            UserAttr.EARLY_STEP: 0,
            UserAttr.TRAIN_EXAMPLES: 0,
            UserAttr.EARLY_ACCURACY: base.validation.mean,
            UserAttr.EARLY_PER_ATTRIBUTE: base.validation.per_attribute,
            UserAttr.EARLY_REPORTED_AT: round(time.time(), 3),
            **self._score_attrs(base),
            UserAttr.STEPS_DONE: 0,
            UserAttr.TRAIN_SECONDS: 0.0,
            UserAttr.EVAL_SECONDS: round(self.eval_seconds, 3),
            UserAttr.OUTCOME: Outcome.COMPLETED.value,
        }
        self._record(attrs)
        _write_json_atomic(self.out / PAGE_SCORES, _page_scores(base))
        self.artifacts.publish(self.out, PAGE_SCORES)
        self.reporter.report_early(0, base.validation.mean)
        result = TrialResult(outcome=Outcome.COMPLETED, total_steps=0, early_step=0, attrs=self.summary)
        return result

    def _early(
        self,
        model: Any,
        encoder: Encoder,
        data: Data,
        step: int,
        device: torch.device,
        before_report: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        """``before_report``: more work that must be done before the study can see the early accuracy (screening's
        checkpoint); it returns the attributes to record with it."""
        early = self._accuracy(model, encoder, data.validation, device)
        save_adapter(model, self.out / "early_adapter")
        adapter = self.artifacts.publish(self.out, "early_adapter")
        extra = before_report()
        faults.point("trainer.reporting")  # a test starts an outage here, so that the reports below are retried
        self._record(
            {
                UserAttr.EARLY_ACCURACY: early.mean,
                UserAttr.EARLY_PER_ATTRIBUTE: early.per_attribute,
                UserAttr.EARLY_ADAPTER: adapter,
                **extra,
                UserAttr.EARLY_REPORTED_AT: round(time.time(), 3),  # the operator times its decision from here
            }
        )
        # The intermediate value is the signal the study acts on, so it goes last: everything it refers to exists.
        self.reporter.report_early(step, early.mean)
        log.info("early evaluation at step %d: accuracy %.4f (reported)", step, early.mean)

    def _screen(
        self,
        model: Any,
        encoder: Encoder,
        data: Data,
        device: torch.device,
        optimiser: tuple[torch.optim.Optimizer, Any],
        identity: dict[str, Any],
        progress: Progress,
        result: TrialResult,
        started: float,
    ) -> TrialResult:
        """Stage ``screen`` at the early step: score, checkpoint, then report (``_early``, which keeps that order),
        and stop. The checkpoint is complete before the study can read the early accuracy, so a trial it promotes
        can always be resumed."""

        def checkpointed() -> dict[str, Any]:
            return self._checkpoint(model, optimiser, identity, progress, started)

        self._early(model, encoder, data, progress.step, device, checkpointed)
        result.outcome, result.steps_done, result.attrs = Outcome.SCREENED, progress.step, self.summary
        return result

    def _checkpoint(
        self,
        model: Any,
        optimiser: tuple[torch.optim.Optimizer, Any],
        identity: dict[str, Any],
        progress: Progress,
        started: float,
        reason: str = checkpoint.SCREENED,
    ) -> dict[str, Any]:
        """Write the full training state at ``progress.step``; the attributes that say a trial is screened there."""
        optimizer, scheduler = optimiser
        progress.train_seconds = time.monotonic() - started
        progress.eval_seconds = self.eval_seconds
        state = {
            "trainable": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": checkpoint.rng_state(),
            "progress": asdict(progress),
        }
        if self.world.size > 1:  # each rank's, in rank order (rank 0's is "rng" too): resumed on as many ranks
            state["rng_ranks"] = self._rng_ranks
        micro_batches = progress.step * identity["hyperparameters"]["grad_accum"]
        saved = checkpoint.Checkpoint(progress.step, micro_batches, identity, state)
        checkpoint.save(self.out, saved, reason)
        where = self.artifacts.publish_checkpoint(self.out)
        log.info("%s at step %d: checkpoint in %s", reason, progress.step, where)
        return {
            UserAttr.CHECKPOINT: where,
            UserAttr.STEPS_DONE: progress.step,
            UserAttr.TRAIN_SECONDS: round(progress.train_seconds, 3),
            UserAttr.EVAL_SECONDS: round(self.eval_seconds, 3),
            UserAttr.OUTCOME: Outcome.SCREENED.value,
        }

    def _rung(
        self,
        model: Any,
        encoder: Encoder,
        data: Data,
        device: torch.device,
        optimiser: tuple[torch.optim.Optimizer, Any],
        identity: dict[str, Any],
        progress: Progress,
        result: TrialResult,
        started: float,
    ) -> TrialResult:
        """Stage ``resume`` at a later rung: checkpoint first (the state an uninterrupted run has at this step:
        scoring comes after, so it cannot disturb what is resumed), then score validation and record it. The rung's
        accuracy is written last, with nothing after it, so the study sees it only once the checkpoint exists; the
        outcome (already ``screened``) is written again to wake the study (a NOTIFY)."""
        progress.redo = False  # whether a resume scores this rung again is read from the record (``run``)
        screened = self._checkpoint(model, optimiser, identity, progress, started)
        faults.point("trainer.rung-checkpointed")
        score = self._accuracy(model, encoder, data.validation, device)
        rungs = {**self.summary.get(UserAttr.RUNG_ACCURACY.value, {}), str(progress.step): score.mean}
        self._record({key: value for key, value in screened.items() if key != UserAttr.OUTCOME})
        self._record({UserAttr.RUNG_ACCURACY: rungs, UserAttr.OUTCOME: Outcome.SCREENED.value})
        log.info("rung at step %d: accuracy %.4f (reported)", progress.step, score.mean)
        result.outcome, result.steps_done, result.attrs = Outcome.SCREENED, progress.step, self.summary
        return result

    def _resume(
        self, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, identity: dict[str, Any]
    ) -> Progress:
        """Stage ``resume``: the screened state back in place (adapter, optimiser, scheduler, random generators)."""
        saved = checkpoint.load(self.out, identity)
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        tensors = saved.state["trainable"]
        if set(tensors) != set(trainable):
            raise checkpoint.CheckpointError(
                f"checkpoint {self.out / checkpoint.DIRECTORY} holds other adapter tensors than this model's"
            )
        with torch.no_grad():
            for name, parameter in trainable.items():
                parameter.copy_(tensors[name])
        optimizer.load_state_dict(saved.state["optimizer"])
        scheduler.load_state_dict(saved.state["scheduler"])
        ranks = saved.state.get("rng_ranks") or [saved.state["rng"]]
        if len(ranks) != self.world.size:
            raise checkpoint.CheckpointError(
                f"checkpoint {self.out / checkpoint.DIRECTORY} was written by {len(ranks)} process(es); resume it on "
                f"as many (this run has {self.world.size}), or start the trial again"
            )
        checkpoint.restore_rng(ranks[self.world.rank])
        try:  # the screening run's record (early accuracy, zero-shot scores): the final result.json extends it
            self.summary = json.loads((self.out / "result.json").read_text())
        except (OSError, json.JSONDecodeError):
            self.summary = {}
        return Progress(**saved.state["progress"])

    def _follow(
        self,
        result: TrialResult,
        model: Any,
        batches: Iterator[list[Encoded]],
        hp: Hyperparameters,
        optimiser: tuple[torch.optim.Optimizer, Any],
        pad_id: int,
        device: torch.device,
        pending: int,
        trained: int,
    ) -> TrialResult:
        """A rank other than 0: train its share of each step beside rank 0 and, at each step's end, learn whether
        every rank stops there (``_sync`` on rank 0); then hand in its random generators' state and end. What the
        trial's outcome is, rank 0 says."""
        optimizer, scheduler = optimiser
        for step in range(pending, result.total_steps + 1):
            result.steps_done = step
            if step > trained:
                train_step(model, batches, hp, optimizer, scheduler, pad_id, device, self.world)
            faults.point(f"trainer.rank{self.world.rank}.after-step.{step}", wake=self.stop)
            if self.world.decide(self.stop.is_set()):
                self.world.gather(checkpoint.rng_state())
                log.info("rank %d: stopping with rank 0 after step %d", self.world.rank, step)
                return result
        return result

    def _stopped(
        self,
        result: TrialResult,
        model: Any,
        optimiser: tuple[torch.optim.Optimizer, Any],
        identity: dict[str, Any],
        progress: Progress,
        started: float,
        step: int,
        redo: bool,
    ) -> TrialResult:
        """SIGTERM at ``step``, its training done (``redo``: inside its scoring). With ``checkpoint_on_stop`` the
        trial is preempted, not over: the training state is checkpointed (well inside a pod's grace period: no
        scoring is finished first) and the same command resumes there, scoring that step again if ``redo``. That is
        exact because scoring draws no random number (greedy decoding, dropout off), so the generators' state saved
        after an interrupted scoring is the one before it. The study is told the step (best effort, ``_tell``), for
        its TrialPreempted Event; the trial still runs."""
        if not self.settings.checkpoint_on_stop:
            return self._terminated(result, step)
        if step == 0:
            return self._preempted_untrained(result)
        progress.step, progress.redo = step, redo
        self._checkpoint(model, optimiser, identity, progress, started, checkpoint.PREEMPTED)
        progress.redo = False
        result.outcome, result.steps_done = Outcome.PREEMPTED, step
        steps = [*self.summary.get(UserAttr.PREEMPTED_AT_STEPS.value, []), step]
        self._record({UserAttr.OUTCOME: Outcome.PREEMPTED.value, UserAttr.STEPS_DONE: step,
                      UserAttr.PREEMPTED_AT_STEPS: steps}, to_storage=False)  # fmt: skip
        self._tell({UserAttr.PREEMPTED_AT_STEPS: steps})
        log.warning("preempted after step %d%s: checkpointed; started again, this trial resumes there", step,
                    " (its scoring there is done again)" if redo else "")  # fmt: skip
        return result

    def _tell(self, attrs: dict[str, Any], seconds: float = 5.0) -> None:
        """Report ``attrs`` if the study takes them within ``seconds``, else go on: a preempted pod has a grace
        period to leave in, and what it says is for people (the operator's TrialPreempted Event), not a result."""
        failed: list[BaseException] = []

        def tell() -> None:
            try:
                self.reporter.set_attrs(attrs)
            except Exception as error:  # unreachable, and the SIGTERM ends the retries (ftstudy.retry.Stopped)
                failed.append(error)

        thread = threading.Thread(target=tell, daemon=True)
        thread.start()
        thread.join(seconds)
        if thread.is_alive() or failed:
            log.warning("the study was not told of the preemption within %.0f s (%s); going on, the resumed run "
                        "tells it", seconds, failed[0] if failed else "no answer")  # fmt: skip

    def _preempted_untrained(self, result: TrialResult) -> TrialResult:
        """SIGTERM before the first step: nothing to keep; preempted all the same (not a failure: the Job's next pod
        starts the trial again)."""
        result.outcome, result.steps_done = Outcome.PREEMPTED, 0
        log.warning("preempted before the first training step: started again, this trial begins from the start")
        return result

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
