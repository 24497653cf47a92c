"""Extraction accuracy: exact match after normalisation, per attribute and averaged over attributes.

The study's metric is the mean over attributes (the paper's average accuracy), so a rare attribute counts as much
as a common one. A correctly predicted ``null`` (the page does not state the value) counts as a match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ftstudy.task.attributes import normalise


@dataclass(frozen=True)
class Accuracy:
    mean: float
    per_attribute: dict[str, float]
    examples: int
    # Each page's accuracy (its mean over attributes), in the examples' order: what a paired bootstrap over pages
    # resamples to put an interval on the difference between two models scored on the same pages.
    per_example: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "per_attribute": dict(self.per_attribute), "examples": self.examples}


def values_match(attribute: str, predicted: object, gold: object) -> bool:
    return normalise(attribute, predicted) == normalise(attribute, gold)


def score(
    predictions: Sequence[Mapping[str, object]],
    golds: Sequence[Mapping[str, object]],
    attributes: Sequence[str],
) -> Accuracy:
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} examples")
    if not golds:
        return Accuracy(mean=0.0, per_attribute={a: 0.0 for a in attributes}, examples=0)
    matches = [
        [values_match(attribute, p.get(attribute), g.get(attribute)) for attribute in attributes]
        for p, g in zip(predictions, golds, strict=True)
    ]
    per_attribute = {
        attribute: sum(row[column] for row in matches) / len(golds) for column, attribute in enumerate(attributes)
    }
    mean = sum(per_attribute.values()) / len(per_attribute)
    per_example = tuple(sum(row) / len(attributes) for row in matches)
    return Accuracy(mean=mean, per_attribute=per_attribute, examples=len(golds), per_example=per_example)
