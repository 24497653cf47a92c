"""Training throughput of ftstudy's trainer loop against a stock Hugging Face ``Trainer`` + peft baseline.

Both run in this process, one after the other, on the same base model, the same encoded examples (same prompts,
same loss mask), the same LoRA config, batch size, optimiser and number of steps. Only the training steps are
timed (no evaluation, no checkpointing), after a warm-up. The output is samples/second for each and their ratio,
and, to show that both trained the model as well, the mean training loss of each run and the answer loss of each
trained model on the same 64 validation examples (the mean training loss over a short run depends on which
examples came first, so the validation loss is the comparison that counts).

    .venv/bin/python bench/trainer_throughput.py                   # tiny model, CPU: seconds
    .venv/bin/python bench/trainer_throughput.py --model smollm2   # the real model (use a GPU if you have one)
    OMP_NUM_THREADS=1 .venv/bin/python bench/trainer_throughput.py --model mini --max-seq-len 512 --batch-size 8 \
        --steps 20 --group-by-length                               # ftstudy's batches grouped by length
    .venv/bin/python bench/trainer_throughput.py --model mini --processes 2   # data parallel against one process

``--processes N``: the distributed case instead. The trainer's own command (``ftstudy-trainer --stage full``, no
study) trains the same steps of the same global batch three times on the same N cores or devices: one process with
one thread, one process with N threads (what N cores give a single trainer), and N processes of one thread each
(gloo on CPUs, NCCL on GPUs). Each prints training samples/s from its ``result.json`` (``train_seconds`` less
``eval_seconds``: the training steps, not loading or scoring), the ratios, and the final accuracy of each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments, get_scheduler

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES
from ftstudy.task.dataset import load_jsonl
from ftstudy.task.generator import SplitSizes, write_dataset
from ftstudy.task.preprocess import PreprocessConfig
from ftstudy.trainer.config import TARGET_MODULES, Hyperparameters
from ftstudy.trainer.encoding import IGNORE, Encoded, Encoder, answer_token_budget
from ftstudy.trainer.evaluate import accuracy, eval_loss
from ftstudy.trainer.model import load_model
from ftstudy.trainer.run import batch_stream, train_step


def lora(model: Any, hp: Hyperparameters) -> Any:
    config = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=TARGET_MODULES[hp.target_modules],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def run_ours(args: argparse.Namespace, items: list[Encoded], hp: Hyperparameters) -> tuple[float, float]:
    """Samples per second over the timed steps, and the mean loss over every step (as HF's ``training_loss``)."""
    loaded = load_model(args.model, args.device, seed=0)
    model = lora(loaded.model, hp)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp.learning_rate)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=args.steps + args.warmup)
    batches = batch_stream(items, hp.batch_size, 0, group_by_length=args.group_by_length)
    pad = loaded.tokenizer.pad_token_id
    losses = [train_step(model, batches, hp, optimizer, scheduler, pad, loaded.device) for _ in range(args.warmup)]
    _sync(loaded.device)
    started = time.perf_counter()
    for _ in range(args.steps):
        losses.append(train_step(model, batches, hp, optimizer, scheduler, pad, loaded.device))
    _sync(loaded.device)
    seconds = time.perf_counter() - started
    args.ours_validation_loss = eval_loss(model, args.validation, 16, pad, loaded.device)
    return args.steps * hp.batch_size / seconds, sum(losses) / len(losses)


class _Collator:
    """Right padding with the loss mask, equivalent to DataCollatorForSeq2Seq on pre-tokenised rows."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id)
        labels = torch.full((len(rows), width), IGNORE)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class _Timer:
    """Times HF Trainer steps after the warm-up, from inside its own loop (callback hooks)."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step == warmup:
                    _sync(device)
                    timer.started = time.perf_counter()

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                _sync(device)
                timer.ended = time.perf_counter()

        self.callback = Callback()
        self.started = self.ended = 0.0


def run_hf(args: argparse.Namespace, items: list[Encoded], hp: Hyperparameters) -> tuple[float, float]:
    loaded = load_model(args.model, args.device, seed=0)
    model = lora(loaded.model, hp)
    rows = [{"input_ids": i.prompt + i.answer, "labels": [IGNORE] * len(i.prompt) + i.answer} for i in items]
    timer = _Timer(args.warmup, loaded.device)
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=hp.batch_size,
            max_steps=args.steps + args.warmup,
            learning_rate=hp.learning_rate,
            lr_scheduler_type="linear",
            max_grad_norm=hp.max_grad_norm,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            logging_strategy="no",
            bf16=loaded.dtype == torch.bfloat16,
            use_cpu=loaded.device.type == "cpu",
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=rows,
            data_collator=_Collator(loaded.tokenizer.pad_token_id),
            callbacks=[timer.callback],
        )
        output = trainer.train()
    args.hf_validation_loss = eval_loss(model, args.validation, 16, loaded.tokenizer.pad_token_id, loaded.device)
    return args.steps * hp.batch_size / (timer.ended - timer.started), float(output.training_loss)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_trainer(args: argparse.Namespace, data: Path, out: Path, processes: int, threads: int) -> dict[str, Any]:
    """One ``ftstudy-trainer`` run (``--processes``), its ``result.json``."""
    import json
    import subprocess
    import sys

    params = {"batch_size": args.batch_size, "grad_accum": 2, "lora_dropout": 0.0}
    command = [sys.executable, "-m", "ftstudy.trainer.cli", "--model", args.model, "--data", str(data),
               "--output", str(out), "--max-steps", str(args.steps), "--max-seq-len", str(args.max_seq_len),
               "--eval-samples", "32", "--test-samples", "8", "--stage", "full", "--processes", str(processes),
               "--device", args.device, "--params", json.dumps(params)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    return result


def distributed(args: argparse.Namespace, data: Path, tmp: Path) -> None:
    n = args.processes
    samples = args.steps * args.batch_size * 2  # grad_accum 2: the global batch
    runs = {"1 process, 1 thread": (1, 1), f"1 process, {n} threads": (1, n), f"{n} processes, 1 thread": (n, 1)}
    rates = {}
    print(f"model={args.model} device={args.device} global_batch={args.batch_size * 2} steps={args.steps} "
          f"max_seq_len={args.max_seq_len}")  # fmt: skip
    for i, (name, (processes, threads)) in enumerate(runs.items()):
        result = run_trainer(args, data, tmp / f"run-{i}", processes, threads)
        rates[name] = samples / (result["train_seconds"] - result["eval_seconds"])  # the scoring left out
        print(f"{name}: train_samples_per_s={rates[name]:.2f} final_accuracy={result['final_accuracy']:.4f}")
    first, threaded, parallel = rates.values()
    print(f"ratio_{n}_processes_over_1_process_1_thread={parallel / first:.3f}")
    print(f"ratio_{n}_processes_over_1_process_{n}_threads={parallel / threaded:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--data", type=Path, default=None, help="dataset directory (default: generate one)")
    p.add_argument("--accuracy", action="store_true", help="also score the base model before fine-tuning")
    p.add_argument("--group-by-length", action="store_true", help="ftstudy's batches grouped by length (less padding)")
    p.add_argument("--processes", type=int, default=1, help="N > 1: the distributed case (see above)")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp)
        if args.data is None:
            write_dataset(data, seed=0, sizes=SplitSizes(train=256, validation=64, test=8, independent_test=8))
        if args.processes > 1:
            distributed(args, data, Path(tmp))
            return
        train = load_jsonl(data / "train.jsonl", DEFAULT_ATTRIBUTES)
        tokenizer = load_model(args.model, "cpu").tokenizer
        encoder = Encoder(
            tokenizer,
            DEFAULT_ATTRIBUTES,
            args.max_seq_len,
            answer_token_budget(tokenizer, DEFAULT_ATTRIBUTES),
            PreprocessConfig(),
        )
        items = [encoder.encode(e) for e in train]
        args.validation = [encoder.encode(e) for e in load_jsonl(data / "validation.jsonl", DEFAULT_ATTRIBUTES)[:64]]
        hp = Hyperparameters(batch_size=args.batch_size, lora_dropout=0.0)
        baseline, baseline_loss = run_hf(args, items, hp)
        ours, ours_loss = run_ours(args, items, hp)
        lengths = [len(i) for i in items]
        print(f"model={args.model} batch={hp.batch_size} steps={args.steps} max_seq_len={args.max_seq_len} "
              f"group_by_length={args.group_by_length} tokens per example: mean {sum(lengths) / len(lengths):.0f}, "
              f"max {max(lengths)}")  # fmt: skip
        print(f"hf_trainer_samples_per_s={baseline:.2f} mean_loss={baseline_loss:.4f} "
              f"validation_loss={args.hf_validation_loss:.4f}")  # fmt: skip
        print(f"ftstudy_samples_per_s={ours:.2f} mean_loss={ours_loss:.4f} "
              f"validation_loss={args.ours_validation_loss:.4f}")  # fmt: skip
        print(f"ratio_ftstudy_over_hf={ours / baseline:.3f}")
        if args.accuracy:
            loaded = load_model(args.model, args.device)
            validation = load_jsonl(data / "validation.jsonl", DEFAULT_ATTRIBUTES)
            score = accuracy(loaded.model, encoder, validation, 16, loaded.device, threading.Event())
            print(f"base_model_accuracy={score.mean:.4f}")


if __name__ == "__main__":
    main()
