"""The results table's headroom column: p95 against its limit, and issue 12's half-the-limit bar."""

from __future__ import annotations

from loadtest.record import BenchResults
from loadtest.report_rows import headroom, results_rows
from tests.loadtest.test_soak import window_result


def test_headroom_marks_only_rows_at_or_under_half_their_limit() -> None:
    assert headroom(4.0, 10) == "40% (≤ 50%)"
    assert headroom(5.0, 10) == "50% (≤ 50%)"
    assert headroom(9.3, 10) == "93%"
    assert headroom(12.0, 10) == "120%"
    assert headroom(None, 10) == "-" and headroom(3.0, None) == "-"


def test_every_row_carries_the_column_before_the_tool() -> None:
    results = BenchResults(accept=window_result(4.6), sustained=window_result(8.0))
    rows = results_rows(results)
    assert [row[0] for row in rows] == [
        "Event acceptance, free kind (EVENT → OK)",
        "Sustained rate (EVENT → OK)",
    ]
    assert all(len(row) == 8 for row in rows)
    assert [row[6] for row in rows] == ["46% (≤ 50%)", "80%"]
    assert all(row[7] == "generator (asyncio)" for row in rows)
