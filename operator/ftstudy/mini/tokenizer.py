"""The demonstration model's tokenizer: a small byte-level BPE trained on generated product pages and answers.

A byte-level tokenizer makes every page three times longer than a BPE vocabulary of a few thousand pieces does, and
on a CPU the sequence length is the cost. Byte-level pieces underneath mean any text still round-trips, so a page
from a shop the vocabulary never saw is longer, never unreadable. It is trained on pages of every locale (as a real
LLM's tokenizer covers many languages), so fine-tuning on European shops does not start from a byte soup.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Deterministic for the same texts in the same order (the BPE trainer breaks ties by byte order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)  # type: ignore[no-untyped-call]
    tokenizer.add_special_tokens({"pad_token": PAD, "bos_token": BOS, "eos_token": EOS})
    return tokenizer
