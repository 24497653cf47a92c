"""The ``FineTuneStudy`` spec: what a user writes, in a Kubernetes manifest or a local YAML file.

One set of pydantic types, validated once at the edge; the core receives plain, already-checked data. Field names
are camelCase in YAML (Kubernetes style) and snake_case in Python. An invalid spec is refused with messages that
name the field and the fix (``SpecError``).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES, validate_attribute_names

API_VERSION = "ftstudy.io/v1alpha1"
KIND = "FineTuneStudy"
HYPERPARAMETERS = (
    "learning_rate", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "weight_decay", "warmup_ratio",
    "lr_scheduler", "batch_size", "grad_accum", "max_grad_norm",
)  # fmt: skip
# Names a searchSpace may use besides the hyperparameters: run settings (the data-efficiency sweep searches the
# number of training samples; 0 scores the base model untrained). As ftstudy.trainer.config.SEARCHABLE_SETTINGS.
SEARCHABLE_SETTINGS = ("train_samples",)
SEARCHABLE = HYPERPARAMETERS + SEARCHABLE_SETTINGS
LocaleCode = Literal["us", "uk", "de", "fr", "ch", "it", "ca"]
LOCALES: tuple[LocaleCode, ...] = ("us", "uk", "de", "fr", "ch")  # the generator's shops (task.generator.LOCALES)


class SpecError(ValueError):
    """A spec that cannot run; ``str()`` lists every problem as ``field: what is wrong and how to fix it``."""


class _Model(BaseModel):
    """Strict: a string is not a number, nor 1 a boolean, exactly as the API server judges the same JSON (the CRD is
    generated from these types, and both must agree on every manifest; tests/test_fuzz.py). Integers are numbers."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True)


class FloatParam(_Model):
    """A real-valued hyperparameter; ``log`` samples it on a log scale (learning rates)."""

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale parameter needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self


class IntParam(_Model):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale parameter needs low > 0")
        if self.log and self.step != 1:
            raise ValueError("step and log cannot be combined")
        return self


class CategoricalParam(_Model):
    type: Literal["categorical"]
    choices: list[str | int | float] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParam:
        if len(set(map(str, self.choices))) != len(self.choices):
            raise ValueError("choices must be unique")
        return self


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def paper_search_space() -> dict[str, FloatParam | IntParam | CategoricalParam]:
    """The paper's kind of LoRA space: learning rate (log), rank, alpha, dropout, and where LoRA is applied."""
    return {
        "learning_rate": FloatParam(low=1e-5, high=5e-3, log=True),
        "lora_r": IntParam(type="int", low=4, high=64, log=True),
        "lora_alpha": IntParam(type="int", low=8, high=128, log=True),
        "lora_dropout": FloatParam(low=0.0, high=0.2),
        "target_modules": CategoricalParam(type="categorical", choices=["attention", "attention_mlp"]),
    }


class DatasetGenerate(_Model):
    """Generate the bundled synthetic dataset instead of reading files."""

    seed: int = 0
    train: int = Field(default=2000, ge=1)
    validation: int = Field(default=200, ge=1)
    test: int = Field(default=200, ge=1)
    independent_test: int = Field(default=200, ge=0)
    locales: list[LocaleCode] = Field(
        default_factory=lambda: list(LOCALES),
        min_length=1,
        description="the shops the train, validation and test pages come from: us and uk write English; de, fr and "
        "ch write German, French and Swiss German, with their own labels, stock phrases, colour names, price formats "
        "and currencies; it (Italian) and ca (Canadian English) are the holdout shops, kept for the independent test "
        "by default",
    )
    # No description here: the CRD's is in ftstudy.crd's table, with the default rule spelt out.
    independent_locales: list[LocaleCode] | None = Field(default=None, min_length=1)
    validation_holdout: bool = Field(
        default=False,
        description="validation pages from a shop, layout and category that train and test never have (the last "
        "of locales, the minimal layout, beauty), so that the scores a study chooses by reward what carries over to "
        "new shops, as the independent test does; needs two locales or more",
    )

    @model_validator(mode="after")
    def _unique_locales(self) -> DatasetGenerate:
        if len(set(self.locales)) != len(self.locales):
            raise ValueError("locales must not repeat")
        if self.validation_holdout:
            from ftstudy.task.generator import holdout_for

            holdout_for(self.locales)  # refuses fewer than two locales, as the generator would
        named = self.independent_locales
        if named is not None and len(set(named)) != len(named):
            raise ValueError("independentLocales must not repeat")
        return self

    @model_validator(mode="after")
    def _independent_shops(self) -> DatasetGenerate:
        """Refused here, not when the trials start: the independent test must come from other shops than the
        training pages (ftstudy.task.generator.independent_locales_for), and its default needs a holdout shop
        that is not trained on."""
        from ftstudy.task.generator import independent_locales_for

        overlap = [code for code in self.independent_locales or () if code in self.locales]
        if overlap:
            raise ValueError(
                f"independentLocales and locales share {', '.join(overlap)}; the independent test must come from "
                "other shops than the training pages"
            )
        if self.independent_locales is None and self.independent_test > 0:
            try:
                independent_locales_for(self.locales)
            except ValueError:
                raise ValueError(
                    "locales leave no holdout shop for the independent test's default (it when a locale is not "
                    "English, ca when one is): name independentLocales, or set independentTest: 0"
                ) from None
        return self


class DatasetRef(_Model):
    """Where the JSONL splits are (docs/task.md), or how to generate them. Exactly one of the two."""

    path: str | None = None
    generate: DatasetGenerate | None = None

    @model_validator(mode="after")
    def _one(self) -> DatasetRef:
        if (self.path is None) == (self.generate is None):
            raise ValueError("give exactly one of dataset.path (a directory of JSONL splits) or dataset.generate")
        return self


class Training(_Model):
    """Settings shared by every trial: they define what "20% of training" means."""

    train_samples: int | None = Field(default=None, ge=1, description="first N training examples; all if unset")
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="overrides epochs")
    min_steps: int | None = Field(
        default=None, ge=1, description="train at least this many steps: a small training set is repeated"
    )
    max_seq_len: int = Field(default=1024, ge=64)
    early_fraction: float = Field(default=0.2, gt=0, lt=1)
    extra_eval_fractions: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=list,
        max_length=10,
        description="more points of training where validation accuracy is measured and recorded (not acted on): "
        "to see how well an earlier or later point would have predicted the final accuracy",
    )
    eval_samples: int = Field(default=100, ge=1)
    test_samples: int = Field(default=100, ge=1)
    eval_batch_size: int = Field(default=16, ge=1)
    check_every: int = Field(default=5, ge=1)
    seed: int = 0
    group_by_length: bool = Field(
        default=False,
        description="batch examples of similar length together (less padding to compute; the batches' order stays "
        "random): faster training, a different data order than without",
    )
    hyperparameters: dict[str, float | int | str] = Field(
        default_factory=dict, description="fixed hyperparameters for every trial; searched ones override them"
    )


class Sampler(_Model):
    type: Literal["tpe", "random", "grid", "halton"] = "tpe"
    n_startup_trials: int = Field(default=5, ge=0, description="random trials before TPE models the space")
    seed: int = 0


GRID_LIMIT = 10_000


def grid_values(param: FloatParam | IntParam | CategoricalParam) -> list[str | int | float] | None:
    """Every value a grid visits for this parameter; None when it has no finite list (a float without a step)."""
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    if isinstance(param, IntParam):
        if (param.high - param.low) // param.step >= GRID_LIMIT:
            return None
        return list(range(param.low, param.high + 1, param.step))
    if param.step is None or (param.high - param.low) / param.step >= GRID_LIMIT:
        return None
    count = int(round((param.high - param.low) / param.step, 9)) + 1
    return [round(param.low + i * param.step, 12) for i in range(count)]


class Promotion(_Model):
    """Which trials continue past the early evaluation; the others are cancelled there."""

    policy: Literal["topK", "percentile", "median", "none"] = "topK"
    k: int = Field(default=5, ge=1, description="topK: continue if among the K best early accuracies")
    percentile: float = Field(default=50.0, gt=0, lt=100, description="percentile: continue if at or above it")
    mode: Literal["online", "screen"] = Field(
        default="screen",
        description="screen: a trial checkpoints at the early step and exits (its GPU freed), and only the "
        "promoted are resumed from their checkpoints (in a cluster, outputDir must be a volume every trial pod "
        "shares); online: a trial trains on while it waits for its decision. Fixed when the study is created",
    )
    min_scored: int = Field(
        default=0,
        ge=0,
        description="early accuracies needed before any decision; 0: K+1 for topK, 3 for percentile and median",
    )
    # Trials drawn at random (``ftstudy.audit``) and trained to the end whatever their early accuracy: the unbiased
    # sample ``ftstudy.trust`` measures the early accuracy's worth on. Described for the CRD in ftstudy.crd.
    audit_fraction: float = Field(default=0.1, ge=0, le=0.5)
    # Screening in rungs (ASHA, ``ftstudy.rungs``): rungs[0] is the early point; at each rung but the last, the top
    # 1/reduction go on to the next; at the last, the policy decides. Empty: the one early point (the paper's).
    rungs: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=list, max_length=5)
    reduction: int = Field(default=3, ge=2)

    @field_validator("rungs")
    @classmethod
    def _increasing(cls, rungs: list[float]) -> list[float]:
        if any(later <= earlier for earlier, later in itertools.pairwise(rungs)):
            raise ValueError(f"promotion.rungs must be strictly increasing fractions of training, got {rungs}")
        return rungs

    @model_validator(mode="after")
    def _rungs_need_screen(self) -> Promotion:
        if self.rungs and self.mode != "screen":
            raise ValueError(
                "promotion.rungs needs promotion.mode: screen (a trial stops at each rung and waits, checkpointed); "
                "remove rungs or set mode: screen"
            )
        return self


class Budget(_Model):
    max_trials: int = Field(default=20, ge=1)
    parallelism: int = Field(default=2, ge=1)
    max_failed_trials: int = Field(default=3, ge=1)
    retries_per_trial: int = Field(default=1, ge=0)
    pending_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="in a cluster: how long a trial's pod may wait to start (the scheduler finds no node for it, or "
        "its container is still being created), or its Job to be admitted by Kueue (trialTemplate.queueName), before "
        "the trial fails with the reason, without a retry. Long by default (a day), since GPUs queue",
    )

    @model_validator(mode="after")
    def _parallelism(self) -> Budget:
        if self.parallelism > self.max_trials:
            raise ValueError(
                f"parallelism ({self.parallelism}) must not exceed maxTrials ({self.max_trials}); "
                "lower parallelism or raise maxTrials"
            )
        return self


class Baseline(_Model):
    """Fixed hyperparameters, enqueued first and always run to the end, to measure the search's gain."""

    params: dict[str, float | int | str]


class SecretKeyRef(_Model):
    """A key of a Secret in the study's namespace."""

    name: str = Field(min_length=1, description="the Secret's name, in the study's namespace")
    key: str = Field(default="url", min_length=1, description="the key whose value is the storage URL")


class StorageRef(_Model):
    """Where the study's Optuna records live in a cluster: a SQLAlchemy URL (postgresql+psycopg2://...) kept in a
    Secret, never inline, so it stays out of the manifest, the Job specs and the logs."""

    secret_ref: SecretKeyRef
    continue_from: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="the Optuna study of an earlier FineTuneStudy (its status.optunaStudy) whose trials this study "
        "continues; by default a study has records of its own, even when an earlier one had its name",
    )


def _one_gpu() -> dict[str, dict[str, str | int]]:
    return {"limits": {"nvidia.com/gpu": 1}}


class TrialTemplate(_Model):
    """The pod template fragment every trial's Job is made from, so platform teams can fit their clusters."""

    image: str = Field(default="ftstudy/trainer:0.1.0", min_length=1, description="the trainer image")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: list[str] = Field(
        default_factory=lambda: ["ftstudy-trainer"], min_length=1, description="the trainer's entrypoint"
    )
    resources: dict[str, dict[str, str | int]] = Field(
        default_factory=_one_gpu,
        description="container resources (requests, limits); nvidia.com/gpu limits how many trials fit on a node",
    )
    gpus: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="GPUs per trial, in one pod: the trainer runs data parallel on that many processes (one per "
        "GPU, NCCL), with the same global batch, data order and result as on one. Set, it is the pod's "
        "nvidia.com/gpu limit (and request, if resources gives one), whatever resources says; unset, a trial has "
        "what resources gives it (one GPU by default) and one process",
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="core/v1 Tolerations")
    volumes: list[dict[str, Any]] = Field(default_factory=list, description="core/v1 Volumes of the trial pod")
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, description="core/v1 VolumeMounts")
    env: list[dict[str, Any]] = Field(default_factory=list, description="extra core/v1 EnvVars for the trainer")
    service_account_name: str | None = None
    priority_class_name: str | None = None
    queue_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Kueue: the LocalQueue, in the study's namespace, that admits every trial's Job (created "
        "suspended, with the kueue.x-k8s.io/queue-name label) within its ClusterQueue's quotas",
    )
    workload_priority_class_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length=253,
        description="Kueue: the WorkloadPriorityClass of every trial's Job (the kueue.x-k8s.io/priority-class "
        "label), its priority in the queue and for Kueue's preemption, without a pod PriorityClass's effect on the "
        "scheduler; needs queueName, and one the platform team allows (trialPolicy.workloadPriorityClasses). "
        "Without it Kueue takes the priority from priorityClassName",
    )
    output_dir: str = Field(
        default="/artifacts",
        min_length=1,
        description="where trials write their checkpoints, adapters and results: a directory inside the container "
        "(mount a persistent volume there), or an object store URL (s3://bucket/prefix; gs://, az://), which "
        "screening needs no shared volume for; each trial writes <outputDir>/<namespace>/<study>-<uid>/trial-NNNN "
        "(status.trialsRoot: the study's name and the first 8 characters of its UID)",
    )
    artifact_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="with outputDir an object store URL: a Secret in the study's namespace whose keys become the "
        "trainer's environment, the store's credentials and endpoint as its SDK reads them (AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION...); one the platform team allows "
        "(trialPolicy.artifactSecrets). Without it the trainer uses what its environment gives (a workload identity)",
    )
    active_deadline_seconds: int | None = Field(default=None, ge=1, description="a trial running longer fails")
    fs_group: int | None = Field(
        default=None,
        ge=1,
        description="the trial pods' fsGroup: volumes that support it (a fresh PersistentVolumeClaim at outputDir) "
        "are made writable by this group, which the non-root trainer belongs to (the trainer image's is 10001)",
    )

    @field_validator("env", "volumes", "volume_mounts", "tolerations")
    @classmethod
    def _core_objects(cls, items: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        """These reach the CRD as free-form objects (core/v1 types passed on to the pod), so the API server keeps
        what Kubernetes' own types would refuse, such as ``valueFrom: {secretKeyRef: "s"}``; refused here, naming
        the field, rather than failing every pass of the study."""
        field = to_camel(info.field_name or "")
        for i, item in enumerate(items):
            where = f"{field}[{i}]"
            if field != "tolerations" and not (isinstance(item.get("name"), str) and item["name"]):
                raise ValueError(f"{where} needs a name")
            if field == "env":
                source = item.get("valueFrom")
                if source is not None and not (isinstance(source, dict)
                                               and all(isinstance(v, dict) for v in source.values())):  # fmt: skip
                    raise ValueError(f"{where}.valueFrom must name one source, an object (secretKeyRef: {{name: "
                                     "..., key: ...}, configMapKeyRef, fieldRef or resourceFieldRef)")  # fmt: skip
            elif field == "volumes":
                bad = sorted(key for key, value in item.items() if key != "name" and not isinstance(value, dict))
                if bad:
                    raise ValueError(f"{where}.{bad[0]} must be an object (a volume source)")
            elif field == "volumeMounts" and not (isinstance(item.get("mountPath"), str) and item["mountPath"]):
                raise ValueError(f"{where} needs a mountPath")
            elif field == "tolerations":
                bad = sorted(key for key in ("key", "operator", "value", "effect")
                             if key in item and not isinstance(item[key], str))  # fmt: skip
                if bad:
                    raise ValueError(f"{where}.{bad[0]} must be a string")
        return items

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep:
            return value
        if scheme.lower() not in CLUSTER_STORE_SCHEMES:
            raise ValueError(
                f"outputDir {value!r} is neither a directory nor an object store URL of a known scheme "
                f"({', '.join(CLUSTER_STORE_SCHEMES)})"
            )
        if not rest.strip("/"):
            raise ValueError(f"outputDir {value!r} names no bucket")
        return value

    @model_validator(mode="after")
    def _workload_priority(self) -> TrialTemplate:
        if self.workload_priority_class_name is not None and self.queue_name is None:
            raise ValueError(
                f"workloadPriorityClassName ({self.workload_priority_class_name}) is Kueue's, and only Jobs submitted "
                "to a LocalQueue have one: set queueName too, or drop it (priorityClassName sets a pod's priority)"
            )
        return self

    @model_validator(mode="after")
    def _artifact_secret(self) -> TrialTemplate:
        if self.artifact_secret is not None and not is_store_url(self.output_dir):
            raise ValueError(
                f"artifactSecret gives the trainer an object store's credentials, but outputDir ({self.output_dir}) "
                "is a directory: set outputDir to the store's URL (s3://bucket/prefix), or drop artifactSecret"
            )
        return self


GPU_RESOURCE = "nvidia.com/gpu"

# Object stores a trial in a cluster can write to (ftstudy.object_store has the client; file:// is a directory).
CLUSTER_STORE_SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss")


def is_store_url(output_dir: str) -> bool:
    scheme, sep, _ = output_dir.partition("://")
    return bool(sep) and scheme.lower() in CLUSTER_STORE_SCHEMES


class Cleanup(_Model):
    """What is cleaned up, and when: a finished trial's Jobs, a pruned trial's checkpoint, and what deleting the
    FineTuneStudy removes besides its Jobs (always removed, through owner references)."""

    delete_study_records: bool = Field(
        default=False, description="also delete the study's Optuna records from the database"
    )
    delete_artifacts: bool = Field(
        default=False,
        description="in a cluster: when the FineTuneStudy is deleted, also delete everything its trials wrote "
        "under trialTemplate.outputDir (status.trialsRoot: adapters, checkpoints, results), by a Job with the "
        "trials' volumes and credentials (NAME-delete-UID)",
    )
    pruned_checkpoints: bool = Field(
        default=True,
        description="promotion.mode screen: delete a trial's checkpoint once the study prunes it (its early "
        "adapter stays)",
    )
    finished_jobs_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="in a cluster: delete a trial's Jobs and pods this long after they ended, once the trial's "
        "result is recorded (at once when a ResourceQuota refuses a new Job), so that finished Jobs never pile up "
        "or fill a count/jobs.batch quota; their logs go with them",
    )


class StudySpec(_Model):
    model: str = Field(default="tiny", description="'tiny', 'smollm2', a .gguf file or a Hugging Face directory")
    dataset: DatasetRef
    attributes: list[str] = Field(default_factory=lambda: list(DEFAULT_ATTRIBUTES))
    training: Training = Field(default_factory=Training)
    search_space: dict[str, Param] = Field(default_factory=paper_search_space)
    sampler: Sampler = Field(default_factory=Sampler)
    promotion: Promotion = Field(default_factory=Promotion)
    budget: Budget = Field(default_factory=Budget)
    baseline: Baseline | None = None
    storage: StorageRef | None = Field(
        default=None, description="in a cluster: the Secret holding the Optuna storage URL (ftstudy run: --storage)"
    )
    trial_template: TrialTemplate = Field(default_factory=TrialTemplate)
    cleanup: Cleanup = Field(default_factory=Cleanup)

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, names: list[str]) -> list[str]:
        validate_attribute_names(names)  # here, not in _consistent, so that the error names spec.attributes
        return names

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        unknown = sorted(set(self.search_space) - set(SEARCHABLE))
        if unknown:
            raise ValueError(
                f"searchSpace names unknown hyperparameter(s) {', '.join(unknown)}; "
                f"the trainer supports {', '.join(SEARCHABLE)}"
            )
        if not self.search_space:
            raise ValueError("searchSpace is empty: give at least one hyperparameter to search")
        self._check_train_samples()
        self._check_rungs()
        path = self.dataset.path
        if path is not None and not path.startswith("/") and is_store_url(self.trial_template.output_dir):
            raise ValueError(
                f"dataset.path {path!r} is relative, which means on the trials' output volume, but "
                f"trialTemplate.outputDir ({self.trial_template.output_dir}) is an object store: give an absolute "
                "path inside the container (a volume of its own), or use dataset.generate"
            )
        if self.sampler.type == "grid":
            self._check_grid()
        unknown = sorted(set(self.training.hyperparameters) - set(HYPERPARAMETERS))
        if unknown:
            raise ValueError(f"training.hyperparameters names unknown hyperparameter(s) {', '.join(unknown)}")
        if self.baseline is not None:
            outside = sorted(set(self.baseline.params) - set(self.search_space))
            if outside:
                raise ValueError(
                    f"baseline.params names {', '.join(outside)}, which searchSpace does not search; a baseline "
                    "sets searched hyperparameters only (fix the others in training.hyperparameters)"
                )
        return self

    def _check_rungs(self) -> None:
        """``promotion.rungs[0]`` is the early point: a different explicit ``training.earlyFraction`` is refused
        (which one would count?), a default one becomes rungs[0]."""
        rungs = self.promotion.rungs
        if not rungs:
            return
        t = self.training
        if "early_fraction" in t.model_fields_set and t.early_fraction != rungs[0]:
            raise ValueError(
                f"training.earlyFraction ({t.early_fraction}) differs from promotion.rungs[0] ({rungs[0]}), the "
                "early point when rungs are given: remove earlyFraction or make it equal to rungs[0]"
            )
        object.__setattr__(self, "training", t.model_copy(update={"early_fraction": rungs[0]}))

    def _check_train_samples(self) -> None:
        param = self.search_space.get("train_samples")
        if param is None:
            return
        values = param.choices if isinstance(param, CategoricalParam) else [param.low]
        if isinstance(param, FloatParam) or not all(isinstance(v, int) and v >= 0 for v in values):
            raise ValueError(
                "searchSpace.train_samples must be whole numbers >= 0 (an int parameter or integer choices; "
                "0 scores the base model untrained)"
            )

    def _check_grid(self) -> None:
        size = 1
        for name, param in self.search_space.items():
            values = grid_values(param)
            if values is None:
                raise ValueError(
                    f"sampler grid needs a finite list of values: give searchSpace.{name} choices or a step"
                )
            size *= len(values)
        if self.baseline is not None:
            raise ValueError("sampler grid runs every point of the grid; put the baseline's values in it instead")
        if self.budget.max_trials > size:
            raise ValueError(
                f"the grid has {size} points but budget.maxTrials is {self.budget.max_trials}; "
                f"set maxTrials to at most {size}"
            )


class Metadata(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str | None = None


class FineTuneStudy(_Model):
    api_version: Literal["ftstudy.io/v1alpha1"]
    kind: Literal["FineTuneStudy"]
    metadata: Metadata
    spec: StudySpec
    status: dict[str, Any] | None = None


def _field_path(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        elif item in {"float", "int", "categorical"} and parts:
            continue  # the discriminated union's branch name is noise to a user
        else:
            parts.append(str(item))  # pydantic reports the YAML names (aliases), data keys unchanged
    return ".".join(parts) or "(document)"


def parse(document: Any, source: str = "spec") -> FineTuneStudy:
    """Validate a parsed YAML/JSON document; every problem is reported, each with its field path."""
    try:
        return FineTuneStudy.model_validate(document)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            message = str(problem["msg"]).removeprefix("Value error, ")
            if problem["type"] == "extra_forbidden":
                message = "unknown field (check its spelling and indentation)"
            elif problem["type"] == "missing":
                message = "required field is missing"
            lines.append(f"{_field_path(tuple(problem['loc']))}: {message}")
        raise SpecError(f"{source} is not a valid FineTuneStudy:\n  " + "\n  ".join(lines)) from None


class _Loader(yaml.SafeLoader):
    """YAML 1.2's numbers, as kubectl reads them: ``1e-4`` is a float (YAML 1.1 makes it a string), so that a file
    means the same to ``ftstudy run`` as to ``kubectl apply``."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)


def load(path: Path) -> FineTuneStudy:
    try:
        document = yaml.load(path.read_text(), Loader=_Loader)  # _Loader is a SafeLoader
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML ({error})") from None
    return parse(document, str(path))


def distribution_kwargs(param: FloatParam | IntParam | CategoricalParam) -> dict[str, Any]:
    """Plain data for the Optuna side (kept here so the spec stays the one source of truth)."""
    if isinstance(param, CategoricalParam):
        return {"type": "categorical", "choices": list(param.choices)}
    step = param.step if not isinstance(param, FloatParam) or param.step is not None else None
    if isinstance(param, IntParam) and param.log:
        step = 1
    return {"type": param.type, "low": param.low, "high": param.high, "log": param.log, "step": step}
