"""Which trials are audited: trained to the end whatever their early accuracy, so that how well the early accuracy
predicts the final one can be measured without selection bias (``ftstudy.trust``).

The trials a promotion policy trains to the end were chosen *because* their early accuracies were high; the
correlation of early and final accuracy over them says little about the trials it cut. An audited trial is chosen
by chance instead, before anything of it is known, so the audited trials are a random sample of the study's trials.

The draw is the shell's (the runner's, the operator's), not the decision core's, which has no randomness: when a new
trial is created, a hash of the study's name and the trial's number, read as a number in [0, 1), below
``promotion.auditFraction``. Deterministic, so a restarted runner or operator draws the same answer for the same
trial, and the same manifest audits the same trial numbers on one machine and in a cluster. The baseline is never
audited: it trains to the end anyway, and it is no random draw from the search space.
"""

from __future__ import annotations

import hashlib

from ftstudy.spec import StudySpec


def draw(study: str, number: int) -> float:
    """Trial ``number`` of ``study``'s draw: a number in [0, 1), the same every time, about uniform over numbers."""
    digest = hashlib.sha256(f"{study}/{number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def audited(study: str, number: int, fraction: float, baseline: bool = False) -> bool:
    """Is this trial audited? (Never the baseline.)"""
    return not baseline and fraction > 0 and draw(study, number) < fraction


def fraction_of(spec: StudySpec) -> float:
    """The share of searched trials a new study audits. With policy ``none`` every trial trains to the end whatever
    its early accuracy, so every one is a fair sample, at no extra cost: all are counted as audited."""
    return 1.0 if spec.promotion.policy == "none" else spec.promotion.audit_fraction


def expected(fraction: float, trials: int, baseline: bool) -> float:
    """How many audited trials a study of ``trials`` (the baseline among them, if any) should have in the end."""
    return fraction * max(0, trials - (1 if baseline else 0))
