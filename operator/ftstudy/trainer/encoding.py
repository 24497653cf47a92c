"""Turning examples into token ids: the prompt (instruction plus page), the answer, and the loss mask.

The page is the only part ever truncated: the prompt always keeps its instruction and the answer always fits, so
the model never learns from a cut-off answer. The same page budget is used for training and for evaluation, so a
model is scored on the view of the page it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ftstudy.task.dataset import Example, answer_text, instruction, page_text
from ftstudy.task.preprocess import PreprocessConfig

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    prompt: list[int]
    answer: list[int]  # answer tokens followed by the end-of-sequence token

    def __len__(self) -> int:
        """Tokens in the training sequence (prompt and answer)."""
        return len(self.prompt) + len(self.answer)


class Encoder:
    def __init__(
        self,
        tokenizer: Any,
        attributes: Sequence[str],
        max_seq_len: int,
        max_answer_tokens: int,
        preprocess: PreprocessConfig,
    ) -> None:
        self.tokenizer = tokenizer
        self.attributes = tuple(attributes)
        self.max_seq_len = max_seq_len
        self.max_answer_tokens = max_answer_tokens
        self.preprocess = preprocess
        self.instruction = instruction(self.attributes)
        overhead = len(self._prompt_ids(""))
        self.page_budget = max_seq_len - max_answer_tokens - overhead
        if self.page_budget < 16:
            raise ValueError(
                f"max_seq_len={max_seq_len} leaves {self.page_budget} tokens for the page after the instruction "
                f"({overhead}) and the answer ({max_answer_tokens}); raise max_seq_len"
            )

    def _prompt_text(self, page: str) -> str:
        # The instruction follows the page: small models forget an instruction that a long page pushed far back.
        content = f"Product page:\n{page}\n\n{self.instruction}"
        if getattr(self.tokenizer, "chat_template", None):
            text: str = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
            return text
        bos = self.tokenizer.bos_token or ""
        return f"{bos}{content}\n\nAnswer:\n"

    def _prompt_ids(self, page: str) -> list[int]:
        ids: list[int] = self.tokenizer(self._prompt_text(page), add_special_tokens=False)["input_ids"]
        return ids

    def prompt(self, example: Example) -> list[int]:
        page_ids: list[int] = self.tokenizer(page_text(example, self.preprocess), add_special_tokens=False)["input_ids"]
        budget = self.page_budget
        while True:
            page = self.tokenizer.decode(page_ids[:budget], skip_special_tokens=True)
            ids = self._prompt_ids(page)
            if len(ids) <= self.max_seq_len - self.max_answer_tokens or budget <= 0:
                return ids
            budget -= max(1, len(ids) - (self.max_seq_len - self.max_answer_tokens))

    def answer(self, example: Example) -> list[int]:
        ids: list[int] = self.tokenizer(answer_text(example.attributes, self.attributes), add_special_tokens=False)[
            "input_ids"
        ]
        return [*ids[: self.max_answer_tokens - 1], self.tokenizer.eos_token_id]

    def encode(self, example: Example) -> Encoded:
        return Encoded(prompt=self.prompt(example), answer=self.answer(example))


# Room each value gets in an answer, in tokens, by attribute; any other attribute gets DEFAULT_VALUE_TOKENS. Part of
# the attribute schema, not of the data: the budget (and so how much of a page fits beside it) must not change with
# the training set, or the same model would be scored on differently truncated pages at different points of a
# data-efficiency sweep. Sized for mini's 2,048-piece vocabulary (the widest generated values take 5 to 13 tokens);
# a larger vocabulary needs fewer.
VALUE_TOKENS = {"title": 16, "price": 8, "currency": 4, "brand": 8, "colour": 12, "material": 16, "size": 8,
                "availability": 8}  # fmt: skip
DEFAULT_VALUE_TOKENS = 16


def answer_token_budget(tokenizer: Any, attributes: Sequence[str]) -> int:
    """Tokens an answer may take, from the attribute schema alone: the JSON object's keys and punctuation as this
    tokenizer writes them, plus each attribute's value allowance."""
    skeleton = answer_text({name: "" for name in attributes}, attributes)
    keys = len(tokenizer(skeleton, add_special_tokens=False)["input_ids"])
    return keys + sum(VALUE_TOKENS.get(name, DEFAULT_VALUE_TOKENS) for name in attributes)


def training_batch(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids with labels only on answer tokens (loss on the answer alone)."""
    width = max(len(i) for i in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        ids = item.prompt + item.answer
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, len(item.prompt) : len(ids)] = torch.tensor(item.answer)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def answer_tokens(items: Sequence[Encoded]) -> int:
    """The tokens ``loss.answer_loss`` averages over in ``training_batch(items)``, counted without building it: every
    answer token has a label, and is predicted from the position before it, which exists unless the prompt is empty."""
    return sum(len(item.answer) - (0 if item.prompt else 1) for item in items)


def generation_batch(prompts: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts, so every row's next token is generated at the same position."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return {"input_ids": input_ids, "attention_mask": mask}
