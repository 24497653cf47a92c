"""The small study every end-to-end test runs: the tiny model on a few generated pages, 15 steps, scored at step 3.

One document, so the local engine's tests (test_study) and the operator's (test_operator, test_chart) run the same
study; a cluster adds only its storage Secret and trial template."""

from __future__ import annotations

from typing import Any


def tiny_study(name: str, k: int = 1, mode: str = "online", audit: float = 0.0, **budget: Any) -> dict[str, Any]:
    """``k``: topK's K; ``mode``: promotion.mode; ``audit``: promotion.auditFraction (0 by default: which trials
    are audited depends on the study's name, random in most tests, and the tests count what is promoted);
    ``budget`` overrides fields of the default budget (4 trials, 2 at a time)."""
    return {
        "apiVersion": "ftstudy.io/v1alpha1",
        "kind": "FineTuneStudy",
        "metadata": {"name": name},
        "spec": {
            "model": "tiny",
            "dataset": {"generate": {"seed": 1, "train": 40, "validation": 4, "test": 4, "independentTest": 4}},
            "training": {"maxSteps": 15, "evalSamples": 4, "testSamples": 4, "evalBatchSize": 4, "checkEvery": 1},
            "searchSpace": {
                "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "lora_r": {"type": "int", "low": 2, "high": 8},
            },
            "sampler": {"type": "tpe", "nStartupTrials": 2, "seed": 0},
            "promotion": {"policy": "topK", "k": k, "mode": mode, "auditFraction": audit},
            "budget": {"maxTrials": 4, "parallelism": 2, "maxFailedTrials": 2, "retriesPerTrial": 1, **budget},
            "baseline": {"params": {"learning_rate": 1e-3, "lora_r": 4}},
        },
    }
