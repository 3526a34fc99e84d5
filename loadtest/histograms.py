"""The relays' own latency histograms: scraped from /metrics before and after a scenario.

The difference of two scrapes is the histogram of that scenario alone; its quantiles are read
the way Prometheus' `histogram_quantile` reads them (linear within the bucket).
"""

from __future__ import annotations

import math
import os
import urllib.request
from collections.abc import Sequence

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from loadtest.loopback import http_url
from loadtest.progress import log

Buckets = dict[float, float]
"""Cumulative bucket counts by upper bound (seconds)."""
Scrape = dict[tuple[str, str], Buckets]
"""(metric name, sorted labels without `le`) → buckets summed over instances."""


class HistogramSummary(msgspec.Struct, kw_only=True):
    """Quantiles in milliseconds of the observations between two scrapes."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


def parse_histograms(text: str, into: Scrape) -> None:
    """Add the histogram buckets of one /metrics page to `into`."""
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            labels = dict(sample.labels)
            le = float(labels.pop("le"))
            key = (family.name, ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
            buckets = into.setdefault(key, {})
            buckets[le] = buckets.get(le, 0.0) + sample.value


METRICS_TOKEN_ENV = "RELAY_NETWORK__METRICS_TOKEN"
"""/metrics is never open: the bench sends the token its cluster was given (loadtest/launch.py),
or the one in this variable for a relay it did not start."""


def metrics_auth() -> dict[str, str]:
    token = os.environ.get(METRICS_TOKEN_ENV, "")
    return {"Authorization": f"Bearer {token}"} if token else {}


def scrape(urls: Sequence[str]) -> Scrape:
    """Cumulative histogram buckets summed over instances (an unreachable one is logged)."""
    out: Scrape = {}
    for url in urls:
        try:
            request = urllib.request.Request(f"{http_url(url)}/metrics", headers=metrics_auth())
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read().decode()
        except OSError as exc:
            log(f"metrics: {url}: {exc}")
            continue
        parse_histograms(text, out)
    return out


def histogram_delta(before: Scrape, after: Scrape, name: str, labels: str = "") -> Buckets:
    now = after.get((name, labels), {})
    then = before.get((name, labels), {})
    return {le: count - then.get(le, 0.0) for le, count in now.items()}


def histogram_quantile(buckets: Buckets, q: float) -> float | None:
    """Prometheus' histogram_quantile (linear within the bucket), in milliseconds."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, lower_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return round(lower * 1000, 3)
            span = count - lower_count
            fraction = (rank - lower_count) / span if span else 1.0
            return round((lower + (le - lower) * fraction) * 1000, 3)
        lower, lower_count = le, count
    return None


def histogram_summary(buckets: Buckets) -> HistogramSummary:
    count = max(buckets.values()) if buckets else 0
    return HistogramSummary(
        count=int(count),
        p50=histogram_quantile(buckets, 0.50),
        p95=histogram_quantile(buckets, 0.95),
        p99=histogram_quantile(buckets, 0.99),
    )


def summary_between(before: Scrape, after: Scrape, name: str, labels: str = "") -> HistogramSummary:
    """The histogram of `name` over what happened between the two scrapes."""
    return histogram_summary(histogram_delta(before, after, name, labels))
