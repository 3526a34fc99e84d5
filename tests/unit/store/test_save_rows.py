"""The batch save's named rows: built from requests, equal to the SQL composite type."""

from __future__ import annotations

import re
from importlib import resources

import msgspec

from cluster.nostr.signing import Signer
from cluster.store.charges import Charge
from cluster.store.writer import (
    EVENT_ROW_COLUMNS,
    SAVE_BATCH_SQL,
    SaveRequest,
    SaveRow,
    event_row,
    save_batch,
    save_row,
)

CHARGE = Charge("chan", 7, 10, "BTC", "ab" * 33, 1000, 2_000_000_000, "OPEN")


def composite_type(name: str) -> list[tuple[str, str]]:
    """(field, type) of `CREATE TYPE name AS (...)` in cluster/store/migrations/, in order."""
    for entry in resources.files("cluster.store").joinpath("migrations").iterdir():
        text = re.sub(r"--[^\n]*", "", entry.read_text())
        match = re.search(rf"CREATE TYPE {name} AS \((.*?)\);", text, re.S)
        if match:
            return [tuple(field.split()) for field in match[1].split(",")]  # type: ignore[misc]
    raise AssertionError(f"{name} is in no migration")


def test_row_fields_are_the_sql_type_fields_in_order() -> None:
    sql = composite_type("relay_save_row")
    fields = msgspec.structs.fields(SaveRow)
    assert [name for name, _ in sql] == [field.name for field in fields]
    for (name, sql_type), field in zip(sql, fields, strict=True):
        text = repr(field.type)
        expected = "text[]" if "list" in text else "text" if "str" in text else "bigint|integer"
        assert re.fullmatch(expected.replace("[", r"\[").replace("]", r"\]"), sql_type), name


def test_the_statement_takes_the_batch_as_one_json_parameter() -> None:
    assert SAVE_BATCH_SQL == "SELECT relay_save_events(%s::json)"


def test_rows_carry_every_event_field_the_rules_need() -> None:
    alice, bob = Signer(), Signer()
    note = alice.sign(1, "hello", [["t", "nostr"], ["p", bob.pubkey], ["expiration", "99"]])
    profile = alice.sign(0, "{}")
    target = "cd" * 32
    deletion = alice.sign(
        5,
        "",
        [["e", target], ["a", f"0:{alice.pubkey}:"], ["a", f"0:{bob.pubkey}:"], ["e", "short"]],
    )
    rows = [
        save_row(SaveRequest(note, "raw-note", CHARGE)),
        save_row(SaveRequest(profile, "raw-profile")),
        save_row(SaveRequest(deletion, "d")),
    ]
    assert [row.id for row in rows] == [note.id, profile.id, deletion.id]
    assert [row.kind for row in rows] == [1, 0, 5]
    assert [row.address for row in rows] == [None, f"0:{alice.pubkey}:", None]
    assert [row.expires_at for row in rows] == [99, None, None]
    assert [row.raw for row in rows] == ["raw-note", "raw-profile", "d"]
    assert rows[0].tagvalues == note.indexed_tags()
    # Only the deletion names targets, and only its author's own address survives.
    assert [row.delete_ids for row in rows] == [[], [], [target]]
    assert [row.delete_addresses for row in rows] == [[], [], [f"0:{alice.pubkey}:"]]
    # The charge travels with the paid event only.
    paid = rows[0]
    assert (paid.channel, paid.nonce, paid.amount, paid.blockchain) == ("chan", 7, 10, "BTC")
    assert (paid.sender_pubkey, paid.capacity, paid.expiration, paid.status) == (
        "ab" * 33,
        1000,
        2_000_000_000,
        "OPEN",
    )
    assert all(getattr(rows[1], name) is None for name in ("channel", "nonce", "status"))


def test_the_batch_is_a_json_array_of_named_rows() -> None:
    event = Signer().sign(1, 'quote " and \\ backslash')
    decoded = msgspec.json.decode(save_batch([SaveRequest(event, '{"raw": "\\u0000"}')]))
    assert isinstance(decoded, list) and len(decoded) == 1
    assert decoded[0]["id"] == event.id and decoded[0]["raw"] == '{"raw": "\\u0000"}'
    assert list(decoded[0]) == [field.name for field in msgspec.structs.fields(SaveRow)]


def test_text_postgresql_cannot_hold_is_made_storable() -> None:
    """NUL cannot live in a PostgreSQL text value; pg_text maps it (cluster/store/text.py)."""
    event = Signer().sign(30001, "", [["d", "x\u0000y"], ["t", "a\u0000b"]])
    row = event_row(event, "raw")
    assert row.address is not None and "\u0000" not in row.address
    assert all("\u0000" not in value for value in row.tagvalues)
    assert save_row(SaveRequest(event, "raw")).address == row.address
    assert "\\u0000" not in save_batch([SaveRequest(event, "raw")])


def test_event_rows_name_the_events_table_columns() -> None:
    event = Signer().sign(1, "x", [["e", "ab" * 32]])
    row = event_row(event, "the raw json")
    assert EVENT_ROW_COLUMNS == "id, pubkey, created_at, kind, address, expires_at, tagvalues, raw"
    assert row.id == bytes.fromhex(event.id) and row.raw == "the raw json"
