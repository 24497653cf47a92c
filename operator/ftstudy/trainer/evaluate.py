"""Scoring a model during training: batched greedy generation for accuracy, teacher forcing for loss.

Generation is batched over prompts sorted by length (less padding), and stops between batches when asked, so a
SIGTERM during a long evaluation still ends the process within seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from ftstudy.task.dataset import Example, parse_answer
from ftstudy.task.scoring import Accuracy, score
from ftstudy.trainer.encoding import Encoded, Encoder, generation_batch, training_batch


class Interrupted(Exception):
    """Raised when the stop flag is set mid-evaluation."""


def generate_answers(
    model: Any,
    encoder: Encoder,
    examples: Sequence[Example],
    batch_size: int,
    device: torch.device,
    stop: threading.Event,
) -> list[str]:
    """The model's raw answer text for each example, in the examples' order."""
    tokenizer = encoder.tokenizer
    prompts = [encoder.prompt(e) for e in examples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                if stop.is_set():
                    raise Interrupted
                rows = order[start : start + batch_size]
                batch = {
                    k: v.to(device)
                    for k, v in generation_batch([prompts[i] for i in rows], tokenizer.pad_token_id).items()
                }
                output = model.generate(
                    **batch,
                    max_new_tokens=encoder.max_answer_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
                new_tokens = output[:, batch["input_ids"].shape[1] :]
                for row, tokens in zip(rows, new_tokens, strict=True):
                    answers[row] = tokenizer.decode(tokens, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return [answers[i] for i in range(len(examples))]


def predict(
    model: Any,
    encoder: Encoder,
    examples: Sequence[Example],
    batch_size: int,
    device: torch.device,
    stop: threading.Event,
) -> list[dict[str, str | None]]:
    answers = generate_answers(model, encoder, examples, batch_size, device, stop)
    return [parse_answer(answer, encoder.attributes) for answer in answers]


def accuracy(
    model: Any,
    encoder: Encoder,
    examples: Sequence[Example],
    batch_size: int,
    device: torch.device,
    stop: threading.Event,
) -> Accuracy:
    predictions = predict(model, encoder, examples, batch_size, device, stop)
    return score(predictions, [e.attributes for e in examples], encoder.attributes)


def eval_loss(model: Any, items: Sequence[Encoded], batch_size: int, pad_id: int, device: torch.device) -> float:
    """Mean answer-token loss on the validation set (teacher forcing)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                batch = {k: v.to(device) for k, v in training_batch(items[start : start + batch_size], pad_id).items()}
                count = int((batch["labels"][:, 1:] != -100).sum())
                loss = model(**batch).loss
                total += float(loss) * count
                tokens += count
    finally:
        model.train(was_training)
    return total / max(tokens, 1)
