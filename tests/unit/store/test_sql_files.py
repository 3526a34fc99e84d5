"""The layout rule of cluster/store/migrations.py, checked on the shipped SQL files."""

from __future__ import annotations

import re

from cluster.store.migrations import available_functions, available_migrations

_DEFINES = re.compile(r"^\s*CREATE\s+(OR\s+REPLACE\s+)?FUNCTION\s+(\w+)", re.I | re.M)
# Functions a migration needs while it runs (its triggers name them): see migrations.py.
NEEDED_BY_MIGRATIONS = {
    4: {"relay_event_tags_added", "relay_event_tags_removed"},
    10: {"relay_archived_tags_added", "relay_archived_tags_removed", "relay_unarchive_duplicates"},
}


def test_each_function_file_defines_one_function_with_create_or_replace() -> None:
    names = []
    for function in available_functions():
        found = _DEFINES.findall(function.sql)
        assert len(found) == 1, f"{function.name}: one function per file, found {found}"
        (or_replace, name) = found[0]
        assert or_replace, f"{function.name}: write CREATE OR REPLACE FUNCTION (it runs every time)"
        names.append(name)
    assert len(set(names)) == len(names), names
    # What the save path calls is all there.
    assert {
        "relay_lock_key",
        "relay_is_deleted",
        "relay_apply_deletion",
        "relay_charge_claim",
        "relay_save_event",
        "relay_save_events",
    } <= set(names)


def test_migrations_define_only_the_functions_they_need_while_they_run() -> None:
    current = {name for f in available_functions() for _, name in _DEFINES.findall(f.sql)}
    for migration in available_migrations():
        defined = {name for _, name in _DEFINES.findall(migration.sql)}
        assert defined == NEEDED_BY_MIGRATIONS.get(migration.number, set()), migration.name
        assert defined <= current, f"{migration.name}: {defined - current} has no function file"


def test_migrations_are_numbered_without_gaps() -> None:
    numbers = [m.number for m in available_migrations()]
    assert numbers == list(range(1, len(numbers) + 1))
