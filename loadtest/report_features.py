"""docs/PERFORMANCE.md's "Sync, search, counts and import" section (loadtest/bench_features.py)."""

from __future__ import annotations

from loadtest.bench_features import FeaturesResult, ImportRun

Lines = list[str]


def _negentropy(result: FeaturesResult) -> Lines:
    found = result.negentropy
    if found is None:
        return []
    lines = [
        "**NIP-77 reconciliation** (in memory, cluster/nostr/negentropy.py on both sides: "
        "two sets sharing 99%, timestamps spread over as many seconds as items; "
        "`loadtest/bench_negentropy.py`):",
        "",
        "| items per side | differing | build both (s) | reconcile, 60,000-byte frames (s) "
        "| rounds | MB exchanged | no frame limit (s) | rounds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in found.rows:
        lines.append(
            f"| {row.size:,} | {row.differing:,} | {row.build_s:.2f} | {row.framed_s:.2f} | "
            f"{row.framed_rounds} | {row.framed_mb:.1f} | {row.unframed_s:.2f} | "
            f"{row.unframed_rounds} |"
        )
    if all(row.size != found.wanted for row in found.rows):
        lines += ["", f"The {found.wanted:,}-item run was left out: the smaller one predicted "
                  f"{found.predicted_s:g} s, over the {found.budget_s:g} s budget."]  # fmt: skip
    return [*lines, ""]


def _run(label: str, run: ImportRun) -> str:
    outcomes = ", ".join(f"{name} {count:,}" for name, count in run.outcomes.items())
    return (
        f"| {label} | {run.seconds:.1f} | **{run.events_per_s:,.0f}** | {run.cpu_s:.1f} | "
        f"{', '.join(str(x) for x in run.loadavg)} | {outcomes} |"
    )


def _imported(result: FeaturesResult) -> Lines:
    found = result.imported
    if found is None:
        return []
    return [
        f"**`relay-cluster import`** of {found.events:,} signed events ({found.megabytes:g} MB "
        "of JSON lines from `loadtest/signed_jsonl.py`: 96% notes and reactions, 3% profiles, "
        "follow lists and articles that later lines replace, 1% NIP-09 deletions) into an "
        "empty migrated database, the command timed from outside (process start and its "
        "verifying processes included); then the same file again:",
        "",
        "| run | seconds | events/s | CPU s (command + workers) | load average before | outcomes |",
        "|---|---:|---:|---:|---|---|",
        _run("first", found.first),
        _run("again (idempotent)", found.again),
        "",
    ]


def _counts(result: FeaturesResult) -> Lines:
    found = result.counts
    if found is None:
        return []
    lines = [
        f"**COUNT (NIP-45) and search (NIP-50)** through one relay (`relay-cluster serve`, one "
        f"worker, search enabled) on {found.events:,} events generated inside PostgreSQL "
        f"(`loadtest/bench_counts.py`: generated, indexed and analysed in {found.fill_s:g} s, "
        f"of which the search index {found.index_s:g} s); one client, {found.rounds} round "
        "trips per shape after a cold one, milliseconds:",
        "",
        "| shape | cold | p50 | p95 | max | answer |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in found.rows:
        lines.append(
            f"| {row.shape} | {row.cold_ms:.1f} | {row.p50_ms:.2f} | {row.p95_ms:.2f} | "
            f"{row.max_ms:.2f} | {row.answer} |"
        )
    return [*lines, ""]


def features_section(result: FeaturesResult | None) -> Lines:
    if result is None:
        return []
    return [
        "## Sync, search, counts and import",
        "",
        f"Measured once the cluster's scenarios are over (its processes stopped), on the same "
        f"machine, in {result.elapsed_s:.0f} s (`--skip-features` leaves this out, "
        "`--only-features` runs only this); details and earlier runs in docs/SYNC.md, "
        "docs/SEARCH-AND-COUNT.md and docs/OPERATIONS.md (Export and import).",
        "",
        *_negentropy(result),
        *_imported(result),
        *_counts(result),
        *(f"- failed: {failure}" for failure in result.failures),
        *([""] if result.failures else []),
    ]
