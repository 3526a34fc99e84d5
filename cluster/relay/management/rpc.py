"""NIP-86 JSON-RPC: decode a call, check its params, run the method, encode the answer.

Every method that changes a decision writes it to PostgreSQL first, then reloads this worker's
copy (so the answer is true here at once), then announces the change to every other worker
(cluster/bus/invalidation.py). Lists are read from PostgreSQL, the truth, not from the cache.
Answers are NIP-86's `{"result": ...}`, or `{"result": null, "error": "..."}` with an HTTP
status saying whose fault it was (400 the call, 500 the relay).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import msgspec
import orjson
import psycopg
import psycopg_pool

from cluster.nostr.event import MAX_KIND, is_lower_hex
from cluster.relay.moderation import Moderation
from cluster.store.moderation import ModerationState, canonical_ip

log = logging.getLogger(__name__)

MAX_REASON = 1000
MAX_NAME = 256
MAX_DESCRIPTION = 4096
MAX_ICON_URL = 2048
STORE_FAILURES = (psycopg.Error, psycopg_pool.PoolTimeout, OSError)


class DecisionStore(Protocol):
    """Where decisions live (cluster/store/moderation.py `PostgresDecisions`; fakes in tests)."""

    async def load(self) -> ModerationState: ...
    async def set_pubkey(self, listing: str, pubkey: str, reason: str, present: bool) -> None: ...
    async def ban_event(self, event_id: str, reason: str) -> int: ...
    async def allow_event(self, event_id: str) -> None: ...
    async def set_allowed_kind(self, kind: int, present: bool) -> None: ...
    async def set_blocked_ip(self, ip: str, reason: str, present: bool) -> None: ...
    async def set_relay_info(self, field: str, value: str) -> None: ...


Announce = Callable[[], Awaitable[bool]]


class RpcRequest(msgspec.Struct, frozen=True):
    method: str
    params: list[Any] = msgspec.field(default_factory=list)


class CallRefused(Exception):
    """A call the relay will not run; `message` goes to the client as the `error`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


_request_decoder = msgspec.json.Decoder(RpcRequest)


def encode_result(result: Any) -> bytes:
    return orjson.dumps({"result": result})


def encode_error(message: str) -> bytes:
    return orjson.dumps({"result": None, "error": message})


# ---- params ---------------------------------------------------------------------------------


def _param(params: list[Any], index: int, name: str) -> Any:
    if index >= len(params):
        raise CallRefused(f"missing parameter {index + 1}: {name}")
    return params[index]


def _hex_key(params: list[Any], name: str) -> str:
    value = _param(params, 0, name)
    if not isinstance(value, str) or not is_lower_hex(value.strip().lower(), 64):
        raise CallRefused(f"{name} must be 64 hex characters")
    return value.strip().lower()


def _reason(params: list[Any], index: int = 1) -> str:
    if index >= len(params) or params[index] is None:
        return ""
    value = params[index]
    if not isinstance(value, str):
        raise CallRefused("reason must be a string")
    if len(value) > MAX_REASON:
        raise CallRefused(f"reason must be at most {MAX_REASON} characters")
    return value


def _kind(params: list[Any]) -> int:
    value = _param(params, 0, "kind")
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 5:
        value = int(value.strip())  # tolerated: some tools send every param as a string
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_KIND:
        raise CallRefused(f"kind must be an integer from 0 to {MAX_KIND}")
    return value


def _ip(params: list[Any]) -> str:
    value = _param(params, 0, "ip address")
    ip = canonical_ip(value) if isinstance(value, str) and len(value) <= 64 else None
    if ip is None:
        raise CallRefused("ip must be an IPv4 or IPv6 address")
    return ip


def _text(params: list[Any], name: str, limit: int) -> str:
    value = _param(params, 0, name)
    if not isinstance(value, str) or len(value) > limit:
        raise CallRefused(f"{name} must be a string of at most {limit} characters")
    return value


def _icon(params: list[Any]) -> str:
    value = _text(params, "icon URL", MAX_ICON_URL).strip()
    if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc):
        raise CallRefused("icon must be an http(s) URL (or empty to remove it)")
    return value


# ---- methods --------------------------------------------------------------------------------


class Management:
    """The NIP-86 methods of one worker, over a `DecisionStore` and the worker's `Moderation`."""

    def __init__(self, store: DecisionStore, moderation: Moderation, announce: Announce) -> None:
        self.store = store
        self.moderation = moderation
        self.announce = announce

    async def call(self, body: bytes) -> tuple[int, bytes]:
        """HTTP status and body for one JSON-RPC request body (already authorised)."""
        try:
            request = _request_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return 400, encode_error(f"invalid request: {exc}")
        method = METHODS.get(request.method)
        if method is None:
            return 400, encode_error(f"unsupported method: {request.method[:64]}")
        try:
            return 200, encode_result(await method(self, request.params))
        except CallRefused as exc:
            return exc.status, encode_error(exc.message)
        except STORE_FAILURES as exc:
            log.warning("NIP-86 %s failed in the store: %s", request.method, exc)
            return 500, encode_error("error: the relay could not reach its database, retry")
        except Exception:  # a bug: answer and keep the worker serving
            log.exception("NIP-86 %s failed", request.method)
            return 500, encode_error("error: internal error")

    async def _changed(self) -> None:
        """This worker sees the change before the answer; the others when the announcement
        reaches them (or, if Redis is away, at their next periodic reload)."""
        await self.moderation.reload(self.store.load)
        await self.announce()

    async def _state(self) -> ModerationState:
        await self.moderation.reload(self.store.load)
        return self.moderation.state

    async def supported_methods(self, params: list[Any]) -> list[str]:
        return [name for name in METHODS if name != "supportedmethods"]

    async def _pubkey(self, params: list[Any], listing: str, present: bool) -> bool:
        pubkey = _hex_key(params, "pubkey")
        await self.store.set_pubkey(listing, pubkey, _reason(params), present)
        await self._changed()
        return True

    async def ban_pubkey(self, params: list[Any]) -> bool:
        return await self._pubkey(params, "banned", True)

    async def unban_pubkey(self, params: list[Any]) -> bool:
        return await self._pubkey(params, "banned", False)

    async def allow_pubkey(self, params: list[Any]) -> bool:
        return await self._pubkey(params, "allowed", True)

    async def unallow_pubkey(self, params: list[Any]) -> bool:
        return await self._pubkey(params, "allowed", False)

    async def list_banned_pubkeys(self, params: list[Any]) -> list[dict[str, str]]:
        banned = (await self._state()).banned_pubkeys
        return [{"pubkey": key, "reason": banned[key]} for key in sorted(banned)]

    async def list_allowed_pubkeys(self, params: list[Any]) -> list[dict[str, str]]:
        allowed = (await self._state()).allowed_pubkeys
        return [{"pubkey": key, "reason": allowed[key]} for key in sorted(allowed)]

    async def ban_event(self, params: list[Any]) -> bool:
        event_id = _hex_key(params, "event id")
        deleted = await self.store.ban_event(event_id, _reason(params))
        log.info("NIP-86: banned event %s (%d stored copy deleted)", event_id, deleted)
        await self._changed()
        return True

    async def allow_event(self, params: list[Any]) -> bool:
        await self.store.allow_event(_hex_key(params, "event id"))
        await self._changed()
        return True

    async def list_banned_events(self, params: list[Any]) -> list[dict[str, str]]:
        banned = (await self._state()).banned_events
        return [{"id": key, "reason": banned[key]} for key in sorted(banned)]

    async def allow_kind(self, params: list[Any]) -> bool:
        await self.store.set_allowed_kind(_kind(params), True)
        await self._changed()
        return True

    async def disallow_kind(self, params: list[Any]) -> bool:
        await self.store.set_allowed_kind(_kind(params), False)
        await self._changed()
        return True

    async def list_allowed_kinds(self, params: list[Any]) -> list[int]:
        return sorted((await self._state()).allowed_kinds)

    async def block_ip(self, params: list[Any]) -> bool:
        await self.store.set_blocked_ip(_ip(params), _reason(params), True)
        await self._changed()
        return True

    async def unblock_ip(self, params: list[Any]) -> bool:
        await self.store.set_blocked_ip(_ip(params), "", False)
        await self._changed()
        return True

    async def list_blocked_ips(self, params: list[Any]) -> list[dict[str, str]]:
        blocked = (await self._state()).blocked_ips
        return [{"ip": ip, "reason": blocked[ip]} for ip in sorted(blocked)]

    async def change_relay_name(self, params: list[Any]) -> bool:
        await self.store.set_relay_info("name", _text(params, "name", MAX_NAME))
        await self._changed()
        return True

    async def change_relay_description(self, params: list[Any]) -> bool:
        description = _text(params, "description", MAX_DESCRIPTION)
        await self.store.set_relay_info("description", description)
        await self._changed()
        return True

    async def change_relay_icon(self, params: list[Any]) -> bool:
        await self.store.set_relay_info("icon", _icon(params))
        await self._changed()
        return True


Method = Callable[[Management, list[Any]], Awaitable[Any]]

METHODS: dict[str, Method] = {
    "supportedmethods": Management.supported_methods,
    "banpubkey": Management.ban_pubkey,
    "unbanpubkey": Management.unban_pubkey,
    "listbannedpubkeys": Management.list_banned_pubkeys,
    "allowpubkey": Management.allow_pubkey,
    "unallowpubkey": Management.unallow_pubkey,
    "listallowedpubkeys": Management.list_allowed_pubkeys,
    "banevent": Management.ban_event,
    "allowevent": Management.allow_event,
    "listbannedevents": Management.list_banned_events,
    "allowkind": Management.allow_kind,
    "disallowkind": Management.disallow_kind,
    "listallowedkinds": Management.list_allowed_kinds,
    "blockip": Management.block_ip,
    "unblockip": Management.unblock_ip,
    "listblockedips": Management.list_blocked_ips,
    "changerelayname": Management.change_relay_name,
    "changerelaydescription": Management.change_relay_description,
    "changerelayicon": Management.change_relay_icon,
}
"""Method name -> implementation; `supportedmethods` lists the others from here."""
