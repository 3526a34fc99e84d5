"""The bench report's abuse section: present with its figures when the suite ran, else absent."""

from __future__ import annotations

from loadtest.abuse import AbuseResult, LegitResult, PhaseResult
from loadtest.record import BenchResults
from loadtest.report import abuse
from loadtest.stats import LatencySummary


def phase(name: str, ok_p95: float, lost: int) -> PhaseResult:
    figures = LatencySummary(count=10, p50=1.0, p95=ok_p95, p99=ok_p95 + 1, max=9.0, mean=2.0)
    legit = LegitResult(
        published=10,
        accepted=10,
        errors={},
        event_ok_s=figures,
        req_eose_ms=figures,
        delivery_ms=figures,
        lost_deliveries=lost,
    )
    return PhaseResult(
        name=name, duration_s=2, legit=legit, worker_rss_mib_max=123.4, worker_restarts=0
    )


def test_the_section_shows_both_phases_side_by_side() -> None:
    results = BenchResults()
    assert abuse(results) == []
    results.abuse = AbuseResult(
        target="ws://127.0.0.1:1",
        attackers=2,
        shapes=["count_flood", "slowloris"],
        phases=[phase("without attack", 4.2, 0), phase("with attack", 37.5, 3)],
    )
    text = "\n".join(abuse(results))
    assert "## Under attack" in text and "count_flood, slowloris" in text
    assert "| without attack | 1.0 / 4.2 / 5.2 |" in text
    assert "| with attack | 1.0 / 37.5 / 38.5 |" in text
    assert "| 3 | 123 | 0 |" in text  # lost, RSS, restarts
