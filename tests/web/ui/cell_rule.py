"""The cell rule checked on a page's HTML against its JSON twin, without a browser (the UI's Flask test-client
tests; the browser tests check the same in Chromium) (web/ui/twins.py: every ``<table data-twin="key.path">`` cell ``data-field="f"``
reads ``str(row[f])`` of the row at the same position)."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any


class _Tables(HTMLParser):
    """Every data-twin table's body cells: ``{twin: [[(field, text), ...] per row]}``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self._twin: str | None = None
        self._in_body = False
        self._field: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("data-twin"):
            self._twin = a["data-twin"]
            self.tables[self._twin] = []
        elif self._twin and tag == "tbody":
            self._in_body = True
        elif self._twin and self._in_body and tag == "tr":
            self.tables[self._twin].append([])
        elif self._twin and self._in_body and tag in ("td", "th") and a.get("data-field"):
            self._field, self._text = a["data-field"], []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._field is not None:
            self.tables[self._twin][-1].append((self._field, " ".join("".join(self._text).split())))
            self._field = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._twin = None

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self._text.append(data)


def twin_tables(html: str) -> dict[str, list[list[tuple[str, str]]]]:
    """The page's twin tables as parsed cells."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def _at(data: Any, path: str) -> Any:
    for key in path.split("."):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def assert_cell_rule(html: str, twin: dict[str, Any], expect: tuple[str, ...] = ()) -> dict[str, int]:
    """Every twin table of ``html`` equals its list in ``twin``, cell by cell; ``expect`` names tables that must be
    there. Returns the rows per table."""
    tables = twin_tables(html)
    for name in expect:
        assert name in tables, f"no table data-twin={name!r} on the page (tables: {sorted(tables)})"
    for name, rows in tables.items():
        data = _at(twin, name)
        assert len(rows) == len(data), f"{name}: {len(rows)} rows on the page, {len(data)} in the twin"
        for i, (cells, row) in enumerate(zip(rows, data)):
            assert cells, f"{name} row {i}: no data-field cell"
            for field, text in cells:
                assert text == " ".join(str(row[field]).split()), f"{name} row {i} {field}: {text!r} != {row[field]!r}"
    return {name: len(rows) for name, rows in tables.items()}
