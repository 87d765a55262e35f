"""vfio-user-conformance compare: the differing cases of several runs, in text and HTML."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag

import pytest
from reports_support import (  # noqa: F401 (browser: a fixture)
    browser,
    cli,
    differing,
    failing_run,
    reference_b_run,
    reference_run,
)

from pytest_vfiouser.report import _compare as compare


class _Matrix(HTMLParser):
    """Rows of the comparison's #matrix: case id, row class, and each cell's link."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}
        self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-case" in attrs:
            self._row = self.rows[attrs["data-case"]] = {
                "class": attrs["class"].split(),
                "links": [],
            }
        elif tag == "a" and self._row is not None:
            self._row["links"].append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None


def run_compare(tmp_path: Path, *runs, extra=()) -> tuple[str, _Matrix, Path]:
    out = tmp_path / "cmp" / "comparison.html"
    proc = cli(tmp_path, "compare", *(str(r.json_path) for r in runs), "--html", str(out), *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    matrix = _Matrix()
    matrix.feed(out.read_text())
    return proc.stdout, matrix, out


def text_differing(stdout: str) -> set[str]:
    """The case ids listed under "differing cases:" (after its header line)."""
    lines = (
        stdout.split("differing cases:\n", 1)[1].splitlines()[1:]
        if "differing cases:" in stdout
        else []
    )
    return {line.split()[0] for line in lines if line.startswith("  ")}


def test_two_profiles_of_the_reference_server(tmp_path: Path):
    a, b = reference_run(), reference_b_run()
    expected = differing(a, b)
    assert expected == {"device_info/reply-argsz"}  # baselined in b's profile, passes: FIXED
    stdout, matrix, out = run_compare(tmp_path, a, b)
    assert text_differing(stdout) == expected
    assert {case for case, row in matrix.rows.items() if "diff" in row["class"]} == expected
    assert set(matrix.rows) == {c["id"] for c in a.data["cases"]}
    assert f"{len(matrix.rows)} cases, 1 differ" in stdout
    assert re.search(r"^  device_info +8 +1$", stdout, re.M), stdout
    assert re.search(r"^  A  reference  ", stdout, re.M) and re.search(
        r"^  B  reference-b  ", stdout, re.M
    )
    # Differences first; every cell links to the case in its implementation's report.
    assert next(iter(matrix.rows)) == "device_info/reply-argsz"
    for case, row in matrix.rows.items():
        assert len(row["links"]) == 2
        for link, run in zip(row["links"], (a, b), strict=True):
            path, anchor = urldefrag(link)
            assert (out.parent / unquote(path)).resolve() == run.html_path.resolve()
            assert unquote(anchor) == case


def test_reference_against_the_script_server(tmp_path: Path):
    a, f = reference_run(), failing_run()
    expected = differing(a, f)
    assert {"device_info/pci-num-regions", "device_info/no-reset-flag-reset-refused"} <= expected
    stdout, matrix, _ = run_compare(tmp_path, a, f)
    assert text_differing(stdout) == expected
    assert {case for case, row in matrix.rows.items() if "diff" in row["class"]} == expected
    assert f"{len(expected)} differ" in stdout
    # Named by profile, else by the server's program.
    assert re.search(r"^  B  scriptserver\.py  ", stdout, re.M), stdout


def test_comparison_links_open_the_case(browser, tmp_path: Path):  # noqa: F811
    a, f = reference_run(), failing_run()
    _, _, out = run_compare(tmp_path, a, f)
    browser.get(out.as_uri())
    assert browser.find_element("id", "n-differ").text == str(len(differing(a, f)))
    cell = browser.find_element(
        "css selector", 'tr[data-case="device_info/pci-num-regions"] td[data-verdict="FAIL"] a'
    )
    cell.click()
    assert browser.current_url.startswith(f.html_path.as_uri())
    target = browser.find_element("id", "device_info/pci-num-regions")
    assert (
        target.find_element("xpath", "./ancestor::tbody")
        .find_element("css selector", ".col-verdict")
        .text
        == "FAIL"
    )


def test_names_are_disambiguated(tmp_path: Path):
    a = reference_run()
    copy = tmp_path / "again" / "conformance.json"
    copy.parent.mkdir()
    copy.write_text(a.json_path.read_text())
    runs = [compare.load(a.json_path), compare.load(copy)]
    compare.name_runs(runs)
    assert [r.name for r in runs] == ["reference (reports)", "reference (again)"]
    result = compare.compare(runs)
    assert not result.differing and len(result.rows) == len(a.data["cases"])


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    good = str(reference_run().json_path)
    (tmp_path / "notjson.json").write_text("{nope")
    (tmp_path / "other.json").write_text(json.dumps({"tests": []}))
    future = json.loads(reference_run().json_path.read_text())
    future["schema_version"] = 99
    (tmp_path / "future.json").write_text(json.dumps(future))
    out = tmp_path / "out.html"
    for name, message in (
        ("missing.json", "missing.json: no such file"),
        ("notjson.json", "notjson.json: not JSON (Expecting property name"),
        ("other.json", "other.json: not a pytest-vfiouser conformance report (no schema_version)"),
        ("future.json", "future.json: schema_version 99 is not supported"),
    ):
        assert compare.main([good, str(tmp_path / name), "--html", str(out)]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and not captured.out
        assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        compare.main([good])
    assert exc.value.code == 2 and "two or more JSON reports" in capsys.readouterr().err
    # Through the console script.
    proc = cli(tmp_path, "compare", good, "missing.json")
    assert proc.returncode == 2 and "error: missing.json: no such file" in proc.stderr


def test_fail_on_difference_and_common(tmp_path: Path, capsys: pytest.CaptureFixture):
    a, b = reference_run(), reference_b_run()
    assert compare.main([str(a.json_path), str(b.json_path), "--fail-on-difference"]) == 1
    assert compare.main([str(a.json_path), str(a.json_path), "--fail-on-difference"]) == 0
    capsys.readouterr()
    assert compare.main([str(a.json_path), str(failing_run().json_path), "--common"]) == 0
    assert "8 cases," in capsys.readouterr().out
