"""The batch save's named columns: built from requests, equal to the SQL function's signature."""

from __future__ import annotations

import re
from dataclasses import fields
from importlib import resources
from typing import get_args, get_type_hints

from cluster.nostr.signing import Signer
from cluster.store.charges import Charge
from cluster.store.writer import (
    EVENT_ROW_COLUMNS,
    SAVE_BATCH_SQL,
    SaveColumns,
    SaveRequest,
    SqlArray,
    event_row,
    save_columns,
)

CHARGE = Charge("chan", 7, 10, "BTC", "ab" * 33, 1000, 2_000_000_000, "OPEN")


def function_parameters(name: str) -> list[tuple[str, str]]:
    """(name, type) of each parameter of `name` in cluster/store/functions/, in order."""
    for entry in resources.files("cluster.store").joinpath("functions").iterdir():
        text = entry.read_text()
        match = re.search(rf"CREATE OR REPLACE FUNCTION {name}\((.*?)\) RETURNS", text, re.S)
        if match:
            pairs = [parameter.split() for parameter in match[1].split(",")]
            return [(pair[0], pair[1]) for pair in pairs]
    raise AssertionError(f"{name} is in no function file")


def test_columns_are_the_sql_function_parameters_in_order_with_their_types() -> None:
    hints = get_type_hints(SaveColumns, include_extras=True)
    columns = []
    for column in fields(SaveColumns):
        (array,) = [m for m in get_args(hints[column.name]) if isinstance(m, SqlArray)]
        columns.append((f"p_{column.name}", f"{array.element}[]"))
    assert columns == function_parameters("relay_save_events")


def test_the_statement_binds_every_column_by_name_once_in_binary() -> None:
    names = [column.name for column in fields(SaveColumns)]
    assert re.findall(r"p_(\w+) => %\((\w+)\)b::", SAVE_BATCH_SQL) == [(n, n) for n in names]
    assert "%s" not in SAVE_BATCH_SQL and "%b," not in SAVE_BATCH_SQL


def test_ragged_lists_are_flattened_with_a_count_per_event() -> None:
    alice, bob = Signer(), Signer()
    note = alice.sign(1, "hi", [["t", "x"], ["p", bob.pubkey], ["t", "x"], ["expiration", "99"]])
    profile = alice.sign(0, "{}")
    target = "cd" * 32
    deletion = alice.sign(
        5,
        "",
        [["e", target], ["a", f"0:{alice.pubkey}:"], ["a", f"0:{bob.pubkey}:"], ["e", "short"]],
    )
    paid = SaveRequest(note, "raw-note", CHARGE)
    columns = save_columns([paid, SaveRequest(profile, "raw-profile"), SaveRequest(deletion, "d")])

    assert columns.ids == [bytes.fromhex(e.id) for e in (note, profile, deletion)]
    assert columns.pubkeys == [bytes.fromhex(alice.pubkey)] * 3
    assert columns.kinds == [1, 0, 5]
    assert columns.addresses == [None, f"0:{alice.pubkey}:", None]
    assert columns.expires_at == [99, None, None]
    assert columns.raws == ["raw-note", "raw-profile", "d"]
    assert columns.tag_counts == [len(note.indexed_tags()), 0, len(deletion.indexed_tags())]
    assert columns.tagvalues == [*note.indexed_tags(), *deletion.indexed_tags()]
    # Only the deletion names targets, and only its author's own address survives.
    assert columns.delete_id_counts == [0, 0, 1]
    assert columns.delete_ids == [target]
    assert columns.delete_address_counts == [0, 0, 1]
    assert columns.delete_addresses == [f"0:{alice.pubkey}:"]
    # The charge travels with the paid event only.
    assert columns.channels == ["chan", None, None]
    assert columns.nonces == [7, None, None]
    assert columns.amounts == [10, None, None]
    assert columns.blockchains == ["BTC", None, None]
    assert columns.sender_pubkeys == ["ab" * 33, None, None]
    assert columns.capacities == [1000, None, None]
    assert columns.expirations == [2_000_000_000, None, None]
    assert columns.statuses == ["OPEN", None, None]
    # Every per-event array has one element per event; flattened ones match their counts.
    per_event = {name: len(value) for name, value in columns.parameters().items()}
    flat = {"tagvalues": "tag_counts", "delete_ids": "delete_id_counts"}
    flat["delete_addresses"] = "delete_address_counts"
    for name, count in flat.items():
        assert per_event.pop(name) == sum(getattr(columns, count))
    assert set(per_event.values()) == {3}


def test_text_postgresql_cannot_hold_is_made_storable() -> None:
    """NUL cannot live in a PostgreSQL text value; pg_text maps it (cluster/store/text.py)."""
    event = Signer().sign(30001, "", [["d", "x\u0000y"], ["t", "a\u0000b"]])
    row = event_row(event, "raw")
    assert row.address is not None and "\u0000" not in row.address
    assert all("\u0000" not in value for value in row.tagvalues)
    assert save_columns([SaveRequest(event, "raw")]).addresses == [row.address]


def test_event_rows_name_the_events_table_columns() -> None:
    event = Signer().sign(1, "x", [["e", "ab" * 32]])
    row = event_row(event, "the raw json")
    assert EVENT_ROW_COLUMNS == "id, pubkey, created_at, kind, address, expires_at, tagvalues, raw"
    assert row == (
        bytes.fromhex(event.id),
        bytes.fromhex(event.pubkey),
        event.created_at,
        1,
        None,
        None,
        [f"e:{'ab' * 32}"],
        "the raw json",
    )
