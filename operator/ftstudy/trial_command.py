"""The trainer's command-line arguments for one trial of a study: one function, used by every executor, so a trial
runs the same way as a local process and in a Kubernetes Job."""

from __future__ import annotations

import json

from ftstudy.spec import StudySpec


def trainer_args(
    spec: StudySpec,
    study_name: str,
    number: int,
    data_dir: str,
    output_dir: str,
    generate_data: bool = False,
    stage: str = "full",
) -> list[str]:
    """The storage URL is never an argument: the trainer reads it from its environment (a Job's Secret, or the local
    executor's environment), so it never shows in a process list. ``generate_data`` has the trainer write a
    ``dataset.generate`` study's pages into ``data_dir`` itself (a pod cannot see the operator's disk). Trial 0 (the
    baseline, when the study has one) also scores the untrained model: the study's zero-shot accuracy, measured
    once. ``stage``: ``full``, or ``screen``/``resume`` for a screened study's trials (the trainer's ``--stage``)."""
    t = spec.training
    args = [
        "--model", spec.model,
        "--data", data_dir,
        "--output", output_dir,
        "--attributes", ",".join(spec.attributes),
        "--epochs", str(t.epochs),
        "--max-seq-len", str(t.max_seq_len),
        "--early-fraction", str(t.early_fraction),
        "--eval-samples", str(t.eval_samples),
        "--test-samples", str(t.test_samples),
        "--eval-batch-size", str(t.eval_batch_size),
        "--check-every", str(t.check_every),
        "--seed", str(t.seed),
        "--study", study_name,
        "--trial", str(number),
    ]  # fmt: skip
    if generate_data and spec.dataset.generate is not None:
        g = spec.dataset.generate
        sizes = {"seed": g.seed, "train": g.train, "validation": g.validation, "test": g.test,
                 "independent_test": g.independent_test, "locales": list(g.locales)}  # fmt: skip
        if g.independent_locales is not None:  # named only when given, so other studies' commands stay the same
            sizes["independent_locales"] = list(g.independent_locales)
        if g.validation_holdout:  # likewise
            sizes["validation_holdout"] = True
        args += ["--generate-data", json.dumps(sizes, sort_keys=True)]
    if t.train_samples is not None:
        args += ["--train-samples", str(t.train_samples)]
    if t.max_steps is not None:
        args += ["--max-steps", str(t.max_steps)]
    if t.min_steps is not None:
        args += ["--min-steps", str(t.min_steps)]
    if t.extra_eval_fractions:
        args += ["--extra-eval-fractions", ",".join(str(f) for f in t.extra_eval_fractions)]
    if spec.promotion.rungs[1:]:  # the early point is rungs[0] (the spec made it --early-fraction)
        args += ["--rungs", ",".join(str(f) for f in spec.promotion.rungs[1:])]
    if t.group_by_length:
        args += ["--group-by-length"]
    if number == 0:
        args += ["--score-base-model"]
    if (spec.trial_template.gpus or 1) > 1:  # one process per GPU, data parallel (ftstudy.trainer.launch)
        args += ["--processes", str(spec.trial_template.gpus)]
    if stage != "full":
        args += ["--stage", stage]
    if t.hyperparameters:
        args += ["--params", json.dumps(t.hyperparameters, sort_keys=True)]
    return args
