"""Raw product-page HTML to the compact text a model reads.

Raw HTML wastes most of a sequence on markup, scripts and styles. We keep what carries meaning for extraction:
headings, paragraphs, list items, table rows (cells joined with `` | ``), the page title, product ``<meta>`` tags
and, by default, JSON-LD blocks (structured data that shops publish for search engines). Options are documented in
docs/task.md; the trainer fits the result to the sequence length by truncating the page, never the answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

_BLOCK_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "header",
    "main",
    "aside",
    "ul",
    "ol",
    "table",
    "tr",
    "br",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "dl",
    "dt",
    "dd",
    "form",
    "figure",
    "figcaption",
    "blockquote",
    "title",
    "button",
}
_ALWAYS_DROPPED = {"script", "style", "noscript", "svg", "iframe", "template", "head"}
_META_KEYS = (
    "og:title",
    "og:price:amount",
    "og:price:currency",
    "product:price:amount",
    "product:price:currency",
    "product:brand",
    "product:availability",
    "description",
)


@dataclass(frozen=True)
class PreprocessConfig:
    """How much of a page survives; the defaults suit the bundled generator and most shops."""

    keep_json_ld: bool = True
    keep_meta: bool = True
    drop_tags: tuple[str, ...] = ("nav", "footer")
    max_chars: int = 8000
    extra_dropped: frozenset[str] = field(default_factory=frozenset)


class _TextExtractor(HTMLParser):
    def __init__(self, config: PreprocessConfig) -> None:
        super().__init__(convert_charrefs=True)
        self.config = config
        self.dropped = _ALWAYS_DROPPED | set(config.drop_tags) | set(config.extra_dropped)
        self.skip_depth = 0
        self.in_json_ld = False
        self.json_ld: list[str] = []
        self.meta: list[str] = []
        self.title: list[str] = []
        self.in_title = False
        self.lines: list[str] = []
        self.current: list[str] = []
        self.prefix = ""
        self.cells: list[str] | None = None

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self.current)).strip()
        self.current = []
        if text:
            self.lines.append(self.prefix + text)
        self.prefix = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and (attributes.get("type") or "").lower() == "application/ld+json":
            self.in_json_ld = self.config.keep_json_ld
            self.skip_depth += 1
            return
        if tag == "title":
            self.in_title = True
            return
        if tag == "meta" and self.config.keep_meta:
            key = attributes.get("property") or attributes.get("name") or attributes.get("itemprop") or ""
            content = attributes.get("content")
            if content and (key in _META_KEYS or attributes.get("itemprop")):
                self.meta.append(f"{key}: {content}")
            return
        if tag in self.dropped:
            self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if tag in _BLOCK_TAGS:
            self._flush()
        if tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self.prefix = "#" * int(tag[1]) + " "
        elif tag in {"li", "dt"}:
            self.prefix = "- "
        elif tag == "tr":
            self.cells = []
        elif tag in {"td", "th"} and self.cells is not None:
            self.current = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self.in_json_ld:
            self.in_json_ld = False
            self.skip_depth -= 1
            return
        if tag == "title":
            self.in_title = False
            return
        if tag in self.dropped or (tag == "script" and self.skip_depth):
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag in {"td", "th"} and self.cells is not None:
            self.cells.append(re.sub(r"\s+", " ", "".join(self.current)).strip())
            self.current = []
        elif tag == "tr" and self.cells is not None:
            row = " | ".join(cell for cell in self.cells if cell)
            self.cells = None
            if row:
                self.lines.append(row)
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.in_json_ld:
            self.json_ld.append(data)
        elif self.in_title:
            self.title.append(data)
        elif not self.skip_depth:
            self.current.append(data)


def _compact_json_ld(blob: str) -> str | None:
    try:
        return json.dumps(json.loads(blob), separators=(",", ":"), ensure_ascii=False)
    except (json.JSONDecodeError, ValueError):
        return None


def html_to_text(html: str, config: PreprocessConfig | None = None) -> str:
    """The model's view of a page: title, meta, JSON-LD, then the page text in reading order."""
    config = config or PreprocessConfig()
    parser = _TextExtractor(config)
    parser.feed(html)
    parser.close()
    parser._flush()
    parts: list[str] = []
    title = re.sub(r"\s+", " ", "".join(parser.title)).strip()
    if title:
        parts.append(f"Page title: {title}")
    parts.extend(f"Meta {line}" for line in parser.meta)
    # JSON-LD goes before the body text: it is dense and reliable, and truncation cuts from the end.
    for blob in parser.json_ld:
        compact = _compact_json_ld(blob)
        if compact:
            parts.append(f"JSON-LD: {compact}")
    parts.extend(parser.lines)
    text = "\n".join(parts)
    return text[: config.max_chars]
