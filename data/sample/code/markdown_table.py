"""Format rows of data as an aligned Markdown (GitHub-flavored) table.

Numbers are right-aligned and text is left-aligned automatically, and the
alignment row uses the ``:---`` / ``---:`` syntax so renderers agree with the
padding in the raw text.
"""


def _is_number(value):
    """True for ints and floats, but not for booleans."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value, float_digits):
    """Convert a value to its cell text, escaping pipe characters."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.{float_digits}f}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers, rows, float_digits=2):
    """Return a Markdown table string for ``headers`` and ``rows``."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError("every row must have one cell per header")

    # A column is numeric if all of its non-empty values are numbers.
    numeric = [
        all(_is_number(row[i]) for row in rows if row[i] is not None) and bool(rows)
        for i in range(len(headers))
    ]
    table = [[str(h) for h in headers]] + [
        [_cell(v, float_digits) for v in row] for row in rows
    ]
    widths = [max(3, *(len(r[i]) for r in table)) for i in range(len(headers))]

    def render(cells):
        padded = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric)
        ]
        return "| " + " | ".join(padded) + " |"

    align = [
        "-" * (w - 1) + ":" if num else ":" + "-" * (w - 1)
        for w, num in zip(widths, numeric)
    ]
    lines = [render(table[0]), "| " + " | ".join(align) + " |"]
    lines += [render(r) for r in table[1:]]
    return "\n".join(lines)


def from_dicts(records, columns=None, **kwargs):
    """Build a table from a list of dicts, using keys as headers."""
    if columns is None:
        columns = list(records[0].keys()) if records else []
    rows = [[rec.get(col) for col in columns] for rec in records]
    return markdown_table(columns, rows, **kwargs)


if __name__ == "__main__":
    print(markdown_table(
        ["Ingredient", "Grams", "Baker's %"],
        [["Bread flour", 500, 100.0], ["Water", 350, 70.0], ["Salt | fine", 10, 2.0]],
    ))
    print()
    print(from_dicts([
        {"planet": "Mars", "moons": 2},
        {"planet": "Jupiter", "moons": 95},
    ]))
