"""conformance/statements-0.9.2.tsv: the statements spec 0.9.2 adds or changes, each with
the cases that check it (or why none can), kept true to the suite and to the coverage file
the statements come from."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from scriptservers import cli

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "conformance" / "statements-0.9.2.tsv"
COVERAGE = Path(__file__).resolve().parents[2] / "shared" / "spec" / "coverage"
STATEMENTS = COVERAGE / "server-statements.tsv"
REVISION = "0.9.2"
HEADER = ["id", "level", "cases", "note"]
LEVELS = {"MUST", "SHOULD", "MAY", "DESC"}


def _catalogue() -> tuple[list[str], list[list[str]]]:
    """(the first line, the rows after the header line, as lists of fields)."""
    first, header, *lines = CATALOGUE.read_text(encoding="utf-8").splitlines()
    assert header.split("\t") == HEADER, header
    return first, [line.split("\t") for line in lines]


@pytest.fixture(scope="module")
def case_ids(tmp_path_factory) -> set[str]:
    """The case ids at 0.9.2 (without parametrization), from one collection run of the
    suite as the console script runs it."""
    proc = cli(
        tmp_path_factory.mktemp("collect"),
        "--vfu-spec",
        REVISION,
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *ids, count = proc.stdout.splitlines()
    assert re.fullmatch(rf"{len(ids)} cases( \(\d+ deselected\))?", count), count
    return {i.split("[", 1)[0] for i in ids}


def test_the_catalogue_parses():
    """A comment line saying what the file is, then one row per statement: four fields, a
    known level, and cases or a note saying why there are none. A note is one short
    sentence; a row without cases must say why, so that an empty cell is never silent."""
    first, rows = _catalogue()
    assert first.startswith("# ") and len(first) > 10, first
    assert rows, "the catalogue has no rows"
    for row in rows:
        assert len(row) == 4, row
        ident, level, cases, note = row
        assert ident.startswith("N-"), row
        assert level in LEVELS, row
        assert cases.strip() or note.strip(), f"{ident}: neither cases nor a note"
        assert len(note) < 200, f"{ident}: the note is {len(note)} characters"
        assert "[" not in cases, f"{ident}: case ids without parametrization: {cases}"
    ids = [row[0] for row in rows]
    assert len(set(ids)) == len(ids), "a statement is listed twice"


def test_every_case_named_exists_at_0_9_2(case_ids):
    """A case renamed, removed or moved to another revision leaves the catalogue naming a
    check that does not run: each case id named is one the suite collects at 0.9.2."""
    _, rows = _catalogue()
    missing = {row[0]: sorted(set(row[2].split()) - case_ids) for row in rows}
    missing = {ident: cases for ident, cases in missing.items() if cases}
    assert not missing, f"cases not collected at {REVISION}: {missing}"


def test_the_statements_are_those_of_the_coverage_file():
    """The rows are the coverage file's 0.9.2 statements, in its order, with its levels: a
    statement added there must be mapped here, one dropped there goes here too."""
    if not STATEMENTS.is_file():
        pytest.skip(f"the coverage file is not there: {STATEMENTS}")
    with STATEMENTS.open(encoding="utf-8", newline="") as f:
        wanted = [
            (r["id"], r["level"])
            for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if r["revision"] == REVISION
        ]
    assert wanted, f"the coverage file has no {REVISION} statements"
    _, rows = _catalogue()
    assert [(row[0], row[1]) for row in rows] == wanted
