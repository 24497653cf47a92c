from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ftstudy.task.attributes import DEFAULT_ATTRIBUTES, normalise
from ftstudy.task.dataset import load_jsonl
from ftstudy.task.generator import (
    AVAILABILITY_CODES,
    CATEGORIES,
    COLOURS,
    ENGLISH_LOCALES,
    EUROPEAN_LOCALES,
    HOLDOUT_LOCALES,
    INDEPENDENT_CATEGORIES,
    INDEPENDENT_LAYOUTS,
    LOCALE_CODES,
    LOCALES,
    SplitSizes,
    format_price,
    generate_dataset,
    locales_named,
    write_dataset,
)
from ftstudy.task.preprocess import html_to_text
from ftstudy.task.wording import CANADIAN_ENGLISH, FRENCH, GERMAN, ITALIAN

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
    metas = [r["meta"] for split in ("train", "validation", "test") for r in rows[split]]
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


def _digest(seed: int, sizes: SplitSizes, locales: list[str] | None = None) -> str:
    splits = generate_dataset(seed, sizes) if locales is None else generate_dataset(seed, sizes, locales)
    rows = [splits[split] for split in ("train", "validation", "test")]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def test_existing_shops_keep_generating_the_same_pages() -> None:
    """Digests taken before the holdout shops and the gallery layout were added: appending them must change no
    existing study's train/validation/test pages, nor the default shops."""
    small = SplitSizes(20, 5, 5, 0)
    assert _digest(0, small, ["de", "fr", "ch"]) == "ce4ccdd4549b965dbcfa90f27bdd5eae2358cbacd223e9689621e9fc8e677ad3"
    assert _digest(0, small, ["us", "uk"]) == "7c09e32f2a7e868cf7c3ae580b4dead81d582c350a980e5832548e33f182345a"
    assert _digest(1, small) == "fbb86468ef5d91d1b7203983dbb88d1eb0c150c939e21a537f493309dd397179"
    assert LOCALE_CODES == ("us", "de", "uk", "fr", "ch")  # as before the holdout shops


def test_the_holdout_shops_are_new_to_every_default_and_to_mini() -> None:
    assert HOLDOUT_LOCALES == ("it", "ca")
    assert not set(HOLDOUT_LOCALES) & (set(LOCALE_CODES) | set(ENGLISH_LOCALES) | set(EUROPEAN_LOCALES))
    holdouts = locales_named(HOLDOUT_LOCALES)
    others = [locale for locale in LOCALES if locale.code not in HOLDOUT_LOCALES]
    for holdout in holdouts:
        assert holdout.shop not in {other.shop for other in others}
        assert holdout.language not in {other.language for other in others}
        assert format_price(1299.5, holdout) not in {format_price(1299.5, other) for other in others}


def _shops(rows: list[dict[str, object]]) -> set[str]:
    return {str(row["meta"]["locale"]) for row in rows if isinstance(row["meta"], dict)}


@pytest.mark.parametrize(
    ("locales", "independent"),
    [(["de", "fr", "ch"], {"it"}), (["us", "uk"], {"ca"}), (["us", "de"], {"it", "ca"}), (None, {"it", "ca"})],
)
def test_the_independent_test_comes_from_the_holdout_shop_of_each_language(
    locales: list[str] | None, independent: set[str]
) -> None:
    splits = generate_dataset(5, SIZES) if locales is None else generate_dataset(5, SIZES, locales)
    assert _shops(splits["independent_test"]) == independent
    trained = [row for split in ("train", "validation", "test") for row in splits[split]]
    assert not _shops(trained) & independent
    by_code = {locale.code: locale for locale in LOCALES}
    trained_html = "".join(str(row["html"]) for row in trained)
    independent_html = "".join(str(row["html"]) for row in splits["independent_test"])
    for code in _shops(trained):
        assert by_code[code].shop not in independent_html, f"{code}'s shop in the independent test"
    for code in independent:
        assert by_code[code].shop not in trained_html, f"{code}'s shop in training"


def test_named_independent_shops_are_used_and_must_not_be_trained_on(tmp_path: Path) -> None:
    splits = generate_dataset(0, SIZES, ["us", "uk"], ["it"])
    assert _shops(splits["independent_test"]) == {"it"}
    assert _shops(splits["train"]) == {"us", "uk"}
    with pytest.raises(ValueError, match=r"independent locale\(s\) de, ch are also training locales"):
        generate_dataset(0, SIZES, ["de", "fr", "ch"], ["ch", "de", "it"])
    with pytest.raises(ValueError, match="no holdout shop is left"):
        generate_dataset(0, SIZES, ["it", "de"])
    assert generate_dataset(0, SplitSizes(5, 1, 1, 0), ["it", "ca"])["independent_test"] == []
    with pytest.raises(ValueError, match="unknown locale"):
        generate_dataset(0, SIZES, ["de"], ["xx"])
    paths = write_dataset(tmp_path, 0, SplitSizes(3, 1, 1, 4), ["de"], ["ca"])
    assert _shops([json.loads(line) for line in paths["independent_test"].read_text().splitlines()]) == {"ca"}


def test_the_independent_test_states_its_gold_values_in_its_own_formats() -> None:
    rows = generate_dataset(0, SplitSizes(1, 1, 1, 90), ["us", "de"])["independent_test"]
    assert {row["meta"]["layout"] for row in rows if isinstance(row["meta"], dict)} == set(INDEPENDENT_LAYOUTS)
    assert "gallery" in INDEPENDENT_LAYOUTS, "the layout that mini's pretraining never read"
    for row in rows:
        text = html_to_text(str(row["html"]))
        gold = row["attributes"]
        meta = row["meta"]
        assert isinstance(gold, dict) and isinstance(meta, dict)
        locale = locales_named([str(meta["locale"])])[0]
        price = format_price(float(gold["price"]), locale)
        assert price in text, (meta, price)
        assert normalise("price", price) == normalise("price", gold["price"])
        assert normalise("currency", price) == gold["currency"] == {"it": "EUR", "ca": "CAD"}[locale.code]
        assert gold["availability"] in (*AVAILABILITY_CODES, None)
        for attribute in ("title", "brand", "colour", "material"):
            if gold[attribute] is not None:
                assert gold[attribute].casefold() in text.casefold(), (attribute, gold[attribute])


def test_holdout_prices_parse_and_normalise() -> None:
    italian, canadian = locales_named(["it", "ca"])
    assert format_price(1299.5, italian) == "€ 1.299,50" and format_price(9.99, italian) == "€ 9,99"
    assert format_price(1299.5, canadian) == "C$1,299.50"
    assert normalise("price", "€ 1.299,50") == "1299.5" and normalise("currency", "€ 1.299,50") == "EUR"
    assert normalise("price", "C$1,299.50") == "1299.5" and normalise("currency", "C$1,299.50") == "CAD"
    assert normalise("price", "€ 12,90") == "12.9"


def test_the_italian_shop_speaks_italian_throughout() -> None:
    materials = {material for category in CATEGORIES.values() for material in category.materials}
    assert set(ITALIAN.colours) == set(COLOURS) and set(ITALIAN.materials) == materials
    assert set(GERMAN.colours) <= set(ITALIAN.colours) and set(FRENCH.materials) <= set(ITALIAN.materials)
    assert set(ITALIAN.stock) == set(AVAILABILITY_CODES) and set(ITALIAN.labels) == set(GERMAN.labels)
    assert "Colore" in ITALIAN.labels["colour"] and "Esaurito" in ITALIAN.stock["out_of_stock"]
    rows = generate_dataset(0, SplitSizes(1, 1, 1, 40), ["de"], ["it"])["independent_test"]
    text = "\n".join(html_to_text(str(row["html"])) for row in rows)
    assert "Bottega Aurora" in text and "Disponibile" in text and "€ " in text
    assert not any(word in text for word in ("Farbe", "Auf Lager", "Couleur", "Colour", "In stock", " €\n"))


def test_the_canadian_shops_stock_phrases_are_read_as_codes() -> None:
    """English stock phrases are scored as their codes (docs/task.md); the Canadian shop's are English too."""
    for code, phrases in CANADIAN_ENGLISH.stock.items():
        for phrase in phrases:
            assert normalise("availability", phrase) == code, phrase


def test_the_cli_and_the_trainer_pass_the_independent_shops_on(tmp_path: Path) -> None:
    from ftstudy import cli
    from ftstudy.trainer.cli import _generate_data

    def shops(path: Path) -> set[str]:
        return _shops([json.loads(line) for line in path.read_text().splitlines()])

    args = ["data", "generate", "--out", str(tmp_path / "cli"), "--train", "3", "--validation", "1", "--test", "1"]
    assert cli.main([*args, "--independent-test", "4", "--locales", "us", "--independent-locales", "it"]) == 0
    assert shops(tmp_path / "cli" / "independent_test.jsonl") == {"it"}
    assert cli.main([*args, "--locales", "de,it", "--independent-locales", "it"]) == 2
    settings = {"seed": 0, "train": 3, "validation": 1, "test": 1, "independent_test": 4, "locales": ["us"]}
    _generate_data(tmp_path / "default", json.dumps(settings))
    assert shops(tmp_path / "default" / "independent_test.jsonl") == {"ca"}
    _generate_data(tmp_path / "named", json.dumps({**settings, "independent_locales": ["it"]}))
    assert shops(tmp_path / "named" / "independent_test.jsonl") == {"it"}


def _groups(rows: list[dict[str, object]]) -> tuple[set[object], set[object], set[object]]:
    metas = [row["meta"] for row in rows]
    return tuple({meta[key] for meta in metas} for key in ("locale", "layout", "category"))  # type: ignore[index,return-value]


def test_a_held_out_validation_shares_no_shop_layout_or_category_with_train_and_test() -> None:
    sizes = SplitSizes(train=150, validation=30, test=60, independent_test=30)
    plain = generate_dataset(2, sizes, ["de", "fr", "ch"])
    held = generate_dataset(2, sizes, ["de", "fr", "ch"], validation_holdout=True)
    assert _groups(held["validation"]) == ({"ch"}, {"minimal"}, {"beauty"})
    for split in ("train", "test"):
        shops, layouts, categories = _groups(held[split])
        assert shops == {"de", "fr"} and "minimal" not in layouts and "beauty" not in categories, split
        assert len(layouts) == 3 and len(categories) == 4, split
    assert "ch" in _groups(plain["validation"])[0], "off by default"
    assert held["independent_test"] == plain["independent_test"], "the independent test does not move"
    with pytest.raises(ValueError, match="at least two locales"):
        generate_dataset(2, sizes, ["de"], validation_holdout=True)


def test_the_cli_and_the_trainer_pass_the_validation_holdout_on(tmp_path: Path) -> None:
    from ftstudy import cli
    from ftstudy.trainer.cli import _generate_data

    def groups(path: Path) -> tuple[set[object], set[object], set[object]]:
        return _groups([json.loads(line) for line in path.read_text().splitlines()])

    args = ["data", "generate", "--out", str(tmp_path / "cli"), "--train", "6", "--validation", "3", "--test", "2",
            "--independent-test", "0", "--locales", "de,fr", "--validation-holdout"]  # fmt: skip
    assert cli.main(args) == 0
    assert groups(tmp_path / "cli" / "validation.jsonl") == ({"fr"}, {"minimal"}, {"beauty"})
    assert groups(tmp_path / "cli" / "train.jsonl")[0] == {"de"}
    settings = {"seed": 0, "train": 6, "validation": 3, "test": 2, "independent_test": 0, "locales": ["de", "fr"]}
    _generate_data(tmp_path / "trainer", json.dumps({**settings, "validation_holdout": True}))
    assert groups(tmp_path / "trainer" / "validation.jsonl") == ({"fr"}, {"minimal"}, {"beauty"})
    with pytest.raises(ValueError, match="validation_holdout must be true or false"):
        _generate_data(tmp_path / "bad", json.dumps({**settings, "validation_holdout": "yes"}))
