"""Learning-curve tables: configurations of the bundled example's search space, each trained to the end by the
project's own engine, with validation accuracy at every 10% of training and test and independent-test accuracy at
the end. ``bench/replay.py`` replays search methods over them (the way LCBench and HPOBench compare methods: train
once, replay many times).

Each *part* is one ``ftstudy run`` study (policy ``none``: every trial to the end; one trial at a time on the cores
this process may use), written to ``bench/curves/<part>.jsonl``: a header line (the command, the code versions, the
data and training seeds, the thread count, the study spec) and a record per finished trial, rewritten as trials
finish. A stopped run goes on where it stopped: on the same machine the engine resumes its own study (SQLite under
``--workdir``); on a fresh one the committed records are imported into a new study first, so no finished trial runs
again.

Parts, in the order they run:
- ``baseline-pick``: the practitioner's baseline, fixed before any search: the best learning rate of a three-point
  grid (1e-4, 1e-3, 1e-2; rank 8, alpha 16, attention) on other pages (data seed 1), by validation accuracy;
- ``main``: that baseline (trial 0) and 128 configurations of a shifted Halton design (seed 0) on data seed 0;
- ``grid``: a practitioner's learning-rate sweep (six rates, rank 8, alpha 16, attention), data seed 0;
- ``seed1``, ``seed2``: the baseline and the first 24 Halton configurations again at training seeds 1 and 2;
- ``long``: the baseline and the first 40 Halton configurations trained four times longer (8 epochs);
- ``confirm``: the second confirmation (docs/science.md): 41 configurations of another design on other pages;
- ``holdout``: the third: ``confirm`` again with validation pages from a shop, layout and category that its training
  and test pages leave out (``dataset.generate.validationHoldout``);
- ``holdout50``: the fourth: ``main``'s first 41 configurations at its length, with held-out validation pages;
- ``efficiency-s0``, ``-s1``, ``-s2``: the data-efficiency sweep (``examples/data-efficiency.yaml``: fixed
  hyperparameters, 0 to 3,200 training samples, each trained to the end) at data and training seeds 0, 1 and 2
  together, scored at the end only; ``efficiency-6400``: its 6,400-sample point at seed 0.

    taskset -c 0 .venv/bin/python bench/curves.py                 # every part, one core (hours)
    .venv/bin/python bench/curves.py --parts main --export-only   # rewrite main's records from its study
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "study.yaml"
SWEEP = ROOT / "examples" / "data-efficiency.yaml"
SIZES = (0, 25, 50, 100, 200, 400, 800, 1600, 3200)
OUT = ROOT / "bench" / "curves"  # the committed records; --out elsewhere for a trial run
FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # validation at every 10%, the last one the end
EARLY = 0.2
VALIDATION_PAGES = 64  # the example's: what a study's decisions see
TEST_PAGES = 256  # test and independent test, each
DESIGN_SEED = 0
BASELINE_GRID = (1e-4, 1e-3, 1e-2)
PRACTITIONER_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
IMPORTED = "imported_from"  # the user attribute that marks a trial imported from the committed records
FIXED = {"lora_r": 8, "lora_alpha": 16, "target_modules": "attention"}


@dataclass(frozen=True)
class Part:
    name: str
    data_seed: int
    train_seed: int
    trials: int  # the baseline included where there is one
    sampler: str  # halton or grid
    epochs: int = 2
    grid: tuple[float, ...] = ()
    baseline: bool = True
    sizes: tuple[int, ...] = ()  # a data-efficiency sweep over these training-set sizes
    design_seed: int = DESIGN_SEED  # the Halton design's scrambling: which configurations a halton part trains
    validation_holdout: bool = False  # validation pages from a shop, layout and category training leaves out


PARTS = (
    Part("baseline-pick", data_seed=1, train_seed=0, trials=len(BASELINE_GRID), sampler="grid", grid=BASELINE_GRID,
         baseline=False),
    Part("main", data_seed=0, train_seed=0, trials=129, sampler="halton"),
    Part("grid", data_seed=0, train_seed=0, trials=len(PRACTITIONER_GRID), sampler="grid", grid=PRACTITIONER_GRID,
         baseline=False),
    Part("seed1", data_seed=0, train_seed=1, trials=25, sampler="halton"),
    Part("seed2", data_seed=0, train_seed=2, trials=25, sampler="halton"),
    Part("long", data_seed=0, train_seed=0, trials=41, sampler="halton", epochs=8),
    *(Part(f"efficiency-s{seed}", data_seed=seed, train_seed=seed, trials=len(SIZES), sampler="grid", sizes=SIZES)
      for seed in range(3)),
    Part("efficiency-6400", data_seed=0, train_seed=0, trials=1, sampler="grid", sizes=(6400,)),
    # The second confirmation (docs/science.md, fixed 2026-12-06 before any of its records existed): pages and
    # configurations neither main nor long has, trials as long as long's.
    Part("confirm", data_seed=2, train_seed=0, trials=41, sampler="halton", epochs=8, design_seed=1),
    # The third confirmation (docs/science.md, fixed 2026-12-06 before any of its records existed): confirm's
    # configurations, pages and training, but validation pages from a held-out shop, layout and category.
    Part("holdout", data_seed=2, train_seed=0, trials=41, sampler="halton", epochs=8, design_seed=1,
         validation_holdout=True),
    # The fourth confirmation (docs/science.md, fixed 2026-12-06 before any of its records existed): main's pages and
    # its first 41 configurations at main's length (the example's 50 steps), with held-out validation pages.
    Part("holdout50", data_seed=0, train_seed=0, trials=41, sampler="halton", validation_holdout=True),
)  # fmt: skip


def sweep_document(part: Part, model: str) -> dict[str, Any]:
    """A data-efficiency part: the bundled sweep at this part's seeds and sizes, scored at the end on the tables'
    page counts."""
    doc: dict[str, Any] = yaml.safe_load(SWEEP.read_text())
    spec = doc["spec"]
    doc["metadata"] = {"name": f"curves-{part.name}"}
    spec["model"] = model
    spec["dataset"]["generate"].update(seed=part.data_seed, train=max(part.sizes), validation=VALIDATION_PAGES,
                                       test=TEST_PAGES, independentTest=TEST_PAGES)  # fmt: skip
    spec["training"].update(seed=part.train_seed, evalSamples=VALIDATION_PAGES, testSamples=TEST_PAGES)
    spec["searchSpace"] = {"train_samples": {"type": "categorical", "choices": list(part.sizes)}}
    spec["budget"] = {"maxTrials": part.trials, "parallelism": 1, "maxFailedTrials": 3, "retriesPerTrial": 2}
    return doc


def document(part: Part, baseline_lr: float | None, model: str) -> dict[str, Any]:
    """The part's study: the bundled example's space, model and training, changed only where the table needs it."""
    if part.sizes:
        return sweep_document(part, model)
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    doc["metadata"] = {"name": f"curves-{part.name}"}
    spec["model"] = model
    generate = spec["dataset"]["generate"]
    generate.update(seed=part.data_seed, validation=VALIDATION_PAGES, test=TEST_PAGES, independentTest=TEST_PAGES)
    generate.pop("validationHoldout", None)  # the example's, since the third confirmation: each part says its own
    if part.validation_holdout:
        generate["validationHoldout"] = True
    training = spec["training"]
    training.update(epochs=part.epochs, earlyFraction=EARLY, evalSamples=VALIDATION_PAGES, testSamples=TEST_PAGES,
                    seed=part.train_seed, extraEvalFractions=[f for f in FRACTIONS[:-1] if f != EARLY])  # fmt: skip
    spec["promotion"] = {"policy": "none", "mode": "online"}
    spec["budget"] = {"maxTrials": part.trials, "parallelism": 1, "maxFailedTrials": 20, "retriesPerTrial": 2}
    spec.pop("baseline", None)
    if part.sampler == "grid":
        spec["searchSpace"] = {
            "learning_rate": {"type": "categorical", "choices": list(part.grid)},
            **{name: {"type": "categorical", "choices": [value]} for name, value in FIXED.items()},
        }
        spec["sampler"] = {"type": "grid", "seed": 0}
    else:
        spec["sampler"] = {"type": "halton", "seed": part.design_seed}
        if part.baseline:
            assert baseline_lr is not None, "the baseline is picked before the parts that use it"
            spec["baseline"] = {"params": {"learning_rate": baseline_lr, **FIXED}}
    return doc


# ---- records ---------------------------------------------------------------------------------------------------
def _git_version() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _fraction_of(step: int, total: int) -> float | None:
    """Which of FRACTIONS the trainer evaluated at this step (its ``early_step`` rounding), if any."""
    for fraction in FRACTIONS:
        if max(1, round(total * fraction)) == step and fraction < 1:
            return fraction
    return None


def record(trial: Any, trials_dir: Path) -> dict[str, Any] | None:
    """One finished trial as a table row; None while it is not finished."""
    from ftstudy.executor import trial_dir
    from ftstudy.study_store import is_baseline
    from ftstudy.trainer.reporting import PAGE_SCORES, UserAttr

    attrs = trial.user_attrs
    outcome = attrs.get(UserAttr.OUTCOME.value)
    if outcome not in {"completed", "diverged"}:
        return None
    total = int(attrs[UserAttr.TOTAL_STEPS.value])
    validation: dict[str, float] = {}
    early_step = attrs.get(UserAttr.EARLY_STEP.value)
    if attrs.get(UserAttr.EARLY_ACCURACY.value) is not None and early_step is not None:
        validation[str(EARLY)] = float(attrs[UserAttr.EARLY_ACCURACY.value])
    for step, value in (attrs.get(UserAttr.ACCURACY_AT_STEP.value) or {}).items():
        fraction = _fraction_of(int(step), total)
        if fraction is not None:
            validation[str(fraction)] = float(value)
    if attrs.get(UserAttr.FINAL_ACCURACY.value) is not None:
        validation["1.0"] = float(attrs[UserAttr.FINAL_ACCURACY.value])
    pages_file = trial_dir(trials_dir, trial.number) / PAGE_SCORES
    pages = json.loads(pages_file.read_text()) if pages_file.exists() else {}
    return {
        "trial": trial.number,
        "params": dict(trial.params),
        "baseline": is_baseline(trial),
        "outcome": outcome,
        "train_examples": attrs.get(UserAttr.TRAIN_EXAMPLES.value),
        "total_steps": total,
        "steps_done": attrs.get(UserAttr.STEPS_DONE.value),
        "validation": dict(sorted(validation.items(), key=lambda kv: float(kv[0]))),
        "test": attrs.get(UserAttr.TEST_ACCURACY.value),
        "independent_test": attrs.get(UserAttr.INDEPENDENT_TEST_ACCURACY.value),
        "zero_shot": {
            name: attrs[key.value]
            for name, key in (
                ("validation", UserAttr.ZERO_SHOT_ACCURACY),
                ("test", UserAttr.ZERO_SHOT_TEST_ACCURACY),
                ("independent_test", UserAttr.ZERO_SHOT_INDEPENDENT_TEST_ACCURACY),
            )
            if key.value in attrs
        }
        or None,
        "pages": {split: pages[split] for split in ("test", "independent_test") if split in pages},
        "train_seconds": attrs.get(UserAttr.TRAIN_SECONDS.value),
        "eval_seconds": attrs.get(UserAttr.EVAL_SECONDS.value),
    }


def read_table(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A part's header and records (no header and no records when the file does not exist)."""
    if not path.exists():
        return {}, []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header = lines[0]["header"] if lines and "header" in lines[0] else {}
    return header, [line for line in lines if "trial" in line]


def write_table(path: Path, header: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as out:
        out.write(json.dumps({"header": header}) + "\n")
        for row in sorted(records, key=lambda r: r["trial"]):
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    tmp.replace(path)


def export(storage_url: str, name: str, trials_dir: Path, path: Path, header: dict[str, Any]) -> int:
    """Rewrite the part's records from its study. Records already in the file and not in the study are kept, and so
    are those the study holds only as imports (``import_records`` keeps the scores a method decides by, not the whole
    curve, the page scores or the timings)."""
    import optuna

    _, kept = read_table(path)
    by_trial = {r["trial"]: r for r in kept}
    study = optuna.load_study(study_name=name, storage=storage_url)
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(IMPORTED) and trial.number in by_trial:
            continue
        row = record(trial, trials_dir)
        if row is not None:
            by_trial[trial.number] = row
    write_table(path, header, list(by_trial.values()))
    return len(by_trial)


def import_records(storage_url: str, name: str, doc: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    """A fresh study holding the committed records as finished trials, numbered as they were, so that the engine
    goes on with the next configuration instead of training these again (a run moved to another machine)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from ftstudy.spec import FineTuneStudy
    from ftstudy.study_store import FIXED_PARAMS, distributions
    from ftstudy.trainer.reporting import UserAttr

    spec = FineTuneStudy.model_validate(doc).spec
    dists = distributions(spec)
    study = optuna.create_study(study_name=name, storage=storage_url, direction="maximize")
    numbers = sorted(r["trial"] for r in records)
    if numbers != list(range(len(numbers))):
        raise SystemExit(f"{name}: records {numbers} are not trials 0..N-1; cannot renumber them")
    for row in sorted(records, key=lambda r: r["trial"]):
        early = row["validation"].get(str(EARLY), 0.0)
        attrs = {
            UserAttr.OUTCOME.value: row["outcome"],
            UserAttr.TOTAL_STEPS.value: row["total_steps"],
            UserAttr.STEPS_DONE.value: row["steps_done"],
            UserAttr.EARLY_STEP.value: max(1, round(row["total_steps"] * EARLY)),
            UserAttr.EARLY_ACCURACY.value: early,
            UserAttr.FINAL_ACCURACY.value: row["validation"].get("1.0"),
            UserAttr.TEST_ACCURACY.value: row["test"],
            UserAttr.INDEPENDENT_TEST_ACCURACY.value: row["independent_test"],
            IMPORTED: "bench/curves",
        }
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=early,
                params=row["params"],
                distributions={k: dists[k] for k in row["params"]},
                user_attrs={k: v for k, v in attrs.items() if v is not None},
                system_attrs={FIXED_PARAMS: row["params"]} if row["baseline"] else {},
                intermediate_values={max(1, round(row["total_steps"] * EARLY)): early},
            )
        )


# ---- running ---------------------------------------------------------------------------------------------------
def baseline_pick(out: Path) -> float | None:
    """The baseline's learning rate: the best validation accuracy of ``baseline-pick``, once it has every trial."""
    _, records = read_table(out / "baseline-pick.jsonl")
    finished = [r for r in records if r["validation"].get("1.0") is not None]
    if len(finished) < len(BASELINE_GRID):
        return None
    best = max(finished, key=lambda r: (r["validation"]["1.0"], -r["params"]["learning_rate"]))
    return float(best["params"]["learning_rate"])


def run_part(part: Part, args: argparse.Namespace) -> None:
    doc = document(part, baseline_pick(args.out), args.model)
    name = doc["metadata"]["name"]
    workdir = args.workdir.resolve()
    study_dir = workdir / name
    study_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{study_dir / 'study.db'}"
    path = args.out / f"{part.name}.jsonl"
    old_header, records = read_table(path)
    if len(records) >= part.trials and not args.export_only:
        print(f"{part.name}: {len(records)} of {part.trials} trials recorded; nothing to run", flush=True)
        return
    header = {
        "part": part.name,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "code_versions": sorted({*old_header.get("code_versions", []), _git_version()}),
        "data_seed": part.data_seed,
        "train_seed": part.train_seed,
        "design_seed": part.design_seed if part.sampler == "halton" else None,
        "threads": len(os.sched_getaffinity(0)),
        "machine": args.machine,
        "spec": doc["spec"],
    }
    if args.export_only and old_header:  # rewriting records trains nothing: the header still names the training run
        header.update({key: old_header[key] for key in ("command", "code_versions", "threads") if key in old_header})
    if not (study_dir / "study.db").exists() and records:
        import_records(url, name, doc, records)
        print(f"{part.name}: imported {len(records)} recorded trials into a new study", flush=True)
    if args.export_only:
        print(f"{part.name}: {export(url, name, study_dir / 'trials', path, header)} records", flush=True)
        return
    study_file = study_dir.parent / f"{name}.yaml"
    study_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = threading.Event()

    def keep_exporting() -> None:
        while not done.wait(args.export_every):
            try:
                export(url, name, study_dir / "trials", path, header)
            except Exception as error:  # the study may be busy; the next round or the final export catches up
                print(f"{part.name}: export skipped ({error})", flush=True)

    exporter = threading.Thread(target=keep_exporting, daemon=True)
    exporter.start()
    started = time.monotonic()
    print(f"{part.name}: {part.trials} trials, study {name} in {study_dir}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "run.log").open("a") as log:
        code = subprocess.run(
            [sys.executable, "-m", "ftstudy.cli", "run", str(study_file), "--workdir", str(workdir)],
            stdout=log, stderr=subprocess.STDOUT, check=False,
        ).returncode  # fmt: skip
    done.set()
    exporter.join()
    count = export(url, name, study_dir / "trials", path, header)
    minutes = (time.monotonic() - started) / 60
    print(f"{part.name}: exit {code}, {count} records, {minutes:.1f} min", flush=True)
    if code != 0:
        raise SystemExit(f"{part.name}: ftstudy run ended with exit code {code}; see {args.out / 'run.log'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(p.name for p in PARTS))
    parser.add_argument("--model", default="mini")
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "ftstudy" / "curves")
    parser.add_argument("--export-every", type=float, default=120.0, help="seconds between record rewrites")
    parser.add_argument("--export-only", action="store_true", help="rewrite the records from the studies; run nothing")
    parser.add_argument("--out", type=Path, default=OUT, help="where the records go")
    parser.add_argument("--machine", default="polyglot: 2-core CPU, no accelerator", help="written in the header")
    args = parser.parse_args(argv)
    wanted = args.parts.split(",")
    unknown = sorted(set(wanted) - {p.name for p in PARTS})
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}")
    for part in PARTS:
        if part.name in wanted:
            if part.baseline and part.sampler == "halton" and baseline_pick(args.out) is None:
                raise SystemExit(f"{part.name} needs the baseline: run the part baseline-pick first")
            run_part(part, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
