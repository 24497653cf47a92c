from __future__ import annotations

from ftstudy.task.preprocess import PreprocessConfig, html_to_text

PAGE = """<html><head><title>Acme Kettle | Shop</title><style>.x{color:red}</style>
<script>var price = 999;</script>
<script type="application/ld+json">{"@type": "Product", "name": "Acme Kettle", "offers": {"price": "39.90"}}</script>
<meta property="og:title" content="Acme Kettle"></head>
<body><nav><a>Home</a><a>Sale</a></nav><h1>Acme Kettle</h1><p>Only <b>39,90 €</b></p>
<table><tr><th>Material</th><td>steel</td></tr></table><ul><li>Boils fast</li></ul>
<footer>Imprint</footer></body></html>"""


def test_scripts_styles_and_boilerplate_are_dropped() -> None:
    text = html_to_text(PAGE)
    assert "999" not in text and "color:red" not in text
    assert "Sale" not in text and "Imprint" not in text


def test_structure_that_carries_meaning_is_kept() -> None:
    lines = html_to_text(PAGE).splitlines()
    assert "Page title: Acme Kettle | Shop" in lines
    assert "Meta og:title: Acme Kettle" in lines
    assert "# Acme Kettle" in lines
    assert "Only 39,90 €" in lines
    assert "Material | steel" in lines
    assert "- Boils fast" in lines
    assert any(line.startswith("JSON-LD: ") and '"price":"39.90"' in line for line in lines)


def test_options_change_what_survives() -> None:
    text = html_to_text(PAGE, PreprocessConfig(keep_json_ld=False, keep_meta=False, drop_tags=()))
    assert "JSON-LD" not in text and "Meta " not in text
    assert "Sale" in text and "Imprint" in text
    assert len(html_to_text(PAGE, PreprocessConfig(max_chars=20))) == 20
