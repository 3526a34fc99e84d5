"""The soak's verdict and summary: drift and memory growth read off the windows."""

from __future__ import annotations

from loadtest.report_rows import peak_row, soak_row
from loadtest.results import GeneratorCpu, PublishResult
from loadtest.stats import LatencySummary
from loadtest.sustained import SoakResult, SoakWindow, summary


def window_result(p95: float, *, achieved: float = 1000.0, errors: int = 0) -> PublishResult:
    return PublishResult(
        scenario="publish", kind=1, paid=False, offered_rate=1000.0, duration_s=30.0,
        connections=50, offered=30_000, sent=30_000, accepted=30_000, duplicates=0,
        achieved_rate=achieved, last_answer_after_s=30.0,
        latency_ms=LatencySummary(count=30_000, p50=p95 / 2, p95=p95, p99=p95 * 2),
        send_lag_ms=LatencySummary(), errors={"x": errors} if errors else {},
        error_count=errors, presign_s=1.0, warmup=None,
        generator=GeneratorCpu(cpu_s=1.0, wall_s=30.0, core_share=0.03),
    )  # fmt: skip


def soaked(p95s: list[float], rss: list[float | None], errors: int = 0) -> SoakResult:
    windows = [
        SoakWindow(i + 1, window_result(p95, errors=errors if i == 0 else 0), mib)
        for i, (p95, mib) in enumerate(zip(p95s, rss, strict=True))
    ]
    return SoakResult(
        scenario="soak", offered_rate=1000.0, window_s=30.0, start_rss_mib=90.0, windows=windows
    )


def test_summary_reports_drift_and_growth_over_the_second_half() -> None:
    line = summary(soaked([5.0, 9.5, 7.25, 8.0], [100.0, 110.0, 112.0, 118.0], errors=3))
    assert "3 errors" in line
    assert "5.0 ms in the first window, 8.0 ms in the last, 9.5 ms at worst" in line
    # (118 - 112) MiB over one 30 s window in the second half: 12 MiB a minute.
    assert "100 → 118 MiB (+12.0 MiB a minute" in line


def test_one_window_has_no_growth_figure_to_divide_by_zero() -> None:
    result = soaked([4.0], [50.0])
    assert result.rss_growth_mib_per_min is None
    assert "(+0.0 MiB a minute" in summary(result)


def test_the_soak_passes_only_flat_fast_and_complete() -> None:
    flat = soaked([4.0, 5.0, 4.5, 4.8], [200.0, 210.0, 210.5, 211.0])
    assert soak_row(flat)[5] == "**pass**"
    growing = soak_row(soaked([4.0, 5.0, 4.5, 4.8], [200.0, 210.0, 230.0, 260.0]))
    assert "FAIL" in growing[5]  # 60 MiB a minute over the second half
    slow = soak_row(soaked([4.0, 5.0, 14.0, 4.8], [200.0, 210.0, 210.5, 211.0]))
    assert "FAIL" in slow[5]  # one window over 10 ms p95 is drift, whatever the rest did
    failed = soak_row(soaked([4.0, 5.0, 4.5, 4.8], [200.0, 210.0, 210.5, 211.0], errors=1))
    assert "FAIL" in failed[5]
    unmeasured = soak_row(soaked([4.0, 5.0], [200.0, None]))
    assert "FAIL" in unmeasured[5]  # memory that could not be read is not flat memory


def test_the_peak_row_judges_keeping_up_and_names_the_latency_aim() -> None:
    kept = peak_row(window_result(14.0))
    assert "pass" in kept[5] and "not met" in kept[4]
    assert "met)" in peak_row(window_result(8.0))[4]
    assert "FAIL" in peak_row(window_result(8.0, achieved=900.0))[5]
