"""Tables for people: HTML in a notebook, aligned text in a terminal (no pandas needed)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence

Column = str | tuple[str, str, str]


class Table:
    """Rows of dicts shown as an HTML table in Jupyter and as aligned text elsewhere.

    A column is a key (its own header, numbers to 4 significant digits) or (header, key, format),
    e.g. ("accuracy", "acc", "{:.1%}"). Missing or None values show as a dash.
    """

    def __init__(self, rows: Sequence[Mapping[str, object]], columns: Sequence[Column] | None = None) -> None:
        keys = columns if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
        self.columns = [c if isinstance(c, tuple) else (c, c, "") for c in keys]
        self.cells = [[self._cell(row.get(key), fmt) for _, key, fmt in self.columns] for row in rows]

    @staticmethod
    def _cell(value: object, fmt: str) -> str:
        """One value as text: its column's format, else 4 significant digits for floats, JSON for dicts."""
        if value is None:
            return "-"
        if fmt:
            return fmt.format(value)
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, dict):
            return json.dumps(value)
        return str(value)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.cells
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        headers = [h for h, _, _ in self.columns]
        widths = [max([len(h), *(len(row[i]) for row in self.cells)]) for i, h in enumerate(headers)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in self.cells]
        return "\n".join(lines)

    __repr__ = __str__


def table(rows: Sequence[Mapping[str, object]], columns: Sequence[Column] | None = None) -> Table:
    """A :class:`Table` of ``rows``: the last expression of a notebook cell renders it as HTML."""
    return Table(rows, columns)
