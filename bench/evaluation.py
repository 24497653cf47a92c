"""The early evaluation's cost: ftstudy's greedy decoder against Hugging Face ``generate``, and its share of a trial.

Both decode the same prompts greedily with a KV cache, batched the same way (sorted by length, left-padded). HF
``generate`` runs every row until every row has written its end-of-sequence token (or ``max_new_tokens``);
ftstudy's loop computes the prompt's logits at its last position only and drops each row from the batch and the
cache once its JSON answer is closed. The bench checks that both give the same answers (up to the closing brace)
and prints the time of each and the ratio.

    .venv/bin/python bench/evaluation.py                      # the mini model, 64 European pages, CPU
    .venv/bin/python bench/evaluation.py --adapter runs/example/trials/trial-0003/final_adapter
    .venv/bin/python bench/evaluation.py --model tiny --pages 16
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import torch

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES
from ftstudy.task.dataset import Example, parse_answer
from ftstudy.task.generator import EUROPEAN_LOCALES, SplitSizes, generate_dataset
from ftstudy.task.preprocess import PreprocessConfig
from ftstudy.trainer.encoding import Encoder, answer_token_budget, generation_batch
from ftstudy.trainer.evaluate import generate_answers
from ftstudy.trainer.model import load_model


def hf_answers(model: Any, encoder: Encoder, examples: list[Example], batch_size: int) -> list[str]:
    tokenizer = encoder.tokenizer
    prompts = [encoder.prompt(e) for e in examples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = generation_batch([prompts[i] for i in rows], tokenizer.pad_token_id)
            output = model.generate(
                **batch,
                max_new_tokens=encoder.max_answer_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            for row, tokens in zip(rows, output[:, batch["input_ids"].shape[1] :], strict=True):
                answers[row] = tokenizer.decode(tokens, skip_special_tokens=True)
    return [answers[i] for i in range(len(examples))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mini")
    p.add_argument("--adapter", default=None, help="a LoRA adapter directory to score (a trained trial)")
    p.add_argument("--pages", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, "cpu")
    model = loaded.model
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    splits = generate_dataset(3, SplitSizes(200, args.pages, 1, 1), EUROPEAN_LOCALES)
    examples = [Example(str(r["id"]), str(r["html"]), dict(r["attributes"]), {}) for r in splits["validation"]]
    budget = answer_token_budget(loaded.tokenizer, DEFAULT_ATTRIBUTES)
    encoder = Encoder(loaded.tokenizer, DEFAULT_ATTRIBUTES, args.max_seq_len, budget, PreprocessConfig())
    stop = threading.Event()

    timings: dict[str, float] = {}
    results: dict[str, list[str]] = {}
    runs = {
        "hf_generate": lambda: hf_answers(model, encoder, examples, args.batch_size),
        "ftstudy": lambda: generate_answers(model, encoder, examples, args.batch_size, loaded.device, stop),
    }
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            results[name] = run()
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - started)
    same = sum(
        parse_answer(a, DEFAULT_ATTRIBUTES) == parse_answer(b, DEFAULT_ATTRIBUTES)
        for a, b in zip(results["hf_generate"], results["ftstudy"], strict=True)
    )
    print(f"model {args.model}{' + ' + args.adapter if args.adapter else ''}, {len(examples)} pages, batch "
          f"{args.batch_size}, {args.threads} threads, best of {args.repeats}")  # fmt: skip
    print(f"HF generate: {timings['hf_generate']:.2f} s   ftstudy: {timings['ftstudy']:.2f} s   "
          f"ratio (HF / ftstudy): {timings['hf_generate'] / timings['ftstudy']:.2f}")  # fmt: skip
    print(f"same parsed answers: {same}/{len(examples)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
