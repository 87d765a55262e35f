"""The catalogues that map the spec to the cases, kept true to the suite and to the
coverage files their rows come from:

* conformance/statements-0.9.2.tsv: the statements spec 0.9.2 adds or changes, each with
  the server cases that check it (or why none can);
* conformance_client/obligations.tsv: the client's obligations, each with the client
  cases that check it (or why none can)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from scriptservers import cli

ROOT = Path(__file__).resolve().parents[1]
COVERAGE = Path(__file__).resolve().parents[2] / "shared" / "spec" / "coverage"
HEADER = ["id", "level", "cases", "note"]
LEVELS = {"MUST", "SHOULD", "MAY", "DESC"}


@dataclass(frozen=True)
class Catalogue:
    path: Path
    source: Path  # the coverage file of its rows
    prefix: str  # of the ids
    revision: str | None  # the source's rows of this revision only (None: all)
    collect: tuple[tuple[str, ...], ...]  # the suite's arguments: collections of its cases

    def rows(self) -> tuple[str, list[list[str]]]:
        """(the first line, the rows after the header line, as lists of fields)."""
        first, header, *lines = self.path.read_text(encoding="utf-8").splitlines()
        assert header.split("\t") == HEADER, header
        return first, [line.split("\t") for line in lines]

    def wanted(self) -> list[tuple[str, str]]:
        with self.source.open(encoding="utf-8", newline="") as f:
            return [
                (r["id"], r["level"])
                for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                if self.revision is None or r["revision"] == self.revision
            ]


CATALOGUES = {
    "statements-0.9.2": Catalogue(
        ROOT / "conformance" / "statements-0.9.2.tsv",
        COVERAGE / "server-statements.tsv",
        "N-",
        "0.9.2",
        (("--vfu-spec", "0.9.2"),),
    ),
    "client-obligations": Catalogue(
        ROOT / "conformance_client" / "obligations.tsv",
        COVERAGE / "client-obligations.tsv",
        "CL-",
        None,
        (("client", "--vfu-spec", "0.9.1"), ("client", "--vfu-spec", "0.9.2")),
    ),
}


@pytest.fixture(scope="module")
def case_ids(tmp_path_factory) -> dict[str, set[str]]:
    """The case ids each catalogue may name (without parametrization): the suite's
    collection, as the console script runs it (the client cases at both revisions)."""
    out: dict[str, set[str]] = {}
    for name, catalogue in CATALOGUES.items():
        out[name] = set()
        for args in catalogue.collect:
            proc = cli(
                tmp_path_factory.mktemp("collect"),
                *args,
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            *ids, count = proc.stdout.splitlines()
            assert re.fullmatch(rf"{len(ids)} cases( \(\d+ deselected\))?", count), count
            out[name] |= {i.split("[", 1)[0] for i in ids}
    return out


@pytest.mark.parametrize("name", sorted(CATALOGUES))
def test_the_catalogue_parses(name):
    """A comment line saying what the file is, then one row per statement: four fields, a
    known level, and cases or a note saying why there are none. A note is one short
    sentence; a row without cases must say why, so that an empty cell is never silent."""
    catalogue = CATALOGUES[name]
    first, rows = catalogue.rows()
    assert first.startswith("# ") and len(first) > 10, first
    assert rows, "the catalogue has no rows"
    for row in rows:
        assert len(row) == 4, row
        ident, level, cases, note = row
        assert ident.startswith(catalogue.prefix), row
        assert level in LEVELS, row
        assert cases.strip() or note.strip(), f"{ident}: neither cases nor a note"
        assert len(note) < 200, f"{ident}: the note is {len(note)} characters"
        assert "[" not in cases, f"{ident}: case ids without parametrization: {cases}"
    ids = [row[0] for row in rows]
    assert len(set(ids)) == len(ids), "a statement is listed twice"


@pytest.mark.parametrize("name", sorted(CATALOGUES))
def test_every_case_named_exists(case_ids, name):
    """A case renamed, removed or moved to another revision leaves the catalogue naming a
    check that does not run: each case id named is one the suite collects."""
    _, rows = CATALOGUES[name].rows()
    missing = {row[0]: sorted(set(row[2].split()) - case_ids[name]) for row in rows}
    missing = {ident: cases for ident, cases in missing.items() if cases}
    assert not missing, f"cases not collected: {missing}"


@pytest.mark.parametrize("name", sorted(CATALOGUES))
def test_the_rows_are_those_of_the_coverage_file(name):
    """The rows are the coverage file's, in its order, with its levels: a statement added
    there must be mapped here, one dropped there goes here too."""
    catalogue = CATALOGUES[name]
    if not catalogue.source.is_file():
        pytest.skip(f"the coverage file is not there: {catalogue.source}")
    wanted = catalogue.wanted()
    assert wanted, f"{catalogue.source} has no rows for this catalogue"
    _, rows = catalogue.rows()
    assert [(row[0], row[1]) for row in rows] == wanted
