"""The training loss: next-token cross-entropy on the answer tokens alone, computed only where it is needed.

A causal LM's forward pass normally projects every position onto the vocabulary, although the loss reads only the
answer's ~60 positions out of ~400. Running the decoder, then the output layer on the answer positions alone, gives
the same loss (the mean over answer tokens, as ``model(**batch).loss`` computes it) for a fraction of the output
layer's work: on a CPU with a small model that layer is a large share of a step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ftstudy.trainer.encoding import IGNORE


def _base(model: Any) -> Any:
    """The causal LM under a peft wrapper (LoRA layers live inside it, so its forward runs them)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_loss(model: Any, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the answer tokens, their mean (or ``reduction="sum"``: a rank's share of a micro-batch split
    across processes, divided by the whole micro-batch's ``encoding.answer_tokens``); ``batch`` as
    ``training_batch`` makes it (labels IGNORE elsewhere)."""
    base = _base(model)
    hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction=reduction)
