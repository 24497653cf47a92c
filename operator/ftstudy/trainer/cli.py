"""``ftstudy-trainer``: the command every trial runs, in a local process or in the trainer image.

Exit codes tell the study engine what happened without parsing logs:

====  ==========================================================================================
0     completed, screened (stage screen), pruned by the study, or diverged (a NaN loss is a result: accuracy 0)
2     bad input: missing model or data file, malformed dataset line, unknown attribute or hyperparameter, a
      missing or corrupt checkpoint (stage resume; the message names the file)
3     the study's database stayed unreachable past the retry deadline
4     the object store of --output (a URL) refused or could not be reached past its retry deadline: nothing
      half-written is ever resumed from, and the attempt may be retried
75    preempted (``--checkpoint-on-stop``): stopped by SIGTERM from outside, with the training state checkpointed
      in --output; the next run of the same command resumes there (a Job's next pod; ``podFailurePolicy`` does not
      count it as a failure)
143   stopped by SIGTERM (or SIGINT) before finishing; every file on disk is complete
1     anything else (a bug): the traceback is printed
====  ==========================================================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from ftstudy import redact
from ftstudy.trainer.stop_event import StopEvent

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_STORAGE, EXIT_ARTIFACTS, EXIT_TERMINATED = 0, 1, 2, 3, 4, 143
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again later; the operator's Jobs ignore this exit code (podFailurePolicy)
STORAGE_ENV = "FTSTUDY_STORAGE_URL"
log = logging.getLogger("ftstudy.trainer")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ftstudy-trainer",
        description="LoRA-fine-tune a causal LM for product-attribute extraction; score it at the early step and "
        "at the end, reporting to an Optuna trial.",
    )
    p.add_argument(
        "--model", default="tiny", help="'tiny', 'mini', 'smollm2', a .gguf file or a Hugging Face directory"
    )
    p.add_argument("--data", type=Path, default=None, help="directory with train/validation/test(.jsonl) (required)")
    p.add_argument(
        "--output",
        required=True,
        help="where the run's files go (adapters, checkpoint, result.json): a directory, or an object store URL "
        "(s3://bucket/prefix, gs://, az://; credentials from the environment, as the cloud's SDKs read them), "
        "written through a local scratch directory (--scratch)",
    )
    p.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="with --output a URL: the local working directory (default: under $TMPDIR, named after the URL)",
    )
    p.add_argument(
        "--store-retry-seconds",
        type=float,
        default=30.0,
        help="with --output a URL: how long one request to the object store is retried before the run fails (exit 4)",
    )
    p.add_argument("--attributes", default=None, help="comma-separated attribute names (default: the eight)")
    p.add_argument(
        "--train-samples", type=int, default=None, help="use the first N training examples (0: score the base model)"
    )
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=None, help="overrides --epochs")
    p.add_argument("--min-steps", type=int, default=None, help="train at least this many steps (small sets repeat)")
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--early-fraction", type=float, default=0.2, help="where the early evaluation happens")
    p.add_argument(
        "--extra-eval-fractions",
        default="",
        help="comma-separated fractions of training where validation accuracy is also measured (recorded, not "
        "acted on)",
    )
    p.add_argument(
        "--rungs",
        default="",
        help="comma-separated fractions of training after the early one where a resumed screened trial stops, "
        "scored and checkpointed, for the study to decide again (promotion.rungs); stage full ignores them",
    )
    p.add_argument(
        "--score-base-model",
        action="store_true",
        help="score the model before training too: the study's zero-shot accuracy (the engine asks trial 0)",
    )
    p.add_argument(
        "--stage",
        choices=("full", "screen", "resume", "forget", "forget-all", "check-data"),
        default="full",
        help="full: the whole trial; screen: train to the early step, write a checkpoint, report and exit; "
        "resume: continue a screened trial from its checkpoint in --output to the next of --rungs after it (scored "
        "there, checkpointed, exits as screened again), else to the end; forget: delete the "
        "checkpoint in --output and nothing else (a pruned trial's, where only the trials' pods see the volume); "
        "forget-all: delete --output whole (a deleted study's artifacts, cleanup.deleteArtifacts); "
        "check-data: read every split of --data once and, with --output an object store, write and read it back once, "
        "then exit (2 naming the file and line if a split cannot be read, 4 naming the store's refusal)",
    )
    p.add_argument(
        "--checkpoint-on-stop",
        action="store_true",
        help="on SIGTERM, checkpoint the training state in --output and exit 75 (preempted); started again with "
        "the same arguments, resume from that checkpoint (a cluster's Jobs: a drained or preempted pod loses at "
        "most the step it was in)",
    )
    p.add_argument(
        "--group-by-length", action="store_true", help="batch training examples of similar length (less padding)"
    )
    p.add_argument("--eval-samples", type=int, default=100, help="validation examples scored")
    p.add_argument("--test-samples", type=int, default=100, help="test and independent-test examples scored")
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--check-every", type=int, default=5, help="steps between reads of the trial's state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="train data-parallel on this many processes, one per device (ftstudy.trainer.launch; on GPUs one per "
        "GPU, NCCL; on CPUs gloo): the same global batch and data order, the trial's result from rank 0",
    )
    study = p.add_argument_group("study (omit to run without one, with --params)")
    study.add_argument(
        "--storage",
        default=os.environ.get(STORAGE_ENV) or None,
        help=f"Optuna storage URL (postgresql+psycopg2://… or sqlite:///…); default: ${STORAGE_ENV}, which is how a "
        "Kubernetes Job passes it (from a Secret, so it never shows in the pod's command line)",
    )
    study.add_argument("--study", default=None, help="study name")
    study.add_argument("--trial", type=int, default=None, help="trial number within the study")
    study.add_argument(
        "--storage-retry-seconds",
        type=float,
        default=120.0,
        help="how long to retry an unreachable database before giving up",
    )
    study.add_argument(
        "--report-retry-seconds",
        type=float,
        default=600.0,
        help="in a cluster: how long to retry a report the operator cannot take yet (it restarts, a new leader "
        "takes over) before the trial fails with that reason",
    )
    p.add_argument(
        "--params",
        default=None,
        help="hyperparameters as JSON: all of them without a study; with one, fixed values the trial's own override",
    )
    p.add_argument(
        "--generate-data",
        default=None,
        metavar="JSON",
        help="write the synthetic dataset into --data first, unless it is already there: "
        '{"seed": 0, "train": 2000, "validation": 200, "test": 200, "independent_test": 200, '
        '"locales": ["de", "fr", "ch"], "independent_locales": ["it"]} '
        "(how a trial in a cluster gets a dataset.generate study's data; every trial writes the same pages; "
        "independent_locales absent or null: the generator's default; "
        '"validation_holdout": true for validation pages from a held-out shop, layout and category)',
    )
    p.add_argument("--log-level", default="INFO")
    return p


def _settings(args: argparse.Namespace) -> Any:
    from ftstudy.task.attributes import DEFAULT_ATTRIBUTES, validate_attribute_names
    from ftstudy.trainer.config import RunSettings

    attributes = (
        validate_attribute_names([a.strip() for a in args.attributes.split(",")])
        if args.attributes
        else DEFAULT_ATTRIBUTES
    )
    return RunSettings(
        model=args.model,
        data_dir=args.data,
        output_dir=args.run_dir,
        attributes=attributes,
        train_samples=args.train_samples,
        epochs=args.epochs,
        max_steps=args.max_steps,
        min_steps=args.min_steps,
        max_seq_len=args.max_seq_len,
        early_fraction=args.early_fraction,
        extra_eval_fractions=_fractions(args.extra_eval_fractions),
        rungs=_fractions(args.rungs, "--rungs"),
        score_base_model=args.score_base_model,
        stage=args.stage,
        checkpoint_on_stop=args.checkpoint_on_stop,
        eval_samples=args.eval_samples,
        test_samples=args.test_samples,
        eval_batch_size=args.eval_batch_size,
        group_by_length=args.group_by_length,
        check_every=args.check_every,
        seed=args.seed,
        device=args.device,
    )


def _fractions(text: str, option: str = "--extra-eval-fractions") -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _reporter(args: argparse.Namespace, stop: threading.Event | None = None) -> Any:
    """``stop``: the trainer's SIGTERM, which ends a report's retries (``ftstudy.retry.Stopped``)."""
    from ftstudy.retry import RetryPolicy
    from ftstudy.trainer import reporting
    from ftstudy.trainer.reporting import LocalReporter, OptunaReporter

    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"--params is not valid JSON: {error}") from None
    if not isinstance(params, dict):
        raise ValueError("--params must be a JSON object of hyperparameters")
    if os.environ.get(reporting.REPORT_URL_ENV):  # a cluster's trial: reports go to the operator, over HTTPS
        return _http_reporter(args, params, stop)
    study_args = [args.storage, args.study, args.trial]
    if any(a is not None for a in study_args):
        if not all(a is not None for a in study_args):
            raise ValueError("--storage, --study and --trial go together")
        retry = RetryPolicy(deadline_seconds=args.storage_retry_seconds, stop=stop)
        return OptunaReporter(args.storage, args.study, args.trial, retry, defaults=params)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    return LocalReporter(params, args.run_dir)


def _http_reporter(args: argparse.Namespace, params: dict[str, Any], stop: threading.Event | None = None) -> Any:
    """The reporter of a trial in a cluster, from what its Job gives it (``ftstudy.kube.jobs``)."""
    from ftstudy.retry import RetryPolicy
    from ftstudy.trainer import reporting

    missing = [name for name in (reporting.REPORT_CA_ENV, reporting.REPORT_TOKEN_ENV, reporting.REPORT_TRIAL_ENV)
               if not os.environ.get(name)]  # fmt: skip
    if missing:
        raise ValueError(f"${reporting.REPORT_URL_ENV} is set but {', '.join('$' + m for m in missing)} not")
    try:
        trial = json.loads(os.environ[reporting.REPORT_TRIAL_ENV])
    except json.JSONDecodeError as error:
        raise ValueError(f"${reporting.REPORT_TRIAL_ENV} is not valid JSON: {error}") from None
    retry = RetryPolicy(deadline_seconds=args.report_retry_seconds, target="the operator's report endpoint", stop=stop)
    url, ca, token = (os.environ[n] for n in (reporting.REPORT_URL_ENV, reporting.REPORT_CA_ENV,
                                             reporting.REPORT_TOKEN_ENV))  # fmt: skip
    return reporting.HttpReporter(url, ca, Path(token), trial, retry, defaults=params)


def _generate_data(directory: Path, settings_json: str) -> None:
    """Write the generated dataset once: into a private directory first, then renamed into place, so trials that
    share a volume and start together never read a half-written split."""
    import shutil
    import tempfile

    from ftstudy.task.generator import LOCALE_CODES, SplitSizes, write_dataset

    if (directory / ".complete").exists():
        return
    try:
        settings = json.loads(settings_json)
        sizes = SplitSizes(
            int(settings["train"]),
            int(settings["validation"]),
            int(settings["test"]),
            int(settings.get("independent_test", 0)),
        )
        seed = int(settings.get("seed", 0))
        locales = [str(code) for code in settings.get("locales", LOCALE_CODES)]
        # Absent or null: the generator's default, the holdout shop of each language trained on.
        named = settings.get("independent_locales")
        if named is not None and not isinstance(named, list):
            raise TypeError(f"independent_locales must be a list of shops or null, not {named!r}")
        independent_locales = None if named is None else [str(code) for code in named]
        holdout = settings.get("validation_holdout", False)
        if not isinstance(holdout, bool):
            raise TypeError(f"validation_holdout must be true or false, not {holdout!r}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"--generate-data needs JSON with seed, train, validation and test sizes ({error})") from None
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        write_dataset(scratch, seed, sizes, locales, independent_locales, holdout)
        (scratch / ".complete").write_text(settings_json)
        try:
            os.rename(scratch, directory)
        except OSError:
            if not (directory / ".complete").exists():  # not a concurrent trial winning the race: a real error
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _record_failure(reporter: Any, reason: str, outcome: bool = True) -> None:
    """Best effort: the engine also sees the exit code, so a failure to record must not mask the first error.
    ``outcome`` False: the reason only, for an outage, which is not the trial's outcome (a screened trial whose resume
    met one stays screened, to be resumed again from its checkpoint)."""
    if reporter is None:
        return
    try:
        reporter.set_attrs({"failure_reason": reason, **({"outcome": "failed"} if outcome else {})})
    except Exception as error:
        log.warning("could not record the failure reason in the study: %s", error)


def _forget(run_dir: Path, artifacts: Any, whole: bool) -> int:
    """Delete the run's checkpoint (its adapters stay): what ``cleanup.prunedCheckpoints`` asks for a pruned trial;
    ``whole``: everything under ``--output`` (``cleanup.deleteArtifacts``, a deleted study's). Gone already is done:
    the operator may ask again after a restart."""
    from ftstudy.object_store import ObjectStoreError

    what = "everything" if whole else "the checkpoint"
    try:
        if whole:
            artifacts.forget_all(run_dir)
        else:
            artifacts.forget_checkpoint(run_dir)
    except (OSError, ObjectStoreError) as error:
        log.error("could not delete %s: %s", what, error)
        return EXIT_ARTIFACTS if isinstance(error, ObjectStoreError) else EXIT_BUG
    log.info("deleted %s of %s (or it was gone)", what, run_dir)
    return EXIT_OK


def _artifacts(args: argparse.Namespace) -> Any:
    """Where the run's files go (``ftstudy.trainer.artifacts``); sets ``args.run_dir``, the local directory the
    trainer writes into first."""
    import hashlib
    import tempfile

    from ftstudy.object_store import ObjectStore, is_url
    from ftstudy.trainer.artifacts import LocalArtifacts, ObjectArtifacts

    if not is_url(args.output):
        args.run_dir = Path(args.output)
        return LocalArtifacts()
    name = hashlib.sha256(args.output.encode()).hexdigest()[:16]
    args.run_dir = args.scratch or Path(tempfile.gettempdir()) / "ftstudy-runs" / name
    return ObjectArtifacts(ObjectStore(args.output, args.store_retry_seconds))


def _check_store(artifacts: Any) -> int:
    """With --output an object store: write, read back and delete a small object there, as every trial will (the
    operator's preflight Job runs this before any trial takes a GPU). 0 when it works or --output is a directory."""
    from ftstudy.object_store import ObjectStoreError
    from ftstudy.trainer.artifacts import ObjectArtifacts

    if not isinstance(artifacts, ObjectArtifacts):
        return EXIT_OK
    try:
        artifacts.store.probe()
    except ObjectStoreError as error:
        log.error("object store: %s", error)
        return EXIT_ARTIFACTS
    log.info("the object store at %s takes writes", artifacts.store.url)
    return EXIT_OK


def _check_data(directory: Path, attributes: str | None) -> int:
    """Read the dataset once, as every trial would: the operator runs this in a CPU Job before any trial takes a
    GPU, so that a missing file or a malformed line fails the study once, with the reason, instead of every trial."""
    from ftstudy.runner import check_data_dir
    from ftstudy.task.attributes import DEFAULT_ATTRIBUTES
    from ftstudy.task.dataset import DatasetError

    names = [a.strip() for a in attributes.split(",") if a.strip()] if attributes else list(DEFAULT_ATTRIBUTES)
    try:
        check_data_dir(directory, names)
    except DatasetError as error:
        log.error("bad input: %s", str(error).strip("'\""))
        return EXIT_BAD_INPUT
    log.info("the dataset in %s reads", directory)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", "0")) if "WORLD_SIZE" in os.environ else None
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s{f' [rank {rank}]' if rank else ''}: %(message)s",
    )
    redact.remember(os.environ.get(STORAGE_ENV))  # local mode's trainers hold the study's URL
    redact.install_log_filter()
    if args.processes > 1 and rank is None and args.stage not in ("forget", "forget-all", "check-data"):
        from ftstudy.trainer.launch import launch

        return launch(args.processes, sys.argv[1:] if argv is None else argv)
    from ftstudy.object_store import ObjectStoreError

    try:
        artifacts = _artifacts(args)
    except ObjectStoreError as error:
        log.error("%s", error)
        return EXIT_BAD_INPUT  # a URL the client cannot use at all (an unknown scheme, a malformed bucket)
    if args.stage in ("forget", "forget-all"):
        return _forget(args.run_dir, artifacts, whole=args.stage == "forget-all")
    if args.stage == "check-data":
        return _check_store(artifacts) or (_check_data(args.data, args.attributes) if args.data else EXIT_OK)
    if args.data is None:
        p.error("the following arguments are required: --data")
    stop = StopEvent()  # set by the handler below, which a plain Event's lock can deadlock (stop_event.py)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.warning("received %s: stopping at the next safe point", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    from ftstudy.retry import Stopped, StorageUnavailable
    from ftstudy.task.dataset import DatasetError
    from ftstudy.trainer.reporting import ReportRefused, TrialEnded

    reporter = None
    try:
        from ftstudy.trainer import distributed
        from ftstudy.trainer.artifacts import LocalArtifacts
        from ftstudy.trainer.config import ConfigError
        from ftstudy.trainer.model import ModelError
        from ftstudy.trainer.reporting import FollowerReporter
        from ftstudy.trainer.run import Outcome, Trainer

        world = distributed.join()
        if not world.main:  # rank 0 reads the study, reports and publishes for every rank
            reporter, artifacts = FollowerReporter(), LocalArtifacts()
        else:
            reporter = _reporter(args, stop)
        if args.generate_data and world.main:  # one writer; the other ranks read it after the barrier
            _generate_data(args.data, args.generate_data)
        world.barrier()
        try:
            result = Trainer(_settings(args), reporter, stop, artifacts, world).run()
        finally:
            distributed.leave(world)
    except TrialEnded as error:  # the study decided first (it pruned the trial, or launched it again): not a failure
        log.warning("%s; the study has ended this trial or launched it again: stopping", error)
        return EXIT_OK
    except Stopped as error:  # a SIGTERM while a report outside the training loop was being retried
        log.warning("%s", error)
        return EXIT_PREEMPTED if args.checkpoint_on_stop else EXIT_TERMINATED
    except StorageUnavailable as error:  # the study cannot be told (an outage): say so, and which report
        log.error("%s", error)
        return EXIT_STORAGE
    except ReportRefused as error:  # refused for good (401, 403, 4xx): a launch again would be refused the same way
        log.error("%s", error)
        return EXIT_BAD_INPUT
    except ObjectStoreError as error:  # the study is told why (best effort); the engine may retry the attempt
        log.error("object store: %s", error)
        _record_failure(reporter, f"object store: {error}", outcome=False)
        return EXIT_ARTIFACTS
    except (DatasetError, ModelError, ConfigError, LookupError, ValueError) as error:
        message = str(error).strip("'\"")
        log.error("bad input: %s", message)
        _record_failure(reporter, message)
        return EXIT_BAD_INPUT
    log.info("outcome: %s after %d of %d steps", result.outcome.value, result.steps_done, result.total_steps)
    exits = {Outcome.TERMINATED: EXIT_TERMINATED, Outcome.PREEMPTED: EXIT_PREEMPTED}
    return exits.get(result.outcome, EXIT_OK)


if __name__ == "__main__":
    raise SystemExit(main())
