"""Level Up's product catalogue: the trainings and services a complaint can be about.

The complainant names the product in their own words, and those words are personal data: they can
say who complained ("the in-company training for our team in Delft"). The catalogue turns them into
a code, which is anonymous: the search attribute ``ComplaintProduct``, the director's alerts, the
yearly report and the dossier after the erasure use the code only; the words are kept encrypted and
erased with the rest of the complaint's personal data.

The catalogue is a TOML file (``PRODUCT_CATALOGUE_FILE``) with one ``[[product]]`` table per product::

    [[product]]
    code = "training-agile"              # lower-case letters, digits and dashes
    name = "Training Agile"              # as letters and reports print it
    aliases = ["Agile training", "Agile"]  # optional: other spellings

The complainant's text matches a name or an alias case-insensitively, with white space folded;
anything else is ``other``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

#: The code of a product the catalogue does not name (and of every product without a catalogue).
OTHER = "other"
#: A product code: lower-case letters and digits, words joined by single dashes.
CODE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_KEYS = {"code", "name", "aliases"}


class CatalogueError(ValueError):
    """The catalogue file is not valid; the message names the table and the field."""


def fold(text: str) -> str:
    """The form texts are compared in: case folded, white space runs as one space, trimmed."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    products: tuple[Product, ...] = ()
    _by_text: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _names: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for product in self.products:
            self._names[product.code] = product.name
            for text in (product.name, *product.aliases):
                self._by_text.setdefault(fold(text), product.code)

    def match(self, text: str | None) -> str | None:
        """The code for the complainant's words (None for no words; ``other`` when nothing matches)."""
        if text is None:
            return None
        return self._by_text.get(fold(text), OTHER)

    def name(self, code: str | None) -> str | None:
        """The product's name for letters and reports; None for ``other`` and unknown codes."""
        return self._names.get(code) if code else None

    @property
    def names(self) -> dict[str, str]:
        """Each code's name (for the yearly report's readable forms)."""
        return dict(self._names)

    def knows(self, code: str) -> bool:
        return code == OTHER or code in self._names

    @property
    def codes(self) -> list[str]:
        """Every code staff may give (``admin.py set-product``), ``other`` last."""
        return [p.code for p in self.products] + [OTHER]


#: No catalogue: every product is ``other``.
EMPTY = Catalogue()


def load_catalogue(path: Path) -> Catalogue:
    """Read and check a catalogue file; :class:`CatalogueError` names what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogueError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogueError(f"{path} cannot be read ({getattr(err, 'strerror', None) or type(err).__name__})") \
            from None
    return parse_catalogue(text)


def parse_catalogue(text: str) -> Catalogue:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CatalogueError(f"not valid TOML ({err})") from None
    extra = sorted(set(data) - {"product"})
    if extra:
        raise CatalogueError(f"{extra[0]}: unknown; the catalogue holds [[product]] tables only")
    tables = data.get("product", [])
    if not isinstance(tables, list) or not tables:
        raise CatalogueError("product: no [[product]] table")
    products: list[Product] = []
    seen: dict[str, str] = {}  # folded name or alias -> the code that has it
    for number, table in enumerate(tables, 1):
        where = f"product {number}"
        if not isinstance(table, dict):
            raise CatalogueError(f"{where}: not a table")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise CatalogueError(f"{where}: {unknown[0]}: unknown key (a product has code, name and aliases)")
        code = table.get("code")
        if not isinstance(code, str) or not CODE.fullmatch(code):
            raise CatalogueError(f"{where}: code: {code!r} must be lower-case letters, digits and dashes")
        if code == OTHER:
            raise CatalogueError(f"{where}: code: {OTHER!r} is reserved for products the catalogue does not name")
        if any(p.code == code for p in products):
            raise CatalogueError(f"{where}: code: {code!r} is already used")
        name = table.get("name")
        if not isinstance(name, str) or not name.strip() or "\n" in name:
            raise CatalogueError(f"{where} ({code}): name: must be one line of text")
        aliases = table.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise CatalogueError(f"{where} ({code}): aliases: must be a list of texts")
        for text_ in (name, *aliases):
            other = seen.setdefault(fold(text_), code)
            if other != code:
                raise CatalogueError(f"{where} ({code}): {text_!r} is already a name or alias of {other!r}")
        products.append(Product(code=code, name=" ".join(name.split()), aliases=tuple(aliases)))
    return Catalogue(tuple(products))
