"""Generate a summary report from a CSV file of sales records.

Input rows are expected to have the columns ``region``, ``product``,
``units`` and ``unit_price``. The report groups revenue by region and
lists the best-selling products, written as a plain-text table.
"""

import csv
import io
import sys
from collections import defaultdict


def load_rows(stream):
    """Parse CSV rows from a file-like object into typed dictionaries."""
    rows = []
    for line_no, record in enumerate(csv.DictReader(stream), start=2):
        try:
            record["units"] = int(record["units"])
            record["unit_price"] = float(record["unit_price"])
        except (KeyError, ValueError) as exc:
            # Skip malformed lines but tell the user where they were.
            print(f"skipping line {line_no}: {exc}", file=sys.stderr)
            continue
        rows.append(record)
    return rows


def revenue_by_region(rows):
    """Return a dict mapping region name to total revenue."""
    totals = defaultdict(float)
    for row in rows:
        totals[row["region"]] += row["units"] * row["unit_price"]
    return dict(totals)


def top_products(rows, limit=3):
    """Return the ``limit`` products with the most units sold."""
    units = defaultdict(int)
    for row in rows:
        units[row["product"]] += row["units"]
    ranked = sorted(units.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:limit]


def format_report(rows):
    """Build the full text report as a single string."""
    lines = ["Revenue by region", "-----------------"]
    regions = revenue_by_region(rows)
    width = max((len(name) for name in regions), default=6)
    for name, total in sorted(regions.items(), key=lambda kv: -kv[1]):
        lines.append(f"{name:<{width}}  {total:>12,.2f}")
    lines.append(f"{'TOTAL':<{width}}  {sum(regions.values()):>12,.2f}")
    lines += ["", "Top products by units", "---------------------"]
    for rank, (product, count) in enumerate(top_products(rows), start=1):
        lines.append(f"{rank}. {product} ({count} units)")
    return "\n".join(lines)


SAMPLE = """region,product,units,unit_price
North,Widget,120,2.50
South,Widget,80,2.50
North,Gadget,15,19.99
West,Gizmo,40,7.25
South,Gadget,22,19.99
West,Widget,oops,2.50
"""

if __name__ == "__main__":
    # Read a file named on the command line, or fall back to sample data.
    if len(sys.argv) > 1:
        with open(sys.argv[1], newline="", encoding="utf-8") as handle:
            data = load_rows(handle)
    else:
        data = load_rows(io.StringIO(SAMPLE))
    print(format_report(data))
