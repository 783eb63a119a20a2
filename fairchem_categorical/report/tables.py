"""Markdown tables of results (demo and benchmarks print the same way)."""

from __future__ import annotations


def markdown_table(results: dict[str, dict[str, float]],
                   rows: list[tuple[str, str, str]]) -> str:
    """One column per model, one row per (label, key, format); NaN or missing -> n/a."""
    names = [n for n in results if not n.startswith("_")]
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, fmt in rows:
        cells = []
        for n in names:
            v = results[n].get(key)
            cells.append("n/a" if v is None or v != v else fmt.format(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table of ready-formatted cells (one list per row)."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
