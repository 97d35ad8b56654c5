"""The results pages are what their records render (``python -m rediffuse.report``), and the renderer
turns records into tables and prose numbers as documented."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rediffuse import report

ROOT = Path(__file__).resolve().parents[1]


def _record(**overrides) -> dict:
    rec = {"schema": 1, "command": "python benchmarks/bench_x.py --json docs/results/x.json",
           "date": "2026-12-07 14:00 UTC", "machine": "test CPU, 2 cores", "git": "abc1234", "git_dirty": False,
           "provenance": "measured",
           "tables": {"main": {"columns": [["method", "method", ""], ["QMI", "QMI", ".4f"], ["n", "pairs", ",d"]],
                               "rows": [{"id": "gff", "method": "gff", "QMI": 1.09741, "n": 1200},
                                        {"id": "ours", "method": "**ours**", "QMI": 1.18263, "n": 20}]}},
           "values": {"grey": 0.1254}}
    rec.update(overrides)
    return rec


@pytest.fixture
def site(tmp_path: Path):
    """A tiny repository: one record and one page with a table and two prose values."""
    (tmp_path / "docs" / "results").mkdir(parents=True)
    page = tmp_path / "docs" / "results.md"
    page.write_text("# Results\n\nProse kept.\n\n<!-- results:x/main -->\nold table\n<!-- /results:x/main -->\n\n"
                    "Ours leads by <!-- value:x[main][ours][QMI] - x[main][gff][QMI] :.3f -->?<!-- /value --> QMI, "
                    "and colours differ by <!-- value:x[grey] :.3f -->?<!-- /value --> levels.\n")
    _write(tmp_path, _record())
    return tmp_path


def _write(root: Path, rec: dict, name: str = "x") -> None:
    (root / "docs" / "results" / f"{name}.json").write_text(json.dumps(rec))


def _render(root: Path) -> str:
    (_, new), = report.render_files(root, ("docs/results.md",)).values()
    return new


def test_committed_pages_are_what_the_records_render():
    stale = report.check(ROOT)
    assert not stale, f"stale: {', '.join(str(p.relative_to(ROOT)) for p in stale)}; run python -m rediffuse.report"


def test_every_page_has_generated_tables():
    for page in ("docs/results.md", "rediffuse/weights/README.md"):
        assert "<!-- results:" in (ROOT / page).read_text(), page


def test_table_values_and_run_line(site: Path):
    out = _render(site)
    assert "Prose kept." in out
    assert "| method | QMI | pairs |\n|---|---|---|\n| gff | 1.0974 | 1,200 |\n| **ours** | 1.1826 | 20 |" in out
    assert "`python benchmarks/bench_x.py --json docs/results/x.json`" in out
    assert "2026-12-07 14:00 UTC" in out and "test CPU, 2 cores" in out and "`abc1234`" in out
    assert "[`x.json`](results/x.json)" in out
    assert "leads by <!-- value:x[main][ours][QMI] - x[main][gff][QMI] :.3f -->0.085<!-- /value --> QMI" in out
    assert "-->0.125<!-- /value --> levels" in out
    assert "transcribed" not in out


def test_a_changed_number_changes_the_table(site: Path):
    rec = _record()
    rec["tables"]["main"]["rows"][1]["QMI"] = 1.2
    _write(site, rec)
    out = _render(site)
    assert "| **ours** | 1.2000 | 20 |" in out and "-->0.103<!-- /value -->" in out


def test_rendering_is_stable_and_check_names_the_stale_page(site: Path):
    page = site / "docs" / "results.md"
    page.write_text(_render(site))
    assert report.check(site, ("docs/results.md",)) == []
    rec = _record()
    rec["tables"]["main"]["rows"][0]["QMI"] = 1.0
    _write(site, rec)
    assert report.check(site, ("docs/results.md",)) == [page]


def test_transcribed_records_say_so(site: Path):
    _write(site, _record(provenance="transcribed from abc1234 (not rerun)"))
    assert "**transcribed from abc1234 (not rerun)**" in _render(site)


def test_rows_and_columns_can_be_selected(site: Path):
    page = site / "docs" / "results.md"
    page.write_text("<!-- results:x/main rows=ours cols=method,n -->\n<!-- /results:x/main -->\n")
    out = _render(site)
    assert "| method | pairs |\n|---|---|\n| **ours** | 20 |\n" in out and "gff" not in out


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.pop("date"), "x.json: missing field 'date'"),
    (lambda r: r["tables"]["main"]["rows"][1].pop("QMI"), "x.json: table 'main' row 'ours' has no field 'QMI'"),
    (lambda r: r["tables"]["main"]["rows"][0].pop("id"), "x.json: a row of table 'main' has no 'id'"),
    (lambda r: r["values"].pop("grey"), "x.json: no value 'grey'"),
])
def test_a_missing_field_is_a_one_line_error(site: Path, breakage, message):
    rec = _record()
    breakage(rec)
    _write(site, rec)
    with pytest.raises(report.ReportError) as e:
        _render(site)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_marker_without_its_record_is_named(site: Path):
    (site / "docs" / "results.md").write_text("<!-- results:nothing/main -->\n<!-- /results:nothing/main -->\n")
    with pytest.raises(report.ReportError, match="'nothing', which has no record"):
        _render(site)


def test_command_line_check_exits_non_zero_and_names_the_file(site: Path, monkeypatch, capsys):
    monkeypatch.setattr(report, "REPO_ROOT", site)
    assert report.main(["--check", "docs/results.md"]) == 1
    assert "docs/results.md differs" in capsys.readouterr().err
    assert report.main(["docs/results.md"]) == 0
    assert report.main(["--check", "docs/results.md"]) == 0
