from __future__ import annotations

from pathlib import Path

import pytest

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES
from ftstudy.task.dataset import DatasetError, answer_text, load_jsonl, parse_answer

ATTRS = ("title", "price")


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"train.jsonl:2: not valid JSON"),
        ('["a"]', r"train.jsonl:2: each line must be a JSON object"),
        ('{"id": "b", "attributes": {}}', r"train.jsonl:2: 'html' must be a non-empty string"),
        (
            '{"id": "b", "html": "<p>", "attributes": {"titel": "x"}}',
            r"train.jsonl:2: unknown attribute\(s\) titel; the study extracts title, price",
        ),
        ('{"id": "b", "html": "<p>", "attributes": {"price": [1]}}', r"must be a string, a number or null"),
        ('{"id": "a", "html": "<p>", "attributes": {}}', r"id 'a' appears twice"),
    ],
)
def test_malformed_lines_are_named_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, '{"id": "a", "html": "<p>x</p>", "attributes": {"title": "x"}}', line)
    with pytest.raises(DatasetError, match=message):
        load_jsonl(path, ATTRS)


def test_missing_attributes_are_null_and_numbers_become_strings(tmp_path: Path) -> None:
    path = write(tmp_path, '{"id": "a", "html": "<p>x</p>", "attributes": {"price": 9.5}}')
    [example] = load_jsonl(path, ATTRS)
    assert example.attributes == {"title": None, "price": "9.5"}


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_jsonl(tmp_path / "nope.jsonl", ATTRS)
    with pytest.raises(DatasetError, match="no examples"):
        load_jsonl(write(tmp_path, ""), ATTRS)


def test_answers_round_trip_and_sloppy_answers_are_recovered() -> None:
    gold: dict[str, str | None] = {a: None for a in DEFAULT_ATTRIBUTES}
    gold.update(title='Acme "Pro" Kettle', price="39.90")
    assert parse_answer(answer_text(gold, DEFAULT_ATTRIBUTES), DEFAULT_ATTRIBUTES) == gold
    sloppy = 'Sure! {"title": "Acme", "price": 39.9, "brand": null'
    assert parse_answer(sloppy, ATTRS) == {"title": "Acme", "price": "39.9"}
    broken = '"title": "Acme", "price": "12" ]]'
    assert parse_answer(broken, ATTRS) == {"title": "Acme", "price": "12"}
    assert parse_answer("no idea", ATTRS) == {"title": None, "price": None}
