"""One trial's fine-tuning run: load a base model offline, LoRA-train it, score it at 20% and at the end.

Imports torch and transformers; install the ``trainer`` extra. The entry point is ``ftstudy-trainer``
(``ftstudy.trainer.cli``), the same command the trainer image runs.
"""
