"""The demonstration model ``mini``: it loads offline, extracts well on the English shops it was pretrained on and
poorly on the European ones, and a short LoRA run on European pages really teaches it (learning is asserted, not
only that it runs). Its build script still runs, and gives the same weights twice."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from ftstudy.mini import MINI_DIR
from ftstudy.mini.build import Recipe
from ftstudy.task.attributes import DEFAULT_ATTRIBUTES
from ftstudy.task.dataset import Example
from ftstudy.task.generator import ENGLISH_LOCALES, EUROPEAN_LOCALES, SplitSizes, generate_dataset, write_dataset
from ftstudy.task.preprocess import PreprocessConfig
from ftstudy.trainer.encoding import Encoder, answer_token_budget
from ftstudy.trainer.evaluate import accuracy
from ftstudy.trainer.model import load_model

PAGES = 48


def pages(locales: tuple[str, ...]) -> list[Example]:
    """Validation pages (drawn after 200 training pages, as a study's would be)."""
    splits = generate_dataset(11, SplitSizes(train=200, validation=PAGES, test=1, independent_test=1), locales)
    return [Example(str(r["id"]), str(r["html"]), dict(r["attributes"]), {}) for r in splits["validation"]]  # type: ignore[arg-type]


def zero_shot(locales: tuple[str, ...]) -> float:
    loaded = load_model("mini", "cpu")
    validation = pages(locales)
    budget = answer_token_budget(loaded.tokenizer, DEFAULT_ATTRIBUTES)
    encoder = Encoder(loaded.tokenizer, DEFAULT_ATTRIBUTES, 512, budget, PreprocessConfig())
    return accuracy(loaded.model, encoder, validation, 16, torch.device("cpu"), threading.Event()).mean


def test_mini_loads_offline_and_records_how_it_was_built() -> None:
    loaded = load_model("mini", "cpu")
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert 2_000_000 < sum(p.numel() for p in loaded.model.parameters()) < 2_500_000
    assert len(loaded.tokenizer) == Recipe().vocab_size
    record = json.loads((MINI_DIR / "build.json").read_text())
    assert record["recipe"] == json.loads(json.dumps(Recipe().__dict__)), "the committed weights are the recipe's"
    assert (MINI_DIR / "model.safetensors").stat().st_size < 6_000_000, "a few MB"


def test_zero_shot_it_extracts_english_shops_and_not_yet_european_ones() -> None:
    source, target = zero_shot(ENGLISH_LOCALES), zero_shot(EUROPEAN_LOCALES)
    assert source >= 0.75, source
    assert 0.2 <= target <= source - 0.2, (source, target)


def test_a_short_lora_run_on_european_pages_learns_what_pretraining_did_not(
    tmp_path: Path, trainer_cmd: list[str]
) -> None:
    write_dataset(tmp_path / "data", 0, SplitSizes(200, PAGES, PAGES, 8), EUROPEAN_LOCALES)
    params: dict[str, Any] = {"learning_rate": 1e-2, "lora_r": 16, "lora_alpha": 32, "batch_size": 8}
    run = subprocess.run(
        [*trainer_cmd, "--model", "mini", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
         "--epochs", "2", "--max-seq-len", "512", "--eval-samples", str(PAGES), "--test-samples", str(PAGES),
         "--eval-batch-size", "16", "--score-base-model", "--params", json.dumps(params)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    attrs = json.loads((tmp_path / "out" / "reported.json").read_text())["user_attrs"]
    # measured on the development machine: 0.29 zero-shot, 0.48 after 50 steps (docs/science.md)
    assert attrs["final_accuracy"] >= attrs["zero_shot_accuracy"] + 0.12, attrs
    assert attrs["final_accuracy"] > attrs["early_accuracy"], "it keeps learning after the early point"


def quick_build(out: Path) -> subprocess.CompletedProcess[str]:
    small = ["--steps", "3", "--train-pages", "64", "--tokenizer-pages", "100", "--eval-pages", "2",
             "--eval-every", "3", "--hidden-size", "32", "--intermediate-size", "64", "--layers", "1", "--heads", "2",
             "--batch-size", "4", "--warmup-steps", "1", "--vocab-size", "400", "--reading-pages", "16"]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "ftstudy.mini.build", "--out", str(out), *small],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_build_script_runs_and_gives_the_same_weights_twice(tmp_path: Path) -> None:
    first, second = quick_build(tmp_path / "a"), quick_build(tmp_path / "b")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    record = json.loads((tmp_path / "a" / "build.json").read_text())
    assert record["recipe"]["steps"] == 3 and len(record["curve"]) == 1
    assert load_model(str(tmp_path / "a"), "cpu").tokenizer.eos_token == "</s>"
