from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES, normalise
from ftstudy.task.dataset import load_jsonl
from ftstudy.task.generator import (
    INDEPENDENT_CATEGORIES,
    INDEPENDENT_LAYOUTS,
    SplitSizes,
    generate_dataset,
    write_dataset,
)
from ftstudy.task.preprocess import html_to_text

SIZES = SplitSizes(train=120, validation=30, test=30, independent_test=30)


def test_same_seed_same_pages_other_seed_other_pages() -> None:
    assert generate_dataset(3, SIZES) == generate_dataset(3, SIZES)
    assert generate_dataset(3, SIZES)["train"] != generate_dataset(4, SIZES)["train"]


def test_splits_are_disjoint_and_independent_test_is_out_of_distribution() -> None:
    splits = generate_dataset(0, SIZES)
    pages = [row["html"] for rows in splits.values() for row in rows]
    ids = [row["id"] for rows in splits.values() for row in rows]
    assert len(set(pages)) == len(pages) and len(set(ids)) == len(ids)
    for split in ("train", "validation", "test"):
        for row in splits[split]:
            meta = row["meta"]
            assert isinstance(meta, dict)
            assert meta["category"] not in INDEPENDENT_CATEGORIES and meta["layout"] not in INDEPENDENT_LAYOUTS
    for row in splits["independent_test"]:
        meta = row["meta"]
        assert isinstance(meta, dict)
        assert meta["category"] in INDEPENDENT_CATEGORIES and meta["layout"] in INDEPENDENT_LAYOUTS


def test_pages_have_the_promised_variety() -> None:
    rows = generate_dataset(0, SIZES)["train"]
    metas = [r["meta"] for r in rows]
    assert len({m["layout"] for m in metas if isinstance(m, dict)}) == 4
    assert {True, False} == {m["json_ld"] for m in metas if isinstance(m, dict)}
    golds = [r["attributes"] for r in rows if isinstance(r["attributes"], dict)]
    for attribute in ("brand", "colour", "material", "size", "availability"):
        assert any(g[attribute] is None for g in golds), f"{attribute} is never missing"
    assert all(g["title"] and g["price"] and g["currency"] for g in golds)


def test_gold_values_are_stated_on_the_page() -> None:
    for row in generate_dataset(0, SIZES)["train"][:60]:
        text = html_to_text(str(row["html"])).casefold()
        gold = row["attributes"]
        assert isinstance(gold, dict)
        assert gold["title"].casefold() in text
        for attribute in ("brand", "colour", "material"):
            if gold[attribute] is not None:
                assert gold[attribute].casefold() in text, (attribute, gold[attribute])
        assert normalise("price", gold["price"]) is not None


def test_written_files_follow_the_documented_schema(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path, 0, SplitSizes(5, 2, 2, 2))
    assert sorted(p.name for p in paths.values()) == [
        "independent_test.jsonl",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    row = json.loads(paths["train"].read_text().splitlines()[0])
    assert set(row) == {"id", "html", "attributes", "meta"}
    assert set(row["attributes"]) == set(DEFAULT_ATTRIBUTES)
    assert len(load_jsonl(paths["train"], DEFAULT_ATTRIBUTES)) == 5


def test_locales_choose_the_shops_and_their_language() -> None:
    rows = generate_dataset(0, SIZES, ["de", "fr"])
    metas = [r["meta"] for split in rows.values() for r in split]
    assert {m["locale"] for m in metas if isinstance(m, dict)} == {"de", "fr"}
    for row in rows["train"][:40]:
        text = html_to_text(str(row["html"]))
        gold = row["attributes"]
        assert isinstance(gold, dict) and gold["currency"] == "EUR"
        assert not any(label in text for label in ("Colour |", "Brand |", "Colour:", "Brand:")), "no English labels"
        for attribute in ("colour", "material"):
            if gold[attribute] is not None:
                assert gold[attribute].casefold() in text.casefold(), (attribute, gold[attribute])
    english = generate_dataset(0, SIZES, ["us", "uk"])["train"]
    assert {r["attributes"]["currency"] for r in english if isinstance(r["attributes"], dict)} == {"USD", "GBP"}


def test_the_same_locales_in_another_order_give_the_same_pages() -> None:
    assert generate_dataset(2, SIZES, ["fr", "de"]) == generate_dataset(2, SIZES, ["de", "fr"])
    with pytest.raises(ValueError, match="unknown locale"):
        generate_dataset(2, SIZES, ["xx"])
