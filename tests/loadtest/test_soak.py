"""The soak report's summary line: drift and memory growth read off the windows."""

from __future__ import annotations

from loadtest.soak import summary


def test_summary_reports_drift_and_growth_over_the_second_half() -> None:
    line = summary([5.0, 9.5, 7.25, 8.0], [100.0, 110.0, 112.0, 118.0], 3, window=30.0)
    assert "3 errors" in line
    assert "5.0 ms in the first window, 8.0 ms in the last, 9.5 ms at worst" in line
    # (118 - 112) MiB over one 30 s window in the second half: 12 MiB a minute.
    assert "100 → 118 MiB (+12.0 MiB a minute" in line


def test_summary_of_one_window_has_no_growth_figure_to_divide_by_zero() -> None:
    assert "(+0.0 MiB a minute" in summary([4.0], [50.0], 0, window=60.0)
