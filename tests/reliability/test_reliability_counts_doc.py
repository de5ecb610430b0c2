"""docs/reliability.md's counts table is generated from a run (HASTE_RELIABILITY_DOC), and
a count nothing measured reads "not measured", never 0."""

from __future__ import annotations

from collections import Counter

from conftest import DOC_ROWS, REPO, counts_doc, record_input

DOC = REPO / "docs" / "reliability.md"


def test_the_doc_has_one_generated_row_per_count() -> None:
    text = DOC.read_text()
    labels = [line.split(" | ")[0].removeprefix("| ") for line in text.splitlines()]
    assert [label for label in labels if label in DOC_ROWS] == list(DOC_ROWS)
    assert counts_doc(text, {}, 0, 0).count("| not measured |") == len(DOC_ROWS)


def test_a_run_writes_its_counts_and_leaves_unmeasured_ones_unmeasured() -> None:
    text = DOC.read_text()
    out = counts_doc(text, {"faults_injected": 3, "rows_lost": 0}, 12, 34.4)
    assert "| faults injected | **3** |" in out and "| rows lost | **0** |" in out
    assert "| duplicates | not measured |" in out  # not 0: nothing looked for duplicates
    assert counts_doc(out, {"faults_injected": 3, "rows_lost": 0}, 12, 34.4) == out
    if "passed in" in text:
        assert "**12 passed in 34 s**" in out


def test_a_repeated_input_is_counted_once() -> None:
    tally: Counter[str] = Counter()  # its own tally and set: the suite's count is untouched
    seen: set[tuple[str, str]] = set()
    record_input(tally, "probe", b"same bytes", seen)
    record_input(tally, "probe", b"same bytes", seen)
    record_input(tally, "probe", b"other bytes", seen)
    record_input(tally, "other kind", b"same bytes", seen)
    assert tally["inputs_tried"] == 3
