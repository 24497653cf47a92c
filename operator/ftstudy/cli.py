"""``ftstudy``: the command line for people (the trainer's own command is ``ftstudy-trainer``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftstudy.spec import StudySpec


def _generate(args: argparse.Namespace) -> int:
    from ftstudy.task.generator import SplitSizes, write_dataset

    sizes = SplitSizes(args.train, args.validation, args.test, args.independent_test)
    try:
        independent = args.independent_locales.split(",") if args.independent_locales else None
        paths = write_dataset(args.out, args.seed, sizes, args.locales.split(","), independent,
                              args.validation_holdout)  # fmt: skip
    except ValueError as error:
        print(f"ftstudy: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for split, path in paths.items():
        print(f"{split:>17}: {getattr(sizes, split):>6} pages -> {path}")
    return 0


EXIT_OK, EXIT_STUDY_FAILED, EXIT_BAD_INPUT, EXIT_STORAGE = 0, 1, 2, 3


def _default_storage(workdir: Path) -> str:
    return f"sqlite:///{(workdir / 'study.db').resolve()}"


def _artifact_root(study_spec: StudySpec, name: str) -> str | None:
    """With ``trialTemplate.outputDir`` an object store URL, ``ftstudy run``'s trials write there too, under
    ``<outputDir>/<study>``, after one write and read back (a missing bucket or refused credentials stop the study
    before any trial, with the store's reason). None: the trials' files stay in the work directory."""
    from ftstudy.object_store import ObjectStore, join
    from ftstudy.spec import is_store_url

    if not is_store_url(study_spec.trial_template.output_dir):
        return None
    root = join(study_spec.trial_template.output_dir, name)
    ObjectStore(root).probe()
    return root


def _run(args: argparse.Namespace) -> int:
    import logging

    import optuna

    from ftstudy import core, spec
    from ftstudy.executor import LocalExecutor
    from ftstudy.object_store import ObjectStoreError
    from ftstudy.progress import Progress
    from ftstudy.redact import install_log_filter, redact, remember
    from ftstudy.report import leaderboard, page_scores, rows, summary, summary_text
    from ftstudy.retry import RetryPolicy, StorageUnavailable
    from ftstudy.runner import Engine, check_data, prepare_data
    from ftstudy.study_store import StudyConflict, StudyStore
    from ftstudy.task.dataset import DatasetError

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    install_log_filter()
    try:
        study = spec.load(args.study_file)
    except spec.SpecError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    name = study.metadata.name
    workdir = (args.workdir / name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    url = args.storage or _default_storage(workdir)
    remember(url)
    retry = RetryPolicy(deadline_seconds=args.storage_retry_seconds)
    progress = Progress(study.spec.budget.max_trials)
    try:
        store = StudyStore(url, name, study.spec, retry)
        data_dir = prepare_data(study.spec, workdir, args.study_file.resolve().parent)
        check_data(study.spec, data_dir)
        artifacts = _artifact_root(study.spec, name)
        # The trainers get the URL in their environment: a command line is visible to every user (ps).
        executor = LocalExecutor(workdir / "trials", study.spec.budget.parallelism, storage_url=url,
                                 artifacts=artifacts)  # fmt: skip
        trials_root = artifacts or workdir / "trials"
        engine = Engine(study, store, executor, data_dir, trials_root, on_event=progress.event)
        print(f"study {name}: storage {redact(url)}, trials in {workdir / 'trials'}"
              + (f", their files in {artifacts}" if artifacts else ""))  # fmt: skip
        outcome = engine.run(args.poll_seconds, after_step=lambda: progress.tick(store.trials()))
        table = rows(store.trials())
    except StorageUnavailable as error:
        print(f"ftstudy: {redact(str(error), url)}. Running trials continue; run the same command again to resume.",
              file=sys.stderr)  # fmt: skip
        return EXIT_STORAGE
    except StudyConflict as error:
        print(f"ftstudy: {redact(str(error), url)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatasetError as error:
        print(f"ftstudy: the study's data cannot be read, so no trial was launched: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ObjectStoreError as error:
        print(f"ftstudy: the object store at spec.trialTemplate.outputDir cannot be used, so no trial was launched: "
              f"{error}", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nstopped: trials already running keep running; run the same command again to resume and adopt them.")
        return 130
    print()
    print(leaderboard(table))
    promotion = study.spec.promotion
    print()
    k = promotion.k if promotion.policy == "topK" else 5
    info = summary(table, k, store.audit_fraction, study.spec.budget.max_trials, page_scores(table))
    print(summary_text(info))
    print(f"\nplots and summary.json: .venv/bin/ftstudy report {name}")
    return EXIT_OK if isinstance(outcome, core.StudyDone) else EXIT_STUDY_FAILED


def _report(args: argparse.Namespace) -> int:
    import json

    import optuna

    from ftstudy.redact import redact
    from ftstudy.report import leaderboard, page_scores, plots, rows, summary, summary_text
    from ftstudy.study_store import AUDIT_FRACTION, TOP_K

    workdir = (args.workdir / args.study).resolve()
    url = args.storage or _default_storage(workdir)
    storage = optuna.storages.RDBStorage(url)
    try:
        study_id = storage.get_study_id_from_name(args.study)
    except KeyError:
        print(f"ftstudy: no study {args.study!r} in {redact(url)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    table = rows(storage.get_all_trials(study_id, deepcopy=False))
    attrs = storage.get_study_system_attrs(study_id)
    k = int(attrs.get(TOP_K, 5))
    audit_fraction = float(attrs.get(AUDIT_FRACTION) or 0.0)  # null or absent: a study older than audits
    print(leaderboard(table, limit=args.limit))
    info = summary(table, k, audit_fraction, pages=page_scores(table))
    print()
    print(summary_text(info))
    out = args.out or workdir / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    written = plots(table, out, k, audit_fraction)
    print(f"\nsummary: {out / 'summary.json'}")
    for path in written:
        print(f"plot: {path}")
    return EXIT_OK


def _crd(args: argparse.Namespace) -> int:
    from ftstudy.crd import crd_yaml

    if args.out is None:
        sys.stdout.write(crd_yaml())
    else:
        args.out.write_text(crd_yaml())
        print(f"wrote {args.out}", file=sys.stderr)
    return EXIT_OK


STORAGE_ENV = "FTSTUDY_STORAGE_URL"
STORAGE_HELP = (
    f"Optuna storage URL; default: ${STORAGE_ENV}, else SQLite in the work directory. Prefer the variable for a URL "
    "with a password: a command line is visible to every user of the machine (ps)"
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftstudy", description=__doc__)
    commands = p.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    gen = data.add_parser("generate", help="write a synthetic product-page dataset (JSONL splits)")
    gen.add_argument("--out", type=Path, required=True, help="directory for the .jsonl files")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--train", type=int, default=2000)
    gen.add_argument("--validation", type=int, default=200)
    gen.add_argument("--test", type=int, default=200)
    gen.add_argument("--independent-test", type=int, default=200)
    gen.add_argument(
        "--locales",
        default="us,uk,de,fr,ch",
        help="comma-separated shops of train/validation/test: us,uk (English), de,fr,ch (European); "
        "it (Italian), ca (Canadian English) are the holdout shops",
    )
    gen.add_argument(
        "--independent-locales",
        default=None,
        help="comma-separated shops of independent_test, none of --locales; default: it if a training shop is not "
        "English, ca if one is",
    )
    gen.add_argument(
        "--validation-holdout",
        action="store_true",
        help="validation pages from a shop, layout and category that train and test never have (the last of "
        "--locales, the minimal layout, beauty)",
    )
    gen.set_defaults(handler=_generate)

    run = commands.add_parser("run", help="run a FineTuneStudy on this machine, trials as local processes")
    run.add_argument("study_file", type=Path, help="a FineTuneStudy YAML file")
    run.add_argument("--storage", default=os.environ.get(STORAGE_ENV) or None, help=STORAGE_HELP)
    run.add_argument("--workdir", type=Path, default=Path("runs"), help="where trials write (default: runs/)")
    run.add_argument("--poll-seconds", type=float, default=1.0)
    run.add_argument("--storage-retry-seconds", type=float, default=120.0)
    run.set_defaults(handler=_run)

    report = commands.add_parser("report", help="leaderboard, JSON summary and plots of a study")
    report.add_argument("study", help="the study's name (metadata.name)")
    report.add_argument("--storage", default=os.environ.get(STORAGE_ENV) or None, help=STORAGE_HELP)
    report.add_argument("--workdir", type=Path, default=Path("runs"))
    report.add_argument("--out", type=Path, default=None, help="directory for summary.json and plots")
    report.add_argument("--limit", type=int, default=20)
    report.set_defaults(handler=_report)

    crd = commands.add_parser("crd", help="print the FineTuneStudy CustomResourceDefinition, generated from the spec")
    crd.add_argument("--out", type=Path, default=None, help="write it to this file instead (crds/ in the repository)")
    crd.set_defaults(handler=_crd)

    operator = commands.add_parser(
        "operator", help="run the Kubernetes operator (kopf) that reconciles FineTuneStudy objects"
    )
    from ftstudy.kube import main as operator_main

    operator_main.add_arguments(operator)
    operator.set_defaults(handler=operator_main.run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
