"""A seeded generator of realistic e-commerce product pages with their gold attribute values.

The paper's pages came from real shops; we cannot ship those, so we generate pages that carry the same
difficulties: several shop layouts and product categories, spec tables and lists, marketing prose, navigation,
reviews, related products with their own prices, JSON-LD on some pages only, distractor numbers and units (old
prices, shipping costs, ratings, instalments) and attributes the page simply does not state.

The *independent* test set is independent in every way the generator can vary, as the paper's independent test
set (other shops) was: its pages come from other shops than the training pages (``independent_locales``; by
default the holdout shops ``it`` and ``ca``, which no default training set and not the demonstration model's
pretraining use), in layouts and categories that never occur in train/validation/test; one of its layouts
(``gallery``) is also unknown to that pretraining. What it shares with training is the attribute schema and the
general style of the HTML building blocks (spec rows, prose, reviews, distractor prices).

Everything is a pure function of the seed and the shops. New shops, layouts and categories are only ever appended,
so that an existing choice of shops keeps generating the same pages for the same seed.
"""

from __future__ import annotations

import hashlib
import html
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ftstudy.task.wording import WORDINGS, Wording

Gold = dict[str, str | None]


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]
    brands: tuple[str, ...]
    materials: tuple[str, ...]
    sizes: Callable[[random.Random], str]
    price_range: tuple[float, float]


def _choice_sizes(*options: str) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(options)


CATEGORIES: dict[str, Category] = {
    "apparel": Category(
        "apparel",
        ("T-Shirt", "Hoodie", "Rain Jacket", "Chinos", "Merino Sweater", "Denim Shirt", "Parka"),
        ("Northwind", "Alder & Co", "Urbanite", "Kestrel", "Fjordline", "Maple Thread"),
        ("cotton", "organic cotton", "merino wool", "polyester", "linen", "recycled nylon"),
        _choice_sizes("XS", "S", "M", "L", "XL", "XXL"),
        (12, 240),
    ),
    "footwear": Category(
        "footwear",
        ("Running Shoe", "Leather Boot", "Trail Sneaker", "Sandal", "Loafer", "Hiking Boot"),
        ("Stridewell", "Peak Motion", "Corvid", "Sole Theory", "Granite"),
        ("leather", "suede", "mesh", "canvas", "synthetic", "rubber"),
        lambda rng: rng.choice(["EU ", "US ", "UK "]) + str(rng.randint(36, 46)),
        (29, 320),
    ),
    "electronics": Category(
        "electronics",
        ("Laptop", "Bluetooth Speaker", "Monitor", "Wireless Headphones", "Tablet", "Smartwatch"),
        ("Voltix", "Lumen", "Arcadia", "Nexon", "Quanta", "Heliograph"),
        ("aluminium", "plastic", "glass", "stainless steel", "carbon fibre"),
        lambda rng: rng.choice(["13.3", "14", "15.6", "17.3", "24", "27", "32"]) + " in",
        (39, 2900),
    ),
    "kitchen": Category(
        "kitchen",
        ("Frying Pan", "Chef's Knife", "Saucepan", "Cutting Board", "Dutch Oven", "Kettle"),
        ("Cucina Forte", "Hearthstone", "Brightwok", "Pellmann", "Olive & Oak"),
        ("stainless steel", "cast iron", "ceramic", "bamboo", "copper", "non-stick aluminium"),
        lambda rng: f"{rng.choice([16, 20, 24, 26, 28, 30])} cm",
        (9, 420),
    ),
    "beauty": Category(
        "beauty",
        ("Face Serum", "Moisturiser", "Shampoo", "Eau de Parfum", "Lip Balm", "Sunscreen SPF 50"),
        ("Lumiere", "Botanica Pura", "Dewdrop", "Saint Clair", "Mirelle"),
        ("glass bottle", "aluminium tube", "recycled plastic"),
        lambda rng: f"{rng.choice([15, 30, 50, 100, 200, 250])} ml",
        (6, 180),
    ),
    # Categories below appear only in the independent test set.
    "garden": Category(
        "garden",
        ("Garden Hose", "Pruning Shears", "Planter", "Lawn Sprinkler", "Wheelbarrow"),
        ("Greenfield", "Thornbury", "Rootwise", "Verdant"),
        ("galvanised steel", "terracotta", "polypropylene", "ash wood"),
        lambda rng: rng.choice([f"{rng.choice([15, 25, 30, 50])} m", f"{rng.choice([30, 40, 60])} cm"]),
        (8, 260),
    ),
    "toys": Category(
        "toys",
        ("Building Blocks Set", "Plush Bear", "Puzzle 1000 Pieces", "Wooden Train", "Kite"),
        ("Tinker Town", "Bramble Toys", "Joyforge", "Little Orbit"),
        ("beech wood", "ABS plastic", "plush polyester", "cardboard"),
        lambda rng: rng.choice(["small", "medium", "large", f"{rng.choice([20, 35, 50])} cm"]),
        (5, 150),
    ),
}
IN_DISTRIBUTION_CATEGORIES = ("apparel", "footwear", "electronics", "kitchen", "beauty")
INDEPENDENT_CATEGORIES = ("garden", "toys")

COLOURS = (
    "black",
    "white",
    "navy",
    "olive green",
    "charcoal grey",
    "burgundy",
    "sand beige",
    "sky blue",
    "red",
    "silver",
    "forest green",
    "mustard yellow",
)
ADJECTIVES = (
    "Classic",
    "Pro",
    "Essential",
    "Ultralight",
    "Signature",
    "Everyday",
    "Premium",
    "Compact",
    "Studio",
)
AVAILABILITY_CODES = ("in_stock", "out_of_stock", "preorder", "limited_stock")
SCHEMA_AVAILABILITY = {
    "in_stock": "InStock",
    "out_of_stock": "OutOfStock",
    "preorder": "PreOrder",
    "limited_stock": "LimitedAvailability",
}


@dataclass(frozen=True)
class Locale:
    code: str
    currency: str
    symbol: str
    european: bool  # decimal comma and dot thousands (1.299,50), the symbol apart from the number
    shop: str
    language: str  # the shop's language tag: its labels, stock phrases and colour names (ftstudy.task.wording)
    symbol_first: bool = False  # European numbers only: the symbol before the number (CHF 1.299,50, € 1.299,50)

    @property
    def words(self) -> Wording:
        return WORDINGS[self.language]

    @property
    def english(self) -> bool:
        return self.language.split("-")[0] == "en"


# Appended only: the order of this tuple is the canonical order that a set of shops is drawn in, so inserting a
# shop would change the pages of every existing choice of shops that follows it.
LOCALES = (
    Locale("us", "USD", "$", False, "Cartwheel Market", "en"),
    Locale("de", "EUR", "€", True, "Kaufhaus Nord", "de"),
    Locale("uk", "GBP", "£", False, "Highstreet Goods", "en"),
    Locale("fr", "EUR", "€", True, "Le Comptoir", "fr"),
    Locale("ch", "CHF", "CHF", True, "Alpenladen", "de", symbol_first=True),
    # The holdout shops (HOLDOUT_LOCALES): the independent test's. Each writes prices in a way no other shop does.
    Locale("it", "EUR", "€", True, "Bottega Aurora", "it", symbol_first=True),
    Locale("ca", "CAD", "C$", False, "Lakeshore Supply Co.", "en-CA"),
)
ALL_LOCALE_CODES = tuple(locale.code for locale in LOCALES)
HOLDOUT_LOCALES = ("it", "ca")  # kept out of every default training set and of mini's pretraining
# The default training shops (the CLI's, a study's and the trainer's): every shop but the holdouts, as before they
# existed, so a default study generates the same data as before.
LOCALE_CODES = tuple(code for code in ALL_LOCALE_CODES if code not in HOLDOUT_LOCALES)
ENGLISH_LOCALES = ("us", "uk")  # the demonstration model's pretraining shops (the "source" distribution)
EUROPEAN_LOCALES = ("de", "fr", "ch")  # the shops its example study fine-tunes for (the "target")


def locales_named(codes: Sequence[str]) -> tuple[Locale, ...]:
    """The shops to generate pages for, in the canonical order (so the same set always gives the same pages)."""
    unknown = sorted(set(codes) - set(ALL_LOCALE_CODES))
    if unknown or not codes:
        given = ", ".join(unknown) or "(none given)"
        raise ValueError(f"unknown locale(s) {given}; choose from {', '.join(ALL_LOCALE_CODES)}")
    return tuple(locale for locale in LOCALES if locale.code in set(codes))


TRAINING_SHOPS = locales_named(LOCALE_CODES)  # the default shops of a stream of pages


def independent_locales_for(
    locales: Sequence[str], independent_locales: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The shops of the independent test, in canonical order: ``independent_locales`` if given, else the holdout
    shop of each language family trained on: ``it`` if any training shop is not English, ``ca`` if any is.

    An independent test from the training shops would share their names, wording, currencies and price formats,
    and so measure less than the paper's independent test; hence any overlap is refused, not silently dropped.
    """
    training = locales_named(locales)
    if independent_locales is None:
        wanted = (["it"] if any(not shop.english for shop in training) else []) + (
            ["ca"] if any(shop.english for shop in training) else []
        )
        left = [code for code in wanted if code not in {shop.code for shop in training}]
        if not left:
            raise ValueError(
                f"no holdout shop is left for the independent test: the training locales include {', '.join(wanted)}; "
                "name the independent test's locales (independent_locales) or generate no independent test"
            )
        return tuple(shop.code for shop in locales_named(left))
    chosen = locales_named(independent_locales)
    overlap = [shop.code for shop in chosen if shop in training]
    if overlap:
        raise ValueError(
            f"independent locale(s) {', '.join(overlap)} are also training locales; the independent test must come "
            "from other shops"
        )
    return tuple(shop.code for shop in chosen)


def format_price(amount: float, locale: Locale) -> str:
    """How a shop in this locale writes a price, thousands separators included."""
    whole, cents = f"{amount:,.2f}".split(".")
    if locale.european:
        number = whole.replace(",", ".") + "," + cents
        return f"{locale.symbol} {number}" if locale.symbol_first else f"{number} {locale.symbol}"
    return f"{locale.symbol}{whole}.{cents}"


@dataclass
class Product:
    category: Category
    locale: Locale
    title: str
    brand: str | None
    price: float
    colour: str | None
    material: str | None
    size: str | None
    availability: str | None
    rating: float
    reviews: int
    sku: str

    def gold(self) -> Gold:
        return {
            "title": self.title,
            "price": f"{self.price:.2f}",
            "currency": self.locale.currency,
            "brand": self.brand,
            "colour": self.colour,
            "material": self.material,
            "size": self.size,
            "availability": self.availability,
        }


def _product(rng: random.Random, category: Category, locales: tuple[Locale, ...]) -> Product:
    brand = rng.choice(category.brands)
    noun = rng.choice(category.nouns)
    title = f"{brand} {rng.choice(ADJECTIVES)} {noun}"
    if rng.random() < 0.3:
        title += f" {rng.choice(['2', 'II', 'X', 'Plus', 'Max', '300'])}"
    low, high = category.price_range
    price = round(rng.uniform(low, high), 2)
    if rng.random() < 0.5:
        price = float(int(price)) + rng.choice([0.0, 0.49, 0.95, 0.99])

    def maybe(value: str, p_missing: float) -> str | None:
        return None if rng.random() < p_missing else value

    locale = rng.choice(locales)
    words = locale.words
    colour = rng.choice(COLOURS)
    material = rng.choice(category.materials)
    return Product(
        category=category,
        locale=locale,
        title=title,
        brand=maybe(brand, 0.12),
        price=price,
        colour=maybe(words.colours.get(colour, colour), 0.2),
        material=maybe(words.materials.get(material, material), 0.25),
        size=maybe(category.sizes(rng), 0.2),
        availability=maybe(rng.choice(AVAILABILITY_CODES), 0.15),
        rating=round(rng.uniform(2.5, 5.0), 1),
        reviews=rng.randint(0, 4800),
        sku=f"{rng.choice('ABCDEFGHJK')}{rng.randint(10000, 99999)}",
    )


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _json_ld(p: Product) -> str:
    data: dict[str, object] = {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": p.title,
        "sku": p.sku,
    }
    if p.brand:
        data["brand"] = {"@type": "Brand", "name": p.brand}
    if p.colour:
        data["color"] = p.colour
    if p.material:
        data["material"] = p.material
    if p.size:
        data["size"] = p.size
    offer: dict[str, object] = {
        "@type": "Offer",
        "price": f"{p.price:.2f}",
        "priceCurrency": p.locale.currency,
    }
    if p.availability:
        offer["availability"] = "https://schema.org/" + SCHEMA_AVAILABILITY[p.availability]
    data["offers"] = offer
    data["aggregateRating"] = {"@type": "AggregateRating", "ratingValue": p.rating, "reviewCount": p.reviews}
    return f'<script type="application/ld+json">{json.dumps(data, ensure_ascii=False)}</script>'


def _nav(rng: random.Random, p: Product) -> str:
    items = [*p.locale.words.nav, p.category.name.title()]
    rng.shuffle(items)
    return "<nav><ul>" + "".join(f'<li><a href="/{_esc(i.lower())}">{_esc(i)}</a></li>' for i in items) + "</ul></nav>"


def _specs(p: Product, rng: random.Random) -> list[tuple[str, str]]:
    words = p.locale.words
    rows: list[tuple[str, str]] = [("SKU", p.sku)]
    labels = {key: rng.choice(words.labels[key]) for key in ("brand", "colour", "material", "size")}
    for key in ("brand", "colour", "material", "size"):
        value = getattr(p, key)
        if value is not None:
            rows.append((labels[key], value))
    rows.append((words.weight, f"{rng.randint(80, 4000)} g"))
    rows.append((words.warranty, words.years.format(n=rng.choice([1, 2, 3, 5]))))
    rng.shuffle(rows)
    return rows


def _prose(p: Product, rng: random.Random) -> str:
    words = p.locale.words
    values = {"title": p.title, "years": rng.randint(2, 10), "count": rng.randint(2, 90), "hour": rng.randint(12, 18)}
    sentences = [template.format(**values) for template in words.prose]
    if p.material and rng.random() < 0.6:
        sentences.append(words.prose_material.format(material=p.material))
    if p.colour and rng.random() < 0.5:
        sentences.append(words.prose_colour.format(colour=p.colour))
    rng.shuffle(sentences)
    return "<p>" + " ".join(_esc(s) for s in sentences) + "</p>"


def _distractor_prices(p: Product, rng: random.Random) -> list[str]:
    old = format_price(round(p.price * rng.uniform(1.1, 1.6), 2), p.locale)
    shipping = format_price(rng.choice([3.99, 4.95, 5.5, 9.99]), p.locale)
    instalment = format_price(round(p.price / rng.choice([3, 4, 6, 12]), 2), p.locale)
    words = p.locale.words
    shipping_text = words.shipping.format(cost=shipping, free=format_price(50, p.locale))
    return [
        f'<span class="was">{_esc(words.was)} <s>{_esc(old)}</s></span>' if rng.random() < 0.5 else "",
        f'<p class="shipping">{_esc(shipping_text)}</p>',
        f"<p>{_esc(words.instalments.format(n=rng.choice([3, 4, 6, 12]), amount=instalment))}</p>"
        if rng.random() < 0.4
        else "",
    ]


def _reviews(p: Product, rng: random.Random) -> str:
    words = p.locale.words
    items = "".join(
        f"<li><b>{rng.randint(1, 5)}/5</b> {_esc(rng.choice(words.quotes))} "
        f"<small>{_esc(words.days_ago.format(days=rng.randint(1, 28)))}</small></li>"
        for _ in range(rng.randint(1, 4))
    )
    rating = words.rating.format(rating=p.rating, count=p.reviews)
    return f'<section class="reviews"><h2>{_esc(words.reviews)}</h2><p>{_esc(rating)}</p><ul>{items}</ul></section>'


def _related(p: Product, rng: random.Random) -> str:
    items = []
    for _ in range(rng.randint(2, 4)):
        other = _product(rng, p.category, (p.locale,))
        items.append(
            f'<li><a href="/p/{_esc(other.sku)}">{_esc(other.title)}</a> '
            f"<span>{_esc(format_price(other.price, p.locale))}</span></li>"
        )
    heading = _esc(rng.choice(p.locale.words.related))
    return f'<aside class="related"><h2>{heading}</h2><ul>{"".join(items)}</ul></aside>'


def _availability_html(p: Product, rng: random.Random) -> str:
    if p.availability is None:
        return ""
    return f'<p class="stock">{_esc(rng.choice(p.locale.words.stock[p.availability]))}</p>'


def _head(p: Product, rng: random.Random, with_json_ld: bool) -> str:
    parts = [
        f"<title>{_esc(p.title)} | {_esc(p.locale.shop)}</title>",
        '<meta charset="utf-8"><style>body{font-family:sans-serif}.was{color:#999}</style>',
        f"<script>window.dataLayer=[{{'sku':'{p.sku}','v':{rng.randint(1, 9)}}}];</script>",
    ]
    if rng.random() < 0.4:
        parts.append(f'<meta property="og:title" content="{_esc(p.title)}">')
    if with_json_ld:
        parts.append(_json_ld(p))
    return "<head>" + "".join(parts) + "</head>"


def _layout_storefront(p: Product, rng: random.Random) -> str:
    words = p.locale.words
    table = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _specs(p, rng))
    return (
        f'{_nav(rng, p)}<main><div class="crumbs">{_esc(words.nav[0])} / {_esc(p.category.name.title())}</div>'
        f"<h1>{_esc(p.title)}</h1>"
        f'<div class="price"><span class="now">{_esc(format_price(p.price, p.locale))}</span>'
        f"{''.join(_distractor_prices(p, rng))}</div>{_availability_html(p, rng)}"
        f"<button>{_esc(words.add_to_basket)}</button>{_prose(p, rng)}<h2>{_esc(words.specifications)}</h2>"
        f"<table>{table}</table>"
        f"{_reviews(p, rng)}</main>{_related(p, rng)}<footer>© {_esc(p.locale.shop)} 2024</footer>"
    )


def _layout_boutique(p: Product, rng: random.Random) -> str:
    words = p.locale.words
    specs = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in _specs(p, rng))
    brand = f'<p class="brand">{_esc(p.brand)}</p>' if p.brand else ""
    return (
        f"{_nav(rng, p)}<article>{brand}<h1>{_esc(p.title)}</h1>{_prose(p, rng)}"
        f"<dl>{specs}</dl><div>{_esc(format_price(p.price, p.locale))} {_esc(words.incl_vat)}</div>"
        f"{''.join(_distractor_prices(p, rng))}{_availability_html(p, rng)}</article>"
        f"{_related(p, rng)}{_reviews(p, rng)}<footer>{_esc(words.footer)}</footer>"
    )


def _layout_marketplace(p: Product, rng: random.Random) -> str:
    words = p.locale.words
    sellers = "".join(
        f"<li>{_esc(words.seller)} {rng.choice(['A', 'B', 'C', 'D'])}{rng.randint(1, 99)}: "
        f"{_esc(format_price(round(p.price * rng.uniform(1.02, 1.3), 2), p.locale))}</li>"
        for _ in range(rng.randint(1, 3))
    )
    bullets = "".join(f"<li>{_esc(k)}: {_esc(v)}</li>" for k, v in _specs(p, rng))
    return (
        f'{_nav(rng, p)}<div id="app"><h1>{_esc(p.title)}</h1>'
        f"<p>{_esc(words.stars.format(rating=p.rating, count=p.reviews))}</p>"
        f'<div class="buybox"><b>{_esc(words.price)} {_esc(format_price(p.price, p.locale))}</b>'
        f"{_availability_html(p, rng)}{''.join(_distractor_prices(p, rng))}</div>"
        f"<h2>{_esc(words.about)}</h2><ul>{bullets}</ul><h3>{_esc(words.other_sellers)}</h3><ul>{sellers}</ul>"
        f"{_prose(p, rng)}{_related(p, rng)}{_reviews(p, rng)}</div>"
    )


def _layout_minimal(p: Product, rng: random.Random) -> str:
    words = p.locale.words
    facts = []
    if p.brand:
        facts.append(words.by.format(brand=p.brand))
    if p.size:
        facts.append(words.size.format(size=p.size))
    if p.colour:
        facts.append(words.in_colour.format(colour=p.colour))
    if p.material:
        facts.append(words.made_of.format(material=p.material))
    return (
        f"<header><h1>{_esc(p.title)}</h1></header><section><p>{_esc(', '.join(facts))}</p>"
        f"<p>{_esc(format_price(p.price, p.locale))}</p>{_availability_html(p, rng)}"
        f"{''.join(_distractor_prices(p, rng))}{_prose(p, rng)}</section>{_reviews(p, rng)}"
    )


# Independent layouts: structures the model never saw during training.
def _layout_legacy(p: Product, rng: random.Random) -> str:
    cells = "".join(
        f'<tr><td bgcolor="#eee"><font size="2">{_esc(k)}:</font></td><td>{_esc(v)}</td></tr>'
        for k, v in _specs(p, rng)
    )
    stock = _availability_html(p, rng)
    return (
        f'<table width="100%"><tr><td><font size="5"><b>{_esc(p.title)}</b></font></td></tr>'
        f'<tr><td>{_esc(p.locale.words.our_price)} <font color="red">{_esc(format_price(p.price, p.locale))}</font>'
        "</td></tr>"
        f"<tr><td>{stock}</td></tr></table><table>{cells}</table>"
        f"{''.join(_distractor_prices(p, rng))}{_prose(p, rng)}{_related(p, rng)}"
    )


def _layout_catalog(p: Product, rng: random.Random) -> str:
    attrs = " ".join(f'data-{_esc(k.lower().replace(" ", "-"))}="{_esc(v)}"' for k, v in _specs(p, rng))
    facts = "".join(f"<span>{_esc(k)} — {_esc(v)}</span><br>" for k, v in _specs(p, rng))
    return (
        f'<div class="product" {attrs}><h2>{_esc(p.title)}</h2><div class="cost">'
        f"{_esc(format_price(p.price, p.locale))}</div>{_availability_html(p, rng)}<div>{facts}</div>"
        f"{_reviews(p, rng)}{''.join(_distractor_prices(p, rng))}</div>{_related(p, rng)}"
    )


def _layout_gallery(p: Product, rng: random.Random) -> str:
    """Image first, facts as tiles (label above value, no separator), and the price last, in a sticky buy bar
    after the reviews: an order of things no other layout has. Added after mini was pretrained, so that one layout
    of the independent test is new even to mini (whose pretraining read every other layout)."""
    words = p.locale.words
    views = rng.randint(2, 5)
    figures = "".join(
        f'<figure><img src="/img/{_esc(p.sku)}-{i}.jpg" alt="{_esc(p.title)}"><figcaption>{i}/{views}</figcaption>'
        "</figure>"
        for i in range(1, views + 1)
    )
    tiles = "".join(f'<div class="tile"><div>{_esc(k)}</div><div>{_esc(v)}</div></div>' for k, v in _specs(p, rng))
    maker = f'<div class="maker">{_esc(words.by.format(brand=p.brand))}</div>' if p.brand else ""
    return (
        f'<div class="gallery">{figures}</div><section class="summary"><h1>{_esc(p.title)}</h1>{maker}'
        f'<details open><summary>{_esc(words.specifications)}</summary><div class="tiles">{tiles}</div></details>'
        f"{_prose(p, rng)}</section>{_reviews(p, rng)}"
        f'<div class="buybar"><div class="amount">{_esc(format_price(p.price, p.locale))}</div>'
        f"{_availability_html(p, rng)}{''.join(_distractor_prices(p, rng))}"
        f"<button>{_esc(words.add_to_basket)}</button></div>{_related(p, rng)}"
    )


# Appended only, as LOCALES: a stream draws its layout from a tuple of names, never from this dict's order.
LAYOUTS: dict[str, Callable[[Product, random.Random], str]] = {
    "storefront": _layout_storefront,
    "boutique": _layout_boutique,
    "marketplace": _layout_marketplace,
    "minimal": _layout_minimal,
    "legacy": _layout_legacy,
    "catalog": _layout_catalog,
    "gallery": _layout_gallery,
}
IN_DISTRIBUTION_LAYOUTS = ("storefront", "boutique", "marketplace", "minimal")
INDEPENDENT_LAYOUTS = ("legacy", "catalog", "gallery")


def generate_page(
    rng: random.Random,
    categories: tuple[str, ...],
    layouts: tuple[str, ...],
    locales: tuple[Locale, ...] = TRAINING_SHOPS,
) -> dict[str, object]:
    """One example in the dataset's JSONL schema (docs/task.md)."""
    product = _product(rng, CATEGORIES[rng.choice(categories)], locales)
    layout = rng.choice(layouts)
    with_json_ld = rng.random() < 0.35
    body = LAYOUTS[layout](product, rng)
    page = f"<!doctype html><html>{_head(product, rng, with_json_ld)}<body>{body}</body></html>"
    return {
        "html": page,
        "attributes": product.gold(),
        "meta": {
            "category": product.category.name,
            "layout": layout,
            "locale": product.locale.code,
            "json_ld": with_json_ld,
        },
    }


def unique_pages(
    seed: int,
    categories: tuple[str, ...],
    layouts: tuple[str, ...],
    prefix: str,
    seen: set[str],
    locales: tuple[Locale, ...] = TRAINING_SHOPS,
) -> Iterator[dict[str, object]]:
    """An endless stream of distinct pages (none whose HTML is in ``seen``, which it extends)."""
    rng = random.Random(seed)
    index = 0
    while True:
        page = generate_page(rng, categories, layouts, locales)
        digest = hashlib.sha256(str(page["html"]).encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        yield {"id": f"{prefix}-{index:06d}", **page}
        index += 1


@dataclass(frozen=True)
class SplitSizes:
    train: int = 2000
    validation: int = 200
    test: int = 200
    independent_test: int = 200


SPLITS = ("train", "validation", "test", "independent_test")


@dataclass(frozen=True)
class Holdout:
    """What ``validation_holdout`` keeps out of train and test for the validation pages: the last of the training
    shops (in canonical order), of the layouts and of the categories. The validation pages then differ from the
    training pages the way the independent test's do (another shop, layout and category), so that a study's early
    and final scores, which choose its trials, reward what carries over to new shops rather than what fits the
    training shops (docs/science.md: on long trials the two disagree)."""

    shop: str
    layout: str
    category: str


def holdout_for(locales: Sequence[str]) -> Holdout:
    shops = locales_named(locales)
    if len(shops) < 2:
        raise ValueError("validationHoldout needs at least two locales: one is held out for the validation pages")
    return Holdout(shops[-1].code, IN_DISTRIBUTION_LAYOUTS[-1], IN_DISTRIBUTION_CATEGORIES[-1])


def generate_dataset(
    seed: int,
    sizes: SplitSizes,
    locales: Sequence[str] = LOCALE_CODES,
    independent_locales: Sequence[str] | None = None,
    validation_holdout: bool = False,
) -> dict[str, list[dict[str, object]]]:
    """Disjoint splits: no page appears twice. train/validation/test come from the shops of ``locales``;
    independent_test shares no shop, layout or category with them: its shops are ``independent_locales``, by
    default the holdout shop of each language trained on (``independent_locales_for``). With
    ``validation_holdout``, validation comes from a shop, layout and category that train and test never have
    (``holdout_for``).

    With no independent test to generate and no shops named for it, any training shops are fine (even all)."""
    shops = locales_named(locales)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, object]]] = {}
    if validation_holdout:
        held = holdout_for(locales)
        kept = tuple(shop for shop in shops if shop.code != held.shop)
        categories = tuple(c for c in IN_DISTRIBUTION_CATEGORIES if c != held.category)
        layouts = tuple(layout for layout in IN_DISTRIBUTION_LAYOUTS if layout != held.layout)
        stream = unique_pages(seed, categories, layouts, "p", seen, kept)
        held_out = unique_pages(seed + 104729, (held.category,), (held.layout,), "val", seen,
                                locales_named([held.shop]))  # fmt: skip
        splits["train"] = [next(stream) for _ in range(sizes.train)]
        splits["validation"] = [next(held_out) for _ in range(sizes.validation)]
        splits["test"] = [next(stream) for _ in range(sizes.test)]
    else:
        stream = unique_pages(seed, IN_DISTRIBUTION_CATEGORIES, IN_DISTRIBUTION_LAYOUTS, "p", seen, shops)
        for split in ("train", "validation", "test"):
            splits[split] = [next(stream) for _ in range(getattr(sizes, split))]
    splits["independent_test"] = []
    if sizes.independent_test or independent_locales is not None:
        others = locales_named(independent_locales_for(locales, independent_locales))
        independent = unique_pages(seed + 7919, INDEPENDENT_CATEGORIES, INDEPENDENT_LAYOUTS, "ind", seen, others)
        splits["independent_test"] = [next(independent) for _ in range(sizes.independent_test)]
    return splits


def write_dataset(
    directory: Path,
    seed: int,
    sizes: SplitSizes,
    locales: Sequence[str] = LOCALE_CODES,
    independent_locales: Sequence[str] | None = None,
    validation_holdout: bool = False,
) -> dict[str, Path]:
    """Write one JSONL file per split (atomically, so a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate_dataset(seed, sizes, locales, independent_locales, validation_holdout).items():
        path = directory / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
        paths[split] = path
    return paths
