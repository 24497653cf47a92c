"""The dataset's JSONL schema, the prompt a model sees and the answer it must write.

One line per page::

    {"id": "p-000001", "html": "<html>...", "attributes": {"title": "...", "price": "19.99", "brand": null}}

``id`` and ``html`` are required strings; ``attributes`` maps attribute names to a string (or number) or ``null``
when the page does not state a value. An attribute left out counts as ``null``; an attribute that the study does not
know is an error, because it usually means a typo. ``meta`` is optional and free-form. See docs/task.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ftstudy.task.preprocess import PreprocessConfig, html_to_text

INSTRUCTION = (
    "Extract the product attributes from this product page. Answer with one JSON object with exactly the keys "
    "{keys}. Use null when the page does not state a value."
)


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Example:
    id: str
    html: str
    attributes: dict[str, str | None]
    meta: dict[str, object] = field(default_factory=dict)


def _as_gold(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(type(value).__name__)


def parse_line(line: str, attributes: Sequence[str], where: str) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: each line must be a JSON object with 'id', 'html' and 'attributes'")
    for key in ("id", "html"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise DatasetError(f"{where}: '{key}' must be a non-empty string")
    gold = row.get("attributes")
    if not isinstance(gold, dict):
        raise DatasetError(f"{where}: 'attributes' must be an object mapping attribute names to values or null")
    unknown = sorted(set(gold) - set(attributes))
    if unknown:
        raise DatasetError(
            f"{where}: unknown attribute(s) {', '.join(unknown)}; the study extracts {', '.join(attributes)}. "
            "Fix the name or add the attribute to the study's attribute list."
        )
    values: dict[str, str | None] = {}
    for name in attributes:
        try:
            values[name] = _as_gold(gold.get(name))
        except TypeError as error:
            raise DatasetError(f"{where}: attribute '{name}' must be a string, a number or null, not {error}") from None
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: 'meta' must be an object when present")
    return Example(id=row["id"], html=row["html"], attributes=values, meta=meta)


def load_jsonl(path: Path, attributes: Sequence[str], limit: int | None = None) -> list[Example]:
    """Read a split, keeping the first ``limit`` examples (0 keeps none: a zero-shot run); every line is validated,
    kept or not, so a broken file fails at the start of a run rather than hours later when a larger limit is used."""
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    examples: list[Example] = []
    ids: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            example = parse_line(line, attributes, f"{path}:{number}")
            if example.id in ids:
                raise DatasetError(f"{path}:{number}: id {example.id!r} appears twice")
            ids.add(example.id)
            if limit is None or len(examples) < limit:
                examples.append(example)
    if not ids:
        raise DatasetError(f"{path}: no examples")
    return examples


def instruction(attributes: Sequence[str]) -> str:
    return INSTRUCTION.format(keys=", ".join(attributes))


def page_text(example: Example, config: PreprocessConfig) -> str:
    return html_to_text(example.html, config)


def answer_text(gold: dict[str, str | None], attributes: Sequence[str]) -> str:
    """The target the model learns: compact JSON with the keys in the study's order."""
    return json.dumps({name: gold.get(name) for name in attributes}, ensure_ascii=False, separators=(", ", ": "))


def parse_answer(text: str, attributes: Sequence[str]) -> dict[str, str | None]:
    """Read a model's answer leniently: the first JSON object, else ``"key": value`` pairs found one by one.

    A small model often writes almost-JSON (a missing brace, a trailing comma); scoring a nearly right answer as all
    wrong would make early accuracy noisier than it is, so we recover what can be read and leave the rest null.
    """
    start = text.find("{")
    if start >= 0:
        end = text.find("}", start)
        candidate = text[start : end + 1] if end >= 0 else text[start:] + "}"
        try:
            parsed = json.loads(candidate)
            if isinstance(parsed, dict):
                return {name: _stringify(parsed.get(name)) for name in attributes}
        except json.JSONDecodeError:
            pass
    result: dict[str, str | None] = {}
    for name in attributes:
        match = re.search(rf'"{re.escape(name)}"\s*:\s*("((?:[^"\\]|\\.)*)"|null|-?[\d.]+)', text)
        if not match:
            result[name] = None
        elif match.group(2) is not None:
            result[name] = match.group(2)
        else:
            result[name] = None if match.group(1) == "null" else match.group(1)
    return result


def _stringify(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
