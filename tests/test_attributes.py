from __future__ import annotations

import pytest

from ftstudy.task.attributes import normalise, parse_number, validate_attribute_names
from ftstudy.task.scoring import score


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("$1,299.00", 1299.0),
        ("1.299,50 €", 1299.5),
        ("CHF 12,50", 12.5),
        ("1 299,00", 1299.0),
        ("49", 49.0),
        ("€0,99", 0.99),
        ("no digits", None),
    ],
)
def test_numbers_are_read_in_us_and_european_formats(text: str, number: float | None) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize(
    ("attribute", "a", "b"),
    [
        ("price", "$1,299.00", "1299"),
        ("price", "1.299,50 €", "1299.50"),
        ("currency", "€", "EUR"),
        ("currency", "us$", "usd"),
        ("availability", "Sold out", "out_of_stock"),
        ("availability", "https://schema.org/InStock", "in_stock"),
        ("size", "500 ML", "500ml"),
        ("size", "15.6 inches", "15.6in"),
        ("size", "Size: XL", "xl"),
        ("title", "  Northwind  Pro Hoodie ", "northwind pro hoodie"),
        ("colour", "Olive Green.", "olive green"),
    ],
)
def test_equivalent_values_normalise_alike(attribute: str, a: str, b: str) -> None:
    assert normalise(attribute, a) == normalise(attribute, b)


@pytest.mark.parametrize(
    ("attribute", "a", "b"),
    [("price", "12.99", "129.9"), ("size", "M", "L"), ("currency", "EUR", "GBP"), ("title", "Pro", "Pro 2")],
)
def test_different_values_stay_different(attribute: str, a: str, b: str) -> None:
    assert normalise(attribute, a) != normalise(attribute, b)


def test_null_words_mean_not_stated() -> None:
    assert normalise("brand", "N/A") is None
    assert normalise("brand", None) is None
    assert normalise("price", 19.5) == "19.5"


def test_accuracy_is_the_mean_over_attributes_and_counts_correct_nulls() -> None:
    gold = [{"price": "10", "brand": None}, {"price": "20", "brand": "Acme"}]
    predicted = [{"price": "$10.00", "brand": None}, {"price": "21", "brand": "acme"}]
    result = score(predicted, gold, ["price", "brand"])
    assert result.per_attribute == {"price": 0.5, "brand": 1.0}
    assert result.mean == 0.75


def test_attribute_names_are_checked() -> None:
    assert validate_attribute_names(["title", "price_eur"]) == ("title", "price_eur")
    with pytest.raises(ValueError, match="not allowed"):
        validate_attribute_names(["Title"])
    with pytest.raises(ValueError, match="twice"):
        validate_attribute_names(["title", "title"])
