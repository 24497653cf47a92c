"""Scoring a model during training: batched greedy generation for accuracy, teacher forcing for loss.

The early evaluation sits between a trial's 20% and the study's decision, so it must not dominate a trial's time.
Generation here is a plain greedy loop over a KV cache: prompts sorted by length and left-padded, the prompt's
logits computed for its last position only, and each row dropped from the batch (and its cache) as soon as its
answer is closed (the end-of-sequence token, or the JSON object's last brace), so a batch costs what its longest
*answer* costs and a row that already answered costs nothing more. It stops between steps when asked, so a SIGTERM
during a long evaluation still ends the process within seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from ftstudy.task.dataset import Example, parse_answer
from ftstudy.task.scoring import Accuracy, score
from ftstudy.trainer.encoding import Encoded, Encoder, generation_batch, training_batch
from ftstudy.trainer.loss import answer_loss


class Interrupted(Exception):
    """Raised when the stop flag is set mid-evaluation."""


class AnswerCloser:
    """Tells when a generated answer is complete: its first JSON object closed, or the end-of-sequence token.

    Tracks brace depth outside JSON strings, token by token, from each token's text (decoded once per vocabulary
    entry and cached), so a model that writes ``{...}`` and then rambles is cut at the brace.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        self._pieces: dict[int, str] = {}

    def piece(self, token: int) -> str:
        if token not in self._pieces:
            self._pieces[token] = self.tokenizer.decode([token])
        return self._pieces[token]

    def new_state(self) -> list[int]:
        return [0, 0, 0, 0]  # depth, in a string, escaped, an object was opened

    def feed(self, state: list[int], token: int) -> bool:
        """Advance ``state`` by one token; True when the answer is closed."""
        if token == self.eos:
            return True
        for char in self.piece(token):
            depth, in_string, escaped, opened = state
            if in_string:
                state[2] = 1 if char == "\\" and not escaped else 0
                state[1] = 0 if char == '"' and not escaped else 1
            elif char == '"':
                state[1] = 1
            elif char == "{":
                state[0], state[3] = depth + 1, 1
            elif char == "}" and depth > 0:
                state[0] = depth - 1
                if depth == 1 and opened:
                    return True
        return False


def greedy_generate(
    model: Any,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    pad_id: int,
    closer: AnswerCloser,
    device: torch.device,
) -> list[list[int]]:
    """The greedy continuation of each prompt (as token ids, up to and including the closing token)."""
    batch = {k: v.to(device) for k, v in generation_batch(prompts, pad_id).items()}
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    cache = out.past_key_values
    rows = list(range(len(prompts)))  # which prompt each remaining batch row belongs to
    states = [closer.new_state() for _ in prompts]
    answers: list[list[int]] = [[] for _ in prompts]
    next_tokens = out.logits[:, -1].argmax(-1)
    positions = positions[:, -1:]
    for _ in range(max_new_tokens):
        keep = []
        for index, (row, token) in enumerate(zip(rows, next_tokens.tolist(), strict=True)):
            answers[row].append(token)
            if not closer.feed(states[row], token) and len(answers[row]) < max_new_tokens:
                keep.append(index)
        if not keep:
            break
        if len(keep) < len(rows):
            selected = torch.tensor(keep, device=device)
            cache.batch_select_indices(selected)
            rows = [rows[i] for i in keep]
            next_tokens, mask, positions = next_tokens[selected], mask[selected], positions[selected]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        positions = positions + 1
        out = model(
            input_ids=next_tokens[:, None],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        next_tokens = out.logits[:, -1].argmax(-1)
    return answers


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
    closer = AnswerCloser(tokenizer)
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
                generated = greedy_generate(
                    model,
                    [prompts[i] for i in rows],
                    encoder.max_answer_tokens,
                    tokenizer.pad_token_id,
                    closer,
                    device,
                )
                for row, tokens in zip(rows, generated, strict=True):
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
                total += float(answer_loss(model, batch)) * count
                tokens += count
    finally:
        model.train(was_training)
    return total / max(tokens, 1)
