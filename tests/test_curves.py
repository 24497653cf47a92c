"""bench/curves.py's records survive a move to a fresh machine: imported into a new study (so the engine goes on with
the next configuration), then exported again, each committed record stays exactly as it was. The import keeps only
what a method decides by, so an export that rebuilt imported records from the study would lose the learning curve,
the page scores and the timings of every trial run elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests import bench_modules

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "data" / "curves-small.jsonl"


@pytest.fixture(scope="module")
def curves() -> ModuleType:
    return bench_modules.load("curves")


def test_records_imported_into_a_fresh_study_are_exported_unchanged(curves: ModuleType, tmp_path: Path) -> None:
    header, records = curves.read_table(TABLE)
    records = [r for r in records if not r["baseline"]][:4]
    records = [{**r, "trial": number} for number, r in enumerate(records)]  # trials 0..N-1, as a part's are
    assert all(len(r["validation"]) == 10 for r in records), "the fixture has whole curves"
    path = tmp_path / "main.jsonl"
    curves.write_table(path, header, records)
    part = next(p for p in curves.PARTS if p.name == "main")
    doc = curves.document(part, 1e-2, "mini")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    curves.import_records(url, "curves-main", doc, records)

    assert curves.export(url, "curves-main", tmp_path / "trials", path, header) == len(records)

    _, again = curves.read_table(path)
    assert [json.dumps(r, sort_keys=True) for r in again] == [json.dumps(r, sort_keys=True) for r in records]


def test_the_third_confirmation_differs_from_the_second_in_its_validation_pages_only(curves: ModuleType) -> None:
    """docs/science.md fixed it so: part holdout is part confirm with dataset.generate.validationHoldout, the same
    configurations (design seed), pages (data seed), training and baseline; a change to either part breaks the
    paired comparison its second rule makes."""
    parts = {part.name: part for part in curves.PARTS}
    confirm, holdout = (curves.document(parts[name], 0.01, "mini") for name in ("confirm", "holdout"))
    generate = holdout["spec"]["dataset"]["generate"]
    assert generate.pop("validationHoldout") is True
    assert holdout["spec"] == confirm["spec"]


def test_the_fourth_confirmation_is_mains_first_trials_with_held_out_validation(curves: ModuleType) -> None:
    """docs/science.md fixed it so: part holdout50 is main (the same configurations, pages, training and baseline)
    cut to 41 trials, with dataset.generate.validationHoldout; its rule 2 pairs it with main's first 41 trials."""
    parts = {part.name: part for part in curves.PARTS}
    main, held = (curves.document(parts[name], 0.01, "mini") for name in ("main", "holdout50"))
    assert held["spec"]["dataset"]["generate"].pop("validationHoldout") is True
    assert (held["spec"]["budget"].pop("maxTrials"), main["spec"]["budget"].pop("maxTrials")) == (41, 129)
    assert held["spec"] == main["spec"]
