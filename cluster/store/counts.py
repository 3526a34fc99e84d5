"""NIP-45 COUNT in PostgreSQL: exact counts, HyperLogLog registers, and estimates.

Three answers, by the shape of the filters:

- One filter with one tag value (reactions `{"kinds":[7],"#e":[id]}`, followers
  `{"kinds":[3],"#p":[key]}`): the count and the 256 HLL registers in ONE statement. The tag
  B-tree (event_tags: tag value, time, id, INCLUDE kind) finds the rows and drops other kinds
  before any event is read; each event then gives its pubkey, and PostgreSQL folds the pubkeys
  into registers itself (GROUP BY the register byte, max of the value), so at most 256 rows come
  back whatever the count. Folding in SQL was measured against fetching the pubkeys and folding
  them in Python: docs/SEARCH-AND-COUNT.md.
- Filters with no selective field (no ids, authors, tags or search: `{}`, `{"kinds":[1]}`,
  `{"since":...}`) on a large table: the planner's row estimate, marked approximate (NIP-45
  allows it), instead of a scan of most of the table. Below EXACT_BELOW estimated rows the exact
  count is cheap, and is what the client gets.
- Everything else: the exact count of cluster/store/sql.py's build_count.

Large answers that were slow to compute (a viral note's reactions, a famous key's followers:
tens of thousands of rows, 50-400 ms) are kept for CACHE_SECONDS by CountCache, per worker:
the targets whose counts are expensive are the ones many clients ask for at once. Small
counts are never cached, so they are always current.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import msgspec
from psycopg import AsyncConnection

from cluster.nostr import hll
from cluster.nostr.filters import Filter
from cluster.store.archive import ArchiveScope
from cluster.store.search import DEFAULT_CONFIG
from cluster.store.sql import (
    ARCHIVE,
    LIVE,
    Tables,
    build_count,
    count_conditions,
    filter_conditions,
    reaches_archive,
    tag_driver,
)

EXACT_BELOW = 20_000
"""Estimated matches under which an unselective COUNT is counted exactly: an index-only count
of 20,000 rows takes a few milliseconds, the estimate one planning (~0.2 ms)."""


class CountAnswer(msgspec.Struct, frozen=True):
    """What a COUNT answers: NIP-45's `count`, `approximate` and `hll` fields."""

    count: int
    approximate: bool = False
    hll: bytes | None = None


CACHE_SECONDS = 30.0
"""How long a cached answer is served: a count that large moves little in that time."""
CACHE_MIN_COUNT = 1000
CACHE_MIN_SECONDS = 0.005
"""Only answers at least this large and this slow to compute are cached."""
CACHE_ENTRIES = 4096


class CountCache:
    """Expensive COUNT answers by (filters, hidden kinds, search configuration), LRU-bounded."""

    def __init__(self, seconds: float = CACHE_SECONDS, entries: int = CACHE_ENTRIES) -> None:
        self.seconds = seconds
        self.entries = entries
        self._answers: OrderedDict[Hashable, tuple[float, CountAnswer]] = OrderedDict()

    def get(self, key: Hashable, now: float) -> CountAnswer | None:
        found = self._answers.get(key)
        if found is None:
            return None
        if found[0] <= now:
            del self._answers[key]
            return None
        self._answers.move_to_end(key)
        return found[1]

    def put(self, key: Hashable, answer: CountAnswer, cost: float, now: float) -> None:
        """Keep `answer` if it is large and took `cost` seconds or more to compute."""
        if answer.count < CACHE_MIN_COUNT or cost < CACHE_MIN_SECONDS:
            return
        self._answers[key] = (now + self.seconds, answer)
        self._answers.move_to_end(key)
        while len(self._answers) > self.entries:
            self._answers.popitem(last=False)


def is_unselective(flt: Filter) -> bool:
    """No field that an index narrows to a small part of the table."""
    return flt.ids is None and flt.authors is None and not flt.tags and flt.search is None


def _hidden(where: str, params: list[Any], kinds: frozenset[int]) -> tuple[str, list[Any]]:
    if not kinds:
        return where, params
    return f"{where} AND kind <> ALL(%s::integer[])", [*params, sorted(kinds)]


def register_value_sql(offset: int) -> str:
    """NIP-45's register value of `pubkey` in SQL: 1 + the leading zero bits of the 7 bytes
    after the register byte (57 when all are zero), as cluster/nostr/hll.py register_of."""
    # substring() counts bytes from 1: the bytes after offset are offset+2 .. offset+8.
    bits = f"('x' || encode(substring(pubkey FROM {offset + 2} FOR 7), 'hex'))::bit(56)"
    return f"coalesce(nullif(position(B'1' IN {bits}), 0), 57)"


def build_hll(
    flt: Filter,
    now: int,
    offset: int,
    hidden_kinds: frozenset[int] = frozenset(),
    search_config: str = DEFAULT_CONFIG,
    archive: ArchiveScope | None = None,
) -> tuple[str, list[Any]]:
    """(register, value, events) rows of one filter; their `events` sum to the count. A filter
    that reaches the archive folds both tiers' rows (an event is in one tier only)."""
    if not 8 <= offset <= 23:
        raise ValueError(f"NIP-45 offsets are 8..23, not {offset}")
    if reaches_archive(flt, now, archive):
        live, live_params = _tier_hll(flt, now, offset, hidden_kinds, search_config, LIVE)
        old, old_params = _tier_hll(flt, now, offset, hidden_kinds, search_config, ARCHIVE)
        sql = (
            f"SELECT register, max(value), sum(events)::bigint FROM (({live}) UNION ALL ({old}))"
            " AS tiers(register, value, events) GROUP BY 1"
        )
        return sql, [*live_params, *old_params]
    return _tier_hll(flt, now, offset, hidden_kinds, search_config, LIVE)


def _tier_hll(
    flt: Filter,
    now: int,
    offset: int,
    hidden_kinds: frozenset[int],
    search_config: str,
    tables: Tables,
) -> tuple[str, list[Any]]:
    select = f"SELECT get_byte(pubkey, {offset}), max({register_value_sql(offset)}), count(*)"
    driver = tag_driver(flt)
    if driver is None or len(driver) != 1:
        where, params = _hidden(*count_conditions(flt, now, search_config, tables), hidden_kinds)
        return f"{select} FROM {tables.events} WHERE {where} GROUP BY 1", params
    # The event_tags row proves the tag: the events' tagvalues need no recheck.
    untagged = msgspec.structs.replace(flt, tags=())
    where, params = _hidden(
        *filter_conditions(untagged, now, search_config=search_config), hidden_kinds
    )
    tag_where, tag_params = "", list[Any]()
    if flt.kinds is not None:
        tag_where += " AND event_kind = ANY(%s::integer[])"
        tag_params.append(sorted(flt.kinds))
    if flt.since is not None:
        tag_where += " AND event_created_at >= %s"
        tag_params.append(flt.since)
    if flt.until is not None:
        tag_where += " AND event_created_at <= %s"
        tag_params.append(flt.until)
    sql = (
        f"{select} FROM {tables.tags} JOIN {tables.events} ON id = event_id"
        f" WHERE tagvalue = %s{tag_where} AND {where} GROUP BY 1"
    )
    return sql, [driver[0], *tag_params, *params]


def build_estimate(
    filters: Sequence[Filter],
    now: int,
    hidden_kinds: Sequence[frozenset[int]],
    archive: ArchiveScope | None = None,
) -> tuple[str, list[Any]]:
    """EXPLAIN of the union of the filters: its top row estimate is the approximate count
    (of both tiers, added up by the Append, when a filter reaches the archive)."""
    parts: list[str] = []
    params: list[Any] = []
    for flt, kinds in zip(filters, hidden_kinds, strict=True):
        where, filter_params = _hidden(*filter_conditions(flt, now), kinds)
        parts.append(f"({where})")
        params.extend(filter_params)
    sql = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM events WHERE {' OR '.join(parts)}"
    if any(reaches_archive(flt, now, archive) for flt in filters):
        sql += f" UNION ALL SELECT 1 FROM {ARCHIVE.events} WHERE {' OR '.join(parts)}"
        params = [*params, *params]
    return sql, params


async def count_events(
    conn: AsyncConnection[Any],
    filters: Sequence[Filter],
    now: int,
    hidden_kinds: Sequence[frozenset[int]] | None = None,
    search_config: str = DEFAULT_CONFIG,
    archive: ArchiveScope | None = None,
) -> CountAnswer:
    """The COUNT answer for `filters` (without the kinds `hidden_kinds[i]` hides from filter
    i), on one connection: one statement, or an EXPLAIN and at most one more. `archive`: the
    archive tier's scope (None: nothing archived)."""
    hidden = list(hidden_kinds) if hidden_kinds is not None else [frozenset()] * len(filters)
    usable = [(flt, kinds) for flt, kinds in zip(filters, hidden, strict=True) if flt.can_match]
    if not usable:
        return CountAnswer(0)
    target = hll.hll_target(filters)
    if target is not None and len(usable) == 1:
        offset = hll.offset_for(target)
        sql, params = build_hll(usable[0][0], now, offset, usable[0][1], search_config, archive)
        cursor = await conn.execute(sql.encode(), params)
        registers = bytearray(hll.REGISTERS)
        total = 0
        for register, value, events in await cursor.fetchall():
            registers[register] = value
            total += events
        return CountAnswer(total, hll=bytes(registers))
    if any(is_unselective(flt) for flt, _ in usable):
        sql, params = build_estimate([f for f, _ in usable], now, [k for _, k in usable], archive)
        cursor = await conn.execute(sql.encode(), params)
        row = await cursor.fetchone()
        estimated = int(row[0][0]["Plan"]["Plan Rows"]) if row else 0
        if estimated >= EXACT_BELOW:
            return CountAnswer(estimated, approximate=True)
    sql, params = build_count(
        [f for f, _ in usable],
        now,
        [k for _, k in usable],
        search_config=search_config,
        archive=archive,
    )
    cursor = await conn.execute(sql.encode(), params)
    row = await cursor.fetchone()
    return CountAnswer(int(row[0]) if row else 0)
