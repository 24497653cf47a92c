"""What a shop writes around the facts, in its own language: labels, stock phrases, headings, boilerplate.

Shops in Germany, France and Switzerland label a colour ``Farbe`` or ``Couleur``, say ``Auf Lager`` rather than
``In stock`` and name colours and materials in their own words. A model that learned extraction on English shops
must learn these to serve European ones: that is the shift the bundled demonstration model (``mini``) is
fine-tuned across (docs/science.md). Gold values are what the page states, so a French page's colour is ``noir``.

Two wordings belong to the holdout shops only (``ftstudy.task.generator.HOLDOUT_LOCALES``), which no default
training set and not ``mini``'s pretraining use: Italian (``Colore``, ``Esaurito``), for the independent test of a
European study, and Canadian English (``en-CA``: English labels, but other stock phrases, headings and boilerplate
than the US and UK shops), for that of an English one. A wording is keyed by its language tag, so a variant of a
language is a tag with a region.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Wording:
    language: str
    labels: dict[str, tuple[str, ...]]  # attribute -> the words a spec table uses for it
    stock: dict[str, tuple[str, ...]]  # availability code -> phrases
    colours: dict[str, str] = field(default_factory=dict)  # English colour -> this language's; missing: unchanged
    materials: dict[str, str] = field(default_factory=dict)
    nav: tuple[str, ...] = ("Home", "New in", "Sale", "Gift cards", "Stores", "Help")
    was: str = "Was"
    shipping: str = "Shipping: {cost} (free over {free})"
    instalments: str = "Or {n} payments of {amount}"
    prose: tuple[str, ...] = (
        "Meet the {title}: designed for the way you live, built to last for {years} years and more.",
        "Over {count},000 customers already love it.",
        "Order before {hour}:00 for next-day delivery.",
    )
    prose_material: str = "Crafted from premium {material} for everyday comfort."
    prose_colour: str = "This one comes in a timeless {colour} that goes with everything."
    reviews: str = "Reviews"
    rating: str = "{rating} out of 5 ({count} reviews)"
    quotes: tuple[str, ...] = (
        "Exactly as described, would buy again.",
        "Runs a bit small, order one size up.",
        "Great value for the price.",
        "Arrived in 3 days, well packed.",
        "Colour is darker than on the photos.",
        "Second one I bought this year!",
    )
    days_ago: str = "{days} days ago"
    related: tuple[str, ...] = ("You may also like", "Customers also bought", "Related products")
    add_to_basket: str = "Add to basket"
    specifications: str = "Specifications"
    incl_vat: str = "incl. VAT"
    price: str = "Price:"
    our_price: str = "Our price:"
    stars: str = "{rating} stars · {count} ratings"
    about: str = "About this item"
    other_sellers: str = "Other sellers"
    seller: str = "Seller"
    weight: str = "Weight"
    warranty: str = "Warranty"
    years: str = "{n} years"
    footer: str = "Newsletter · Returns · Imprint"
    by: str = "by {brand}"
    size: str = "size {size}"
    in_colour: str = "in {colour}"
    made_of: str = "made of {material}"


ENGLISH = Wording(
    language="en",
    labels={
        "brand": ("Brand", "Manufacturer", "Made by"),
        "colour": ("Colour", "Color", "Shade", "Finish"),
        "material": ("Material", "Fabric", "Made of", "Composition"),
        "size": ("Size", "Dimensions", "Capacity", "Fit"),
    },
    stock={
        "in_stock": ("In stock", "Available now", "In Stock – ships today", "In stock online"),
        "out_of_stock": ("Out of stock", "Sold out", "Currently unavailable"),
        "preorder": ("Pre-order", "Available for pre-order"),
        "limited_stock": ("Only a few left", "Low stock"),
    },
)

# fmt: off
_GERMAN_COLOURS: dict[str, str] = {
    "black": "schwarz", "white": "weiß", "navy": "marineblau", "olive green": "olivgrün",
    "charcoal grey": "anthrazit", "burgundy": "bordeaux", "sand beige": "sandbeige", "sky blue": "himmelblau",
    "red": "rot", "silver": "silber", "forest green": "tannengrün", "mustard yellow": "senfgelb",
}
_GERMAN_MATERIALS: dict[str, str] = {
    "cotton": "Baumwolle", "organic cotton": "Bio-Baumwolle", "merino wool": "Merinowolle",
    "linen": "Leinen", "recycled nylon": "recyceltes Nylon", "leather": "Leder", "suede": "Wildleder",
    "canvas": "Segeltuch", "synthetic": "Synthetik", "rubber": "Gummi", "aluminium": "Aluminium",
    "plastic": "Kunststoff", "glass": "Glas", "stainless steel": "Edelstahl", "carbon fibre": "Carbon",
    "cast iron": "Gusseisen", "ceramic": "Keramik", "bamboo": "Bambus", "copper": "Kupfer",
    "non-stick aluminium": "antihaftbeschichtetes Aluminium", "glass bottle": "Glasflasche",
    "aluminium tube": "Aluminiumtube", "recycled plastic": "recycelter Kunststoff",
    "galvanised steel": "verzinkter Stahl", "terracotta": "Terrakotta", "ash wood": "Eschenholz",
    "beech wood": "Buchenholz", "ABS plastic": "ABS-Kunststoff", "cardboard": "Karton",
}
_FRENCH_COLOURS: dict[str, str] = {
    "black": "noir", "white": "blanc", "navy": "bleu marine", "olive green": "vert olive",
    "charcoal grey": "gris anthracite", "burgundy": "bordeaux", "sand beige": "beige sable",
    "sky blue": "bleu ciel", "red": "rouge", "silver": "argent", "forest green": "vert forêt",
    "mustard yellow": "jaune moutarde",
}
_FRENCH_MATERIALS: dict[str, str] = {
    "cotton": "coton", "organic cotton": "coton bio", "merino wool": "laine mérinos", "polyester": "polyester",
    "linen": "lin", "recycled nylon": "nylon recyclé", "leather": "cuir", "suede": "daim", "canvas": "toile",
    "synthetic": "synthétique", "rubber": "caoutchouc", "aluminium": "aluminium", "plastic": "plastique",
    "glass": "verre", "stainless steel": "acier inoxydable", "carbon fibre": "fibre de carbone",
    "cast iron": "fonte", "ceramic": "céramique", "bamboo": "bambou", "copper": "cuivre",
    "non-stick aluminium": "aluminium antiadhésif", "glass bottle": "flacon en verre",
    "aluminium tube": "tube en aluminium", "recycled plastic": "plastique recyclé",
    "galvanised steel": "acier galvanisé", "terracotta": "terre cuite", "ash wood": "bois de frêne",
    "beech wood": "bois de hêtre", "ABS plastic": "plastique ABS", "cardboard": "carton",
}
_ITALIAN_COLOURS: dict[str, str] = {
    "black": "nero", "white": "bianco", "navy": "blu navy", "olive green": "verde oliva",
    "charcoal grey": "grigio antracite", "burgundy": "bordeaux", "sand beige": "beige sabbia",
    "sky blue": "azzurro", "red": "rosso", "silver": "argento", "forest green": "verde bosco",
    "mustard yellow": "giallo senape",
}
_ITALIAN_MATERIALS: dict[str, str] = {
    "cotton": "cotone", "organic cotton": "cotone biologico", "merino wool": "lana merino", "polyester": "poliestere",
    "linen": "lino", "recycled nylon": "nylon riciclato", "leather": "pelle", "suede": "camoscio", "mesh": "rete",
    "canvas": "tela", "synthetic": "sintetico", "rubber": "gomma", "aluminium": "alluminio", "plastic": "plastica",
    "glass": "vetro", "stainless steel": "acciaio inox", "carbon fibre": "fibra di carbonio", "cast iron": "ghisa",
    "ceramic": "ceramica", "bamboo": "bambù", "copper": "rame", "non-stick aluminium": "alluminio antiaderente",
    "glass bottle": "flacone in vetro", "aluminium tube": "tubetto in alluminio",
    "recycled plastic": "plastica riciclata", "galvanised steel": "acciaio zincato", "terracotta": "terracotta",
    "polypropylene": "polipropilene", "ash wood": "legno di frassino", "beech wood": "legno di faggio",
    "ABS plastic": "plastica ABS", "plush polyester": "peluche di poliestere", "cardboard": "cartone",
}
# fmt: on


GERMAN = Wording(
    language="de",
    labels={
        "brand": ("Marke", "Hersteller"),
        "colour": ("Farbe", "Farbton"),
        "material": ("Material", "Stoff", "Obermaterial"),
        "size": ("Größe", "Abmessungen", "Inhalt"),
    },
    stock={
        "in_stock": ("Auf Lager", "Sofort lieferbar", "Lieferbar"),
        "out_of_stock": ("Ausverkauft", "Nicht lieferbar", "Derzeit nicht verfügbar"),
        "preorder": ("Vorbestellung", "Jetzt vorbestellen"),
        "limited_stock": ("Nur noch wenige verfügbar", "Geringer Bestand"),
    },
    colours=_GERMAN_COLOURS,
    materials=_GERMAN_MATERIALS,
    nav=("Startseite", "Neuheiten", "Sale", "Gutscheine", "Filialen", "Hilfe"),
    was="Statt",
    shipping="Versand: {cost} (kostenlos ab {free})",
    instalments="Oder {n} Raten zu je {amount}",
    prose=(
        "Das {title}: gemacht für Ihren Alltag und gebaut für {years} Jahre und mehr.",
        "Über {count}.000 Kundinnen und Kunden sind begeistert.",
        "Bis {hour}:00 Uhr bestellt, morgen geliefert.",
    ),
    prose_material="Gefertigt aus hochwertigem Material: {material}.",
    prose_colour="In zeitlosem {colour}, passt zu allem.",
    reviews="Bewertungen",
    rating="{rating} von 5 ({count} Bewertungen)",
    quotes=(
        "Genau wie beschrieben, gerne wieder.",
        "Fällt etwas klein aus.",
        "Sehr gutes Preis-Leistungs-Verhältnis.",
        "Nach 3 Tagen da, gut verpackt.",
        "Schon mein zweites dieses Jahr!",
    ),
    days_ago="vor {days} Tagen",
    related=("Das könnte Ihnen auch gefallen", "Kunden kauften auch", "Ähnliche Produkte"),
    add_to_basket="In den Warenkorb",
    specifications="Technische Daten",
    incl_vat="inkl. MwSt.",
    price="Preis:",
    our_price="Unser Preis:",
    stars="{rating} Sterne · {count} Bewertungen",
    about="Über diesen Artikel",
    other_sellers="Weitere Anbieter",
    seller="Anbieter",
    weight="Gewicht",
    warranty="Garantie",
    years="{n} Jahre",
    footer="Newsletter · Rückgabe · Impressum",
    by="von {brand}",
    size="Größe {size}",
    in_colour="in {colour}",
    made_of="aus {material}",
)

FRENCH = Wording(
    language="fr",
    labels={
        "brand": ("Marque", "Fabricant"),
        "colour": ("Couleur", "Coloris", "Teinte"),
        "material": ("Matière", "Composition", "Matériau"),
        "size": ("Taille", "Dimensions", "Contenance"),
    },
    stock={
        "in_stock": ("En stock", "Disponible", "En stock – expédié aujourd'hui"),
        "out_of_stock": ("Rupture de stock", "Épuisé", "Indisponible"),
        "preorder": ("Précommande", "Disponible en précommande"),
        "limited_stock": ("Plus que quelques articles", "Stock limité"),
    },
    colours=_FRENCH_COLOURS,
    materials=_FRENCH_MATERIALS,
    nav=("Accueil", "Nouveautés", "Soldes", "Cartes cadeaux", "Magasins", "Aide"),
    was="Au lieu de",
    shipping="Livraison : {cost} (offerte dès {free})",
    instalments="Ou {n} fois {amount}",
    prose=(
        "Découvrez {title} : pensé pour votre quotidien, conçu pour durer {years} ans et plus.",
        "Déjà plus de {count} 000 clients conquis.",
        "Commandé avant {hour}h, livré demain.",
    ),
    prose_material="Fabriqué en {material} de qualité.",
    prose_colour="Un {colour} intemporel qui va avec tout.",
    reviews="Avis clients",
    rating="{rating} sur 5 ({count} avis)",
    quotes=(
        "Conforme à la description, je rachèterai.",
        "Taille un peu petit.",
        "Excellent rapport qualité-prix.",
        "Reçu en 3 jours, bien emballé.",
        "Déjà mon deuxième cette année !",
    ),
    days_ago="il y a {days} jours",
    related=("Vous aimerez aussi", "Les clients ont aussi acheté", "Produits similaires"),
    add_to_basket="Ajouter au panier",
    specifications="Caractéristiques",
    incl_vat="TTC",
    price="Prix :",
    our_price="Notre prix :",
    stars="{rating} étoiles · {count} notes",
    about="À propos de cet article",
    other_sellers="Autres vendeurs",
    seller="Vendeur",
    weight="Poids",
    warranty="Garantie",
    years="{n} ans",
    footer="Newsletter · Retours · Mentions légales",
    by="par {brand}",
    size="taille {size}",
    in_colour="coloris {colour}",
    made_of="en {material}",
)

# The holdout shops' wordings: the independent test's, never a default training set's nor mini's pretraining's.
ITALIAN = Wording(
    language="it",
    labels={
        "brand": ("Marca", "Produttore"),
        "colour": ("Colore", "Tinta"),
        "material": ("Materiale", "Composizione", "Tessuto"),
        "size": ("Taglia", "Dimensioni", "Capacità"),
    },
    stock={
        "in_stock": ("Disponibile", "Disponibilità immediata", "In magazzino"),
        "out_of_stock": ("Esaurito", "Non disponibile", "Momentaneamente non disponibile"),
        "preorder": ("Preordinabile", "Disponibile in preordine"),
        "limited_stock": ("Ultimi pezzi", "Disponibilità limitata"),
    },
    colours=_ITALIAN_COLOURS,
    materials=_ITALIAN_MATERIALS,
    nav=("Home", "Novità", "Saldi", "Carte regalo", "Negozi", "Assistenza"),
    was="Invece di",
    shipping="Spedizione: {cost} (gratuita sopra {free})",
    instalments="Oppure {n} rate da {amount}",
    prose=(
        "Ecco {title}: pensato per la vita di tutti i giorni, costruito per durare {years} anni e oltre.",
        "Già più di {count}.000 clienti soddisfatti.",
        "Ordina entro le {hour}:00, ricevi domani.",
    ),
    prose_material="Realizzato in {material} di alta qualità.",
    prose_colour="Colore {colour} senza tempo, si abbina a tutto.",
    reviews="Recensioni",
    rating="{rating} su 5 ({count} recensioni)",
    quotes=(
        "Esattamente come descritto, lo ricomprerei.",
        "Veste un po' piccolo, meglio una taglia in più.",
        "Ottimo rapporto qualità-prezzo.",
        "Arrivato in 3 giorni, ben imballato.",
        "Il colore è più scuro che nelle foto.",
        "Il secondo che compro quest'anno!",
    ),
    days_ago="{days} giorni fa",
    related=("Potrebbe interessarti anche", "Chi ha acquistato questo ha acquistato anche", "Prodotti simili"),
    add_to_basket="Aggiungi al carrello",
    specifications="Caratteristiche tecniche",
    incl_vat="IVA inclusa",
    price="Prezzo:",
    our_price="Il nostro prezzo:",
    stars="{rating} stelle · {count} valutazioni",
    about="Informazioni su questo articolo",
    other_sellers="Altri venditori",
    seller="Venditore",
    weight="Peso",
    warranty="Garanzia",
    years="{n} anni",
    footer="Newsletter · Resi · Note legali",
    by="di {brand}",
    size="taglia {size}",
    in_colour="colore {colour}",
    made_of="in {material}",
)

# English, as a Canadian shop writes it: the labels an English-trained model knows, mostly, but its own stock
# phrases, headings and boilerplate (prices before tax, "Add to cart"), so that the independent test of an English
# study is not the US and UK shops' text again.
CANADIAN_ENGLISH = Wording(
    language="en-CA",
    labels={
        "brand": ("Brand", "Maker", "Manufacturer"),
        "colour": ("Colour", "Colourway", "Finish"),
        "material": ("Material", "Fabric", "Construction"),
        "size": ("Size", "Dimensions", "Fit"),
    },
    stock={
        "in_stock": ("Ready to ship", "Available online", "In stock"),
        "out_of_stock": ("No longer available", "Sold out online", "Out of stock"),
        "preorder": ("Pre-order now", "Coming soon – pre-order"),
        "limited_stock": ("Limited quantities", "Almost gone"),
    },
    nav=("Home", "What's new", "Clearance", "Gift cards", "Store locator", "Help"),
    was="Reg.",
    shipping="Shipping: {cost} (free shipping on orders over {free})",
    instalments="Or {n} interest-free payments of {amount}",
    prose=(
        "Say hello to the {title}: made for Canadian winters and built to last {years} years and more.",
        "Over {count},000 happy customers from coast to coast.",
        "Order by {hour}:00 ET for next-business-day delivery.",
    ),
    prose_material="Made with quality {material} that holds up season after season.",
    prose_colour="Shown here in {colour}, a colour that works with everything.",
    reviews="Customer reviews",
    rating="Rated {rating}/5 by {count} customers",
    quotes=(
        "Exactly as pictured, would order again.",
        "Made it through a Montreal winter and still looks new.",
        "Great value for the money.",
        "Arrived in 4 business days, well packed.",
        "Fits true to size.",
    ),
    days_ago="{days} days ago",
    related=("You might also like", "Frequently bought together", "Similar items"),
    add_to_basket="Add to cart",
    specifications="Product details",
    incl_vat="plus applicable taxes",
    price="Price:",
    our_price="Your price:",
    stars="{rating}/5 · {count} ratings",
    about="Product overview",
    other_sellers="More offers",
    seller="Sold by",
    footer="Newsletter · Returns & exchanges · Privacy",
)

WORDINGS = {w.language: w for w in (ENGLISH, GERMAN, FRENCH, ITALIAN, CANADIAN_ENGLISH)}
