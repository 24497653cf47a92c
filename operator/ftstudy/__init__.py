"""ftstudy: find the best LoRA fine-tuning hyperparameters while scoring each trial at 20% of its training.

The package is split by responsibility: ``ftstudy.task`` (the attribute-extraction task: pages, data, scoring),
``ftstudy.trainer`` (one trial's fine-tuning run), and the study engine and its shells in later modules.
"""

__version__ = "0.1.0"
