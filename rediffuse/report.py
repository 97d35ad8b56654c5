"""Render the results pages from the benchmark records in ``docs/results/``.

    python -m rediffuse.report            # rewrite the generated parts of the pages
    python -m rediffuse.report --check    # exit 1, naming each page that differs from its records

Every number in ``docs/results.md``, the model card (``rediffuse/weights/README.md``) and the README
that comes from a measurement lives in a JSON record under ``docs/results/`` (written by a benchmark's
``--json``, schema in ``benchmarks/_common.py``: command, date, machine, git commit, provenance,
tables, values). The pages keep their prose; only the parts between markers are generated:

- a table: ``<!-- results:RECORD/TABLE -->`` … ``<!-- /results:RECORD/TABLE -->`` becomes the table
  followed by a line naming the run (command, date, machine, commit) and, for a record carried over
  from an earlier page rather than rerun, its provenance. Options after the name: ``rows=a,b``,
  ``cols=x,y`` (ids and column keys, in that order) select part of the table; ``indent=N`` indents
  it (a table inside a list item).
- a number in prose: ``<!-- value:REF -->`` … ``<!-- /value -->`` where REF is
  ``RECORD[TABLE][ROW][COLUMN]`` or ``RECORD[VALUE]``, or a sum/difference of such terms
  (``a[t][r][c] - a[t][g][c]``), optionally followed by ``:FORMAT`` (a Python format spec;
  default: the column's format).
- ``<!-- results:index -->`` … ``<!-- /results:index -->``: every record with its command, date and
  provenance.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

from .paths import REPO_ROOT

__all__ = ["RESULTS_DIR", "TARGETS", "ReportError", "load_records", "render_table", "render_text",
           "render_files", "check", "main"]

RESULTS_DIR = REPO_ROOT / "docs" / "results"
#: the pages with generated parts, relative to the repository
TARGETS = ("docs/results.md", "rediffuse/weights/README.md", "README.md", "docs/stacks.md", "docs/speed.md")
REQUIRED = ("command", "date", "machine", "git", "provenance", "tables")

_BLOCK = re.compile(r"<!-- results:(?P<name>[^\s>]+)(?P<opts>[^>]*?) -->\n(?P<body>.*?)<!-- /results:(?P=name) -->",
                    re.S)
_VALUE = re.compile(r"<!-- value:(?P<expr>.+?) -->(?P<body>.*?)<!-- /value -->")
_REF = re.compile(r"(?P<record>[\w.-]+)(?P<keys>(?:\[[^\]]+\])+)")


class ReportError(ValueError):
    """A record or a marker that cannot be rendered; the message is one line naming the file."""


def _read_record(path: Path) -> dict:
    """One record, its required fields and table layout checked."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: not a readable JSON record ({e})") from None
    for key in REQUIRED:
        if key not in record:
            raise ReportError(f"{path}: missing field {key!r}")
    for name, table in record["tables"].items():
        for key in ("columns", "rows"):
            if key not in table:
                raise ReportError(f"{path}: table {name!r} has no {key!r}")
        for row in table["rows"]:
            if "id" not in row:
                raise ReportError(f"{path}: a row of table {name!r} has no 'id'")
            for col in table["columns"]:
                if col[0] not in row:
                    raise ReportError(f"{path}: table {name!r} row {row['id']!r} has no field {col[0]!r}")
    record["_path"] = path
    return record


def load_records(folder: str | os.PathLike = RESULTS_DIR) -> dict[str, dict]:
    """Every ``*.json`` record of ``folder`` by file stem."""
    return {p.stem: _read_record(p) for p in sorted(Path(folder).glob("*.json"))}


def format_value(value, fmt: str) -> str:
    """``value`` as the table prints it: empty for None/NaN, else ``format(value, fmt)``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    return format(value, fmt)


def _select(items: list, wanted: str | None, key, what: str, where: str) -> list:
    if not wanted:
        return items
    by_key = {key(x): x for x in items}
    missing = [w for w in wanted.split(",") if w not in by_key]
    if missing:
        raise ReportError(f"{where}: no {what} {', '.join(map(repr, missing))}")
    return [by_key[w] for w in wanted.split(",")]


def _options(opts: str) -> dict[str, str]:
    return dict(o.split("=", 1) for o in opts.split() if "=" in o)


def _link(record: dict, page: Path) -> str:
    return os.path.relpath(record["_path"], page.parent).replace(os.sep, "/")


def run_line(record: dict, page: Path) -> str:
    """What produced a table: command, date, machine, commit, provenance and the record's file."""
    commands = record["command"] if isinstance(record["command"], list) else [record["command"]]
    git = f"`{record['git']}`" + (" with uncommitted changes" if record.get("git_dirty") else "")
    line = (f"<sub>Run: {'; '.join(f'`{c}`' for c in commands)} · {record['date']} · {record['machine']} · "
            f"commit {git} · record [`{record['_path'].name}`]({_link(record, page)})")
    if record["provenance"] != "measured":
        line += f" · **{record['provenance']}**"
    return line + "</sub>"


def render_table(record: dict, table_name: str, page: Path, opts: str = "") -> str:
    """One table of ``record`` as Markdown, with its run line."""
    where = f"{record['_path']}"
    if table_name not in record["tables"]:
        raise ReportError(f"{where}: no table {table_name!r}")
    table, o = record["tables"][table_name], _options(opts)
    cols = _select(table["columns"], o.get("cols"), lambda c: c[0], "column", f"{where} table {table_name!r}")
    rows = _select(table["rows"], o.get("rows"), lambda r: r["id"], "row", f"{where} table {table_name!r}")
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(format_value(r[c[0]], c[2]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + run_line(record, page) + "\n"


def render_index(records: dict[str, dict], page: Path) -> str:
    """A table of every record: file, command(s), date, provenance."""
    lines = ["| record | command | date | provenance |", "|---|---|---|---|"]
    for rec in records.values():
        commands = rec["command"] if isinstance(rec["command"], list) else [rec["command"]]
        cmd = "<br>".join(f"`{c}`" for c in commands)
        lines.append(f"| [`{rec['_path'].name}`]({_link(rec, page)}) | {cmd} | {rec['date']} | {rec['provenance']} |")
    return "\n".join(lines) + "\n"


def _lookup(records: dict[str, dict], ref: str, where: str) -> tuple[float, str]:
    """The number a reference names and its column's format."""
    m = _REF.fullmatch(ref.strip())
    if not m or m["record"] not in records:
        raise ReportError(f"{where}: unknown reference {ref.strip()!r}")
    rec, keys = records[m["record"]], re.findall(r"\[([^\]]+)\]", m["keys"])
    if len(keys) == 1:
        if keys[0] not in rec.get("values", {}):
            raise ReportError(f"{rec['_path']}: no value {keys[0]!r} (asked for by {where})")
        return rec["values"][keys[0]], ""
    if len(keys) != 3:
        raise ReportError(f"{where}: {ref.strip()!r} needs [TABLE][ROW][COLUMN] or [VALUE]")
    table_name, row_id, col = keys
    table = rec["tables"].get(table_name)
    row = next((r for r in table["rows"] if r["id"] == row_id), None) if table else None
    fmt = next((c[2] for c in table["columns"] if c[0] == col), "") if table else ""
    if row is None or col not in row or row[col] is None:
        raise ReportError(f"{rec['_path']}: no number at [{table_name}][{row_id}][{col}] (asked for by {where})")
    return row[col], fmt


def render_value(records: dict[str, dict], expr: str, where: str) -> str:
    """The text of one value marker: a reference, or a sum/difference of references, formatted."""
    expr, _, fmt = expr.partition(" :")
    terms = re.split(r"\s+([+-])\s+", expr.strip())
    total, col_fmt = _lookup(records, terms[0], where)
    if len(terms) > 1 and isinstance(total, str):
        raise ReportError(f"{where}: {terms[0]!r} is text, not a number")
    for sign, term in zip(terms[1::2], terms[2::2]):
        value, _ = _lookup(records, term, where)
        total = total + value if sign == "+" else total - value
    return format_value(total, fmt.strip() or col_fmt)


def render_text(text: str, records: dict[str, dict], page: Path) -> str:
    """``text`` with every marked block and value regenerated from ``records``."""
    def block(m: re.Match) -> str:
        name, opts = m["name"], m["opts"]
        indent = " " * int(_options(opts).get("indent", 0))  # a table inside a list item
        if name == "index":
            body = render_index(records, page)
        else:
            rec_name, _, table_name = name.partition("/")
            if rec_name not in records:
                raise ReportError(f"{page}: marker names {rec_name!r}, which has no record in docs/results/")
            rec = records[rec_name]
            if not table_name:
                if len(rec["tables"]) != 1:
                    raise ReportError(f"{page}: {rec_name!r} has several tables; name one ({rec_name}/TABLE)")
                table_name = next(iter(rec["tables"]))
            body = render_table(rec, table_name, page, opts)
        body = "".join(indent + line if line.strip() else line for line in body.splitlines(True))
        return f"<!-- results:{name}{opts} -->\n{body}{indent}<!-- /results:{name} -->"

    text = _BLOCK.sub(block, text)
    return _VALUE.sub(lambda m: f"<!-- value:{m['expr']} -->{render_value(records, m['expr'], str(page))}"
                                "<!-- /value -->", text)


def render_files(root: str | os.PathLike = REPO_ROOT, targets=TARGETS,
                 results: str | os.PathLike | None = None) -> dict[Path, tuple[str, str]]:
    """``{page: (committed text, rendered text)}`` for each target page that exists."""
    root = Path(root)
    records = load_records(results if results is not None else root / "docs" / "results")
    out = {}
    for t in targets:
        page = root / t
        if page.is_file():
            old = page.read_text()
            out[page] = (old, render_text(old, records, page))
    return out


def check(root: str | os.PathLike = REPO_ROOT, targets=TARGETS) -> list[Path]:
    """The pages whose generated parts differ from what the records render."""
    return [p for p, (old, new) in render_files(root, targets).items() if old != new]


def main(argv: list[str] | None = None) -> int:
    """Command line: render the pages, or with ``--check`` only compare them."""
    ap = argparse.ArgumentParser(prog="python -m rediffuse.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is stale")
    ap.add_argument("pages", nargs="*", default=list(TARGETS), help="pages to render (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        rendered = render_files(REPO_ROOT, args.pages)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    stale = [p for p, (old, new) in rendered.items() if old != new]
    for page in stale:
        rel = page.relative_to(REPO_ROOT)
        if args.check:
            print(f"report: {rel} differs from what docs/results/ renders (run python -m rediffuse.report)",
                  file=sys.stderr)
        else:
            page.write_text(rendered[page][1])
            print(f"report: rewrote {rel}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
