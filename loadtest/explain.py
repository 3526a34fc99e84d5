"""EXPLAIN (ANALYZE, BUFFERS) of the relay's own SQL for every query shape.

The SQL comes from `cluster.store.sql.build_select` and runs with the relay's session options,
so these are the plans the relay gets. PostgreSQL's JSON plan is decoded into Structs (only the
keys read here).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import msgspec
import psycopg
from psycopg import ClientCursor

from cluster.nostr.filters import FilterLimits, parse_filter
from cluster.store.pool import SESSION_OPTIONS
from cluster.store.sql import build_select
from loadtest.files import FillManifest
from loadtest.filters import QUERY_SHAPES, make_filter


class PlanNode(msgspec.Struct, kw_only=True):
    node_type: str = msgspec.field(default="", name="Node Type")
    relation_name: str | None = msgspec.field(default=None, name="Relation Name")
    index_name: str | None = msgspec.field(default=None, name="Index Name")
    rows_removed_by_filter: float = msgspec.field(default=0, name="Rows Removed by Filter")
    rows_removed_by_recheck: float = msgspec.field(default=0, name="Rows Removed by Index Recheck")
    shared_hit_blocks: int = msgspec.field(default=0, name="Shared Hit Blocks")
    shared_read_blocks: int = msgspec.field(default=0, name="Shared Read Blocks")
    actual_rows: float | None = msgspec.field(default=None, name="Actual Rows")
    plans: list[PlanNode] = msgspec.field(default_factory=list, name="Plans")

    def walk(self) -> Iterator[PlanNode]:
        yield self
        for child in self.plans:
            yield from child.walk()


class PlanDocument(msgspec.Struct, kw_only=True):
    plan: PlanNode = msgspec.field(default_factory=PlanNode, name="Plan")
    execution_time: float | None = msgspec.field(default=None, name="Execution Time")
    planning_time: float | None = msgspec.field(default=None, name="Planning Time")


class ExplainRun(msgspec.Struct, kw_only=True):
    rows_removed: int
    blocks: int
    execution_ms: float | None
    indexes: list[str]
    seq_scan: bool
    nodes: list[str]


class ExplainShape(msgspec.Struct, kw_only=True):
    """A few EXPLAIN ANALYZE samples of one shape: timing, indexes and the plan's nodes."""

    execution_ms_median: float
    execution_ms_max: float
    indexes: list[str]
    seq_scan: bool
    plan: str
    rows_removed_max: int
    blocks_max: int


def explain_run(document: PlanDocument) -> ExplainRun:
    nodes = list(document.plan.walk())
    top = document.plan
    return ExplainRun(
        rows_removed=int(sum(n.rows_removed_by_filter + n.rows_removed_by_recheck for n in nodes)),
        blocks=top.shared_hit_blocks + top.shared_read_blocks,
        execution_ms=document.execution_time,
        indexes=sorted({n.index_name for n in nodes if n.index_name}),
        seq_scan=any(n.node_type == "Seq Scan" and n.relation_name == "events" for n in nodes),
        nodes=[n.node_type for n in nodes],
    )


def summarize_runs(runs: list[ExplainRun]) -> ExplainShape:
    times = sorted(r.execution_ms or 0.0 for r in runs)
    return ExplainShape(
        execution_ms_median=round(times[len(times) // 2], 3),
        execution_ms_max=round(times[-1], 3),
        indexes=sorted({i for r in runs for i in r.indexes}),
        seq_scan=any(r.seq_scan for r in runs),
        plan=" → ".join(runs[0].nodes),
        rows_removed_max=max(r.rows_removed for r in runs),
        blocks_max=max(r.blocks for r in runs),
    )


def explain_shapes(
    database_url: str, manifest: FillManifest, samples: int = 3
) -> dict[str, ExplainShape]:
    """EXPLAIN (ANALYZE, BUFFERS) the relay's own SQL (build_select) for every query shape."""
    rng = random.Random(3)
    out: dict[str, ExplainShape] = {}
    with psycopg.connect(
        database_url,
        cursor_factory=ClientCursor,
        autocommit=True,
        options=SESSION_OPTIONS,  # the relay's own session settings, so its own plans
    ) as conn:
        for shape in QUERY_SHAPES:
            runs = []
            for _ in range(samples):
                flt = parse_filter(make_filter(shape, manifest, rng), FilterLimits())
                sql, params = build_select([flt], int(time.time()))
                with conn.cursor() as cur:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
                    row = cur.fetchone()
                document = msgspec.convert(row[0][0] if row else {}, PlanDocument)
                runs.append(explain_run(document))
            out[shape] = summarize_runs(runs)
    return out
