"""superjson payloads (as Dassie's RPC sends them) to and from plain Python values (pure).

A superjson payload is `{"json": <plain JSON>, "meta": {"values": <tree>, "v": 1,
"referentialEqualities": ...}}`; `meta` is absent when nothing needed annotating. The values tree
says which nodes of `json` were transformed and how:

- at the root, `["bigint"]` (the root itself) or `[type, {child paths: trees}]`;
- otherwise a dict from dotted paths to trees, e.g. `{"result.data.capacity": ["bigint"]}`;
  a leaf is `[type]`, a transformed container with annotated children is `[type, {...}]`
  (children paths are relative to that container, e.g. a map's `"0.1"` is row 0's value).
- path segments escape `\\` and `.` with a backslash (`v` = 1); without `v` (superjson < 1.12)
  only `\\.` is an escape.

Decoding maps the JavaScript types onto Python as follows (tests/unit/payments/test_superjson.py
checks it against output of the real library, superjson 2.2.6):

    bigint              -> int
    Date                -> datetime, timezone-aware UTC (JavaScript dates are instants)
    undefined           -> None (indistinguishable from null afterwards)
    number NaN/±Inf/-0  -> float
    set                 -> list, in insertion order (JSON-friendly; members may be unhashable)
    map                 -> dict when every key is hashable, else a list of [key, value] pairs
    regexp, URL         -> str, as serialised ("/ab+c/gi", "https://...")
    Error               -> dict {"name", "message", ...}
    typed-array         -> list of numbers
    class, custom, symbol -> the plain JSON value, unchanged

Encoding sends plain values: ints within ±(2**53-1) stay JSON numbers, larger ones (and any int
wrapped in `BigInt`) become `bigint`; datetime -> Date; set/frozenset -> set; NaN, ±inf and -0.0
-> number; tuples are arrays; msgspec Structs are converted to builtins first.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

MAX_SAFE_INTEGER = 2**53 - 1
_ISO_MILLIS = "%Y-%m-%dT%H:%M:%S"


class SuperjsonError(ValueError):
    """The payload is not valid superjson (bad shape, path or annotation)."""


class BigInt(int):
    """An int that must travel as a superjson `bigint` even when it would fit a JS number."""

    __slots__ = ()


# ---------------------------------------------------------------------------------------------
# decoding


def parse_path(path: str, legacy: bool = False) -> list[str]:
    """Split a superjson path on unescaped dots (superjson's `parsePath`)."""
    segments: list[str] = []
    segment = ""
    i = 0
    while i < len(path):
        char = path[i]
        nxt = path[i + 1] if i + 1 < len(path) else ""
        if char == "\\" and not legacy:
            if nxt not in ("\\", "."):
                raise SuperjsonError(f"invalid path {path!r}")
            segment += nxt
            i += 2
            continue
        if char == "\\" and nxt == ".":
            segment += "."
            i += 2
            continue
        if char == ".":
            segments.append(segment)
            segment = ""
        else:
            segment += char
        i += 1
    segments.append(segment)
    return segments


def _parse_date(text: Any) -> datetime:
    if not isinstance(text, str):
        raise SuperjsonError(f"Date must be an ISO string, got {text!r}")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SuperjsonError(f"invalid Date {text!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _parse_bigint(text: Any) -> int:
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise SuperjsonError(f"bigint must be a decimal string, got {text!r}")
    try:
        return int(text)
    except ValueError as exc:
        raise SuperjsonError(f"invalid bigint {text!r}") from exc


def _parse_number(text: Any) -> float:
    special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf, "-0": -0.0}
    if isinstance(text, str) and text in special:
        return special[text]
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    raise SuperjsonError(f"invalid number annotation value {text!r}")


def _as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise SuperjsonError(f"{what} must be an array, got {type(value).__name__}")
    return value


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class _Decoder:
    """Applies one payload's annotations; remembers which dicts came from maps (for paths)."""

    def __init__(self, legacy: bool) -> None:
        self.legacy = legacy
        self.map_ids: set[int] = set()

    def untransform(self, value: Any, annotation: Any) -> Any:
        if isinstance(annotation, list):
            # composite rules: ["class", id], ["custom", name], ["symbol", id], ["typed-array", t]
            if annotation and annotation[0] in ("class", "custom", "symbol", "typed-array"):
                return value
            raise SuperjsonError(f"unknown transformation {annotation!r}")
        simple: dict[str, Callable[[Any], Any]] = {
            "bigint": _parse_bigint,
            "Date": _parse_date,
            "undefined": lambda _: None,
            "number": _parse_number,
            "set": lambda v: list(_as_list(v, "set")),
            "map": self._map,
            "regexp": lambda v: v,
            "URL": lambda v: v,
            "Error": lambda v: v,
        }
        try:
            return simple[annotation](value)
        except (KeyError, TypeError) as exc:
            raise SuperjsonError(f"unknown transformation {annotation!r}") from exc

    def _map(self, value: Any) -> Any:
        rows = _as_list(value, "map")
        if not all(isinstance(row, list) and len(row) == 2 for row in rows):
            raise SuperjsonError("map must be an array of [key, value] pairs")
        if not all(_hashable(key) for key, _ in rows):
            return rows
        result = {key: item for key, item in rows}
        self.map_ids.add(id(result))
        return result

    def walk(self, tree: Any, origin: list[str], visit: Callable[[Any, list[str]], None]) -> None:
        """Post-order walk (children first, like superjson's `traverse`)."""
        if tree is None:
            return
        if isinstance(tree, str):  # superjson's README shows bare strings: accept them too
            visit(tree, origin)
            return
        if isinstance(tree, dict):
            for key, subtree in tree.items():
                self.walk(subtree, [*origin, *parse_path(key, self.legacy)], visit)
            return
        if not isinstance(tree, list) or not tree:
            raise SuperjsonError(f"invalid annotation tree {tree!r}")
        node, *rest = tree
        if rest and isinstance(rest[0], dict):
            for key, subtree in rest[0].items():
                self.walk(subtree, [*origin, *parse_path(key, self.legacy)], visit)
        visit(node, origin)

    # -- paths into the (partly decoded) value --------------------------------------------------

    def get(self, root: Any, path: list[str]) -> Any:
        node = root
        i = 0
        while i < len(path):
            node, i = self._child(node, path, i)
        return node

    def set(self, root: Any, path: list[str], mapper: Callable[[Any], Any]) -> Any:
        if not path:
            return mapper(root)
        parent = root
        i = 0
        last = len(path) - 1
        while True:
            is_map = isinstance(parent, dict) and id(parent) in self.map_ids
            if is_map and i == last - 1:
                keys = list(parent)
                key = keys[self._index(path[i], len(keys))]
                if path[last] == "0":
                    new_key = mapper(key)
                    if new_key != key:
                        parent[new_key] = parent.pop(key)
                else:
                    parent[key] = mapper(parent[key])
                return root
            if i == last:
                break
            parent, i = self._child(parent, path, i)
        segment = path[last]
        if isinstance(parent, list):
            index = self._index(segment, len(parent))
            parent[index] = mapper(parent[index])
        elif isinstance(parent, dict):
            if segment not in parent:
                raise SuperjsonError(f"annotation path {'.'.join(path)!r} is not in the value")
            parent[segment] = mapper(parent[segment])
        else:
            raise SuperjsonError(f"annotation path {'.'.join(path)!r} is not in the value")
        return root

    def _child(self, node: Any, path: list[str], i: int) -> tuple[Any, int]:
        segment = path[i]
        if isinstance(node, list):
            return node[self._index(segment, len(node))], i + 1
        if isinstance(node, dict) and id(node) in self.map_ids:
            keys = list(node)
            key = keys[self._index(segment, len(keys))]
            side = path[i + 1] if i + 1 < len(path) else "1"
            return (key if side == "0" else node[key]), i + 2
        if isinstance(node, dict) and segment in node:
            return node[segment], i + 1
        raise SuperjsonError(f"annotation path {'.'.join(path)!r} is not in the value")

    @staticmethod
    def _index(segment: str, length: int) -> int:
        if not segment.isdigit() or int(segment) >= length:
            raise SuperjsonError(f"bad array index {segment!r}")
        return int(segment)


def decode_superjson(payload: Any, *, in_place: bool = False) -> Any:
    """Turn a superjson payload (already JSON-parsed) into plain Python values.

    With in_place=True the payload's `json` member is modified instead of copied (for freshly
    parsed messages nobody else holds).
    """
    if not isinstance(payload, dict) or "json" not in payload:
        raise SuperjsonError('a superjson payload is an object with a "json" member')
    value = payload["json"]
    if not in_place:
        value = copy.deepcopy(value)
    meta = payload.get("meta")
    if meta is None:
        return value
    if not isinstance(meta, dict):
        raise SuperjsonError('"meta" must be an object')
    version = meta.get("v", 0)
    decoder = _Decoder(legacy=not isinstance(version, int) or version < 1)
    root = [value]  # a box, so the root itself can be replaced

    def apply(annotation: Any, path: list[str]) -> None:
        root[0] = decoder.set(root[0], path, lambda v: decoder.untransform(v, annotation))

    decoder.walk(meta.get("values"), [], apply)
    equalities = meta.get("referentialEqualities")
    if equalities:
        root[0] = _apply_equalities(decoder, root[0], equalities)
    return root[0]


def _apply_equalities(decoder: _Decoder, value: Any, equalities: Any) -> Any:
    """Point each listed path at the object found at its representative path (dedupe mode)."""
    legacy = decoder.legacy

    def link(source: list[str], targets: Any) -> None:
        nonlocal value
        shared = decoder.get(value, source)
        for target in _as_list(targets, "referential equality targets"):
            value = decoder.set(value, parse_path(target, legacy), lambda _: shared)

    if isinstance(equalities, list):
        root_paths, *others = equalities
        link([], root_paths)
        equalities = others[0] if others else {}
    if not isinstance(equalities, dict):
        raise SuperjsonError("referentialEqualities must be an object or an array")
    for source, targets in equalities.items():
        link(parse_path(source, legacy), targets)
    return value


# ---------------------------------------------------------------------------------------------
# encoding


def escape_key(key: str) -> str:
    return key.replace("\\", "\\\\").replace(".", "\\.")


def _date_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise TypeError("naive datetime cannot be sent as a Date: give it a timezone")
    utc = value.astimezone(UTC)
    return f"{utc.strftime(_ISO_MILLIS)}.{utc.microsecond // 1000:03d}Z"


def _leaf(value: Any) -> tuple[Any, Any]:
    """(plain value, annotation or None) for a non-container value."""
    if value is None or isinstance(value, bool | str):
        return value, None
    if isinstance(value, int):
        if isinstance(value, BigInt) or abs(value) > MAX_SAFE_INTEGER:
            return str(int(value)), ["bigint"]
        return int(value), None
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN", ["number"]
        if math.isinf(value):
            return ("Infinity" if value > 0 else "-Infinity"), ["number"]
        if value == 0 and math.copysign(1.0, value) < 0:
            return "-0", ["number"]
        return value, None
    if isinstance(value, datetime):
        return _date_text(value), ["Date"]
    raise TypeError(f"cannot encode {type(value).__name__} as superjson")


def _walk(value: Any) -> tuple[Any, Any]:
    """superjson's `walker`: (plain value, annotation tree or None)."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value, builtin_types=(datetime,))
    transformed: str | None = None
    items: list[tuple[str, Any]]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"object keys must be str, got {type(key).__name__}")
        items = list(value.items())
        plain: Any = {}
    elif isinstance(value, list | tuple | set | frozenset):
        if isinstance(value, set | frozenset):
            transformed = "set"
        items = [(str(index), item) for index, item in enumerate(value)]
        plain = []
    else:
        return _leaf(value)
    inner: dict[str, Any] = {}
    for key, item in items:
        child_plain, child_tree = _walk(item)
        if isinstance(plain, dict):
            plain[key] = child_plain
        else:
            plain.append(child_plain)
        if isinstance(child_tree, list):
            inner[escape_key(key)] = child_tree
        elif isinstance(child_tree, dict):
            for sub_path, sub_tree in child_tree.items():
                inner[f"{escape_key(key)}.{sub_path}"] = sub_tree
    if transformed is not None:
        return plain, ([transformed, inner] if inner else [transformed])
    return plain, (inner or None)


def encode_superjson(value: Any) -> dict[str, Any]:
    """Wrap a plain value as a superjson payload, annotating what JSON cannot carry."""
    plain, tree = _walk(value)
    payload: dict[str, Any] = {"json": plain}
    if tree:
        payload["meta"] = {"values": tree, "v": 1}
    return payload


def dumps(value: Any) -> bytes:
    """superjson-encode and serialise to JSON bytes."""
    return msgspec.json.encode(encode_superjson(value))


def loads(raw: bytes | str) -> Any:
    """Parse JSON (big integers kept exact) and decode the superjson payload in it."""
    return decode_superjson(msgspec.json.decode(raw), in_place=True)
