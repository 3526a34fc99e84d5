"""The Dassie RPC transport: one multiplexed WebSocket per worker, timeouts, backoff, a breaker.

Wire protocol (docs/PAYMENTS.md): `dassie-rpc-01` envelopes (cluster/payments/envelope.py)
over a WebSocket at `/rpc` with `Authorization: Bearer <token>`. Requests carry a string id;
responses are matched to waiting futures by that id, so any number of requests share one socket.

Failure handling, in the order a call meets it:

- circuit breaker (cluster/payments/breaker.py): open after `failure_threshold` consecutive
  failures, calls fail at once with `DassieUnavailable` for `reset_after` seconds, then one
  trial. Node errors (`DassieError`) prove the node is alive and count as successes.
- a failure is one failed attempt to reach the node: a request that timed out, a connect that
  failed (counted once however many callers were waiting for it), a socket that dropped with
  requests in flight (counted once, and each of those requests fails at once).
- lazy connect; after a failed connect, calls fail fast until the backoff delay has passed
  (0.1 s doubling to `max_backoff`, with jitter); after a drop the next call reconnects at once.
- per-request timeout covering connect, send and answer.

Subscriptions (routeType "subscription", "event" messages, "cancel") are not supported: the relay
needs none, and incoming "event" messages are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from cluster import metrics
from cluster.payments.breaker import BreakerState, CircuitBreaker, Permit
from cluster.payments.envelope import EnvelopeError, RouteType, decode_envelope, encode_request

log = logging.getLogger(__name__)

RPC_PATH = "/rpc"
FIRST_BACKOFF = 0.1
BREAKER_GAUGE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 0.5, BreakerState.OPEN: 1.0}


class DassieUnavailable(Exception):
    """The node could not answer: unreachable, timed out, connection lost, or breaker open.

    `incident` groups failures that have one cause (one failed connect, one dropped socket), so
    the breaker counts them once.
    """

    def __init__(self, message: str, *, incident: object | None = None) -> None:
        super().__init__(message)
        self.incident = incident


class DassieAuthError(DassieUnavailable):
    """The node refused the WebSocket handshake (bad or missing token): a configuration error."""

    def __init__(self, message: str, status: int, *, incident: object | None = None) -> None:
        super().__init__(message, incident=incident)
        self.status = status


class DassieError(Exception):
    """The node answered with an error. `code` is the message up to the first ':'.

    The ledger's messages are a reason code (e.g. `unknown_channel`, `insufficient_balance`,
    `invalid_input`, `unknown_procedure`) optionally followed by `: details`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        return self.message.split(":", 1)[0].strip()


def export_breaker_state(state: BreakerState) -> None:
    metrics.DASSIE_BREAKER.set(BREAKER_GAUGE[state])


class _Connection:
    """One open socket, the requests waiting on it, and its reader task."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.send_lock = asyncio.Lock()
        self.reader: asyncio.Task[None] | None = None
        self.lost = object()  # the incident token of this socket's drop

    @property
    def usable(self) -> bool:
        return not self.ws.closed and self.reader is not None and not self.reader.done()


def rpc_url(url: str) -> URL:
    """The node URL with `/rpc` as path when none was given (`ws://host:5000` → `/rpc`)."""
    parsed = URL(url)
    if parsed.path in ("", "/"):
        parsed = parsed.with_path(RPC_PATH)
    return parsed


class DassieRpc:
    """Generic `query`/`mutation` calls to a Dassie node; DassieClient adds the typed ones."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 5.0,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        max_backoff: float = 5.0,
        heartbeat: float | None = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = rpc_url(url)
        self._clock = clock
        self._token = token
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.heartbeat = heartbeat
        self.breaker = CircuitBreaker(
            failure_threshold, reset_after, clock, on_change=export_breaker_state
        )
        self._session: aiohttp.ClientSession | None = None
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self._last_incident: object | None = None
        self._ids = itertools.count(1)
        self._closed = False
        # Per-client counters (tests and stats()); the process-wide ones are in cluster.metrics.
        self.requests_total = 0
        self.failures_total = 0  # could not reach the node (timeouts, connect errors, drops)
        self.errors_total = 0  # the node answered with an error
        self.rejected_total = 0  # failed fast because the breaker was open
        self.connects_total = 0
        self.disconnects_total = 0

    # -- state ----------------------------------------------------------------------------------

    @property
    def breaker_state(self) -> BreakerState:
        return self.breaker.state

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.usable

    @property
    def inflight(self) -> int:
        return len(self._connection.pending) if self._connection else 0

    def stats(self) -> dict[str, int | str]:
        return {
            "requests_total": self.requests_total,
            "failures_total": self.failures_total,
            "errors_total": self.errors_total,
            "rejected_total": self.rejected_total,
            "connects_total": self.connects_total,
            "disconnects_total": self.disconnects_total,
            "breaker_opened_total": self.breaker.opened_total,
            "breaker_state": self.breaker.state.value,
            "inflight": self.inflight,
        }

    # -- calls ----------------------------------------------------------------------------------

    async def query(self, path: tuple[str, ...], input: Any = None) -> Any:
        return await self._call("query", path, input)

    async def mutation(self, path: tuple[str, ...], input: Any = None) -> Any:
        return await self._call("mutation", path, input)

    async def _call(self, route_type: RouteType, path: tuple[str, ...], input: Any) -> Any:
        name = ".".join(path)
        if self._closed:
            raise DassieUnavailable("the Dassie client is closed")
        self.requests_total += 1
        metrics.DASSIE_CALLS.labels(name).inc()
        permit = self.breaker.acquire()
        if permit is None:
            self.rejected_total += 1
            metrics.DASSIE_REJECTED.inc()
            raise DassieUnavailable(
                f"Dassie node circuit breaker is open ({self._last_error or 'failures'}); "
                f"next try in {self.breaker.retry_in():.1f}s"
            )
        try:
            async with asyncio.timeout(self.timeout):
                result = await self._round_trip(route_type, path, input, permit)
        except TimeoutError as exc:
            self._last_error = f"no answer within {self.timeout:g}s"
            self._record_failure(permit, None)
            raise DassieUnavailable(
                f"Dassie node did not answer {name} within {self.timeout:g}s"
            ) from exc
        except DassieUnavailable as exc:
            self._record_failure(permit, exc.incident)
            raise
        except BaseException:
            self.breaker.release(permit)
            raise
        self.breaker.success(permit)
        return self._unwrap(result, name)

    def _record_failure(self, permit: Permit, incident: object | None) -> None:
        self.failures_total += 1
        metrics.DASSIE_FAILURES.inc()
        counted = incident is None or incident is not self._last_incident
        if incident is not None:
            self._last_incident = incident
        self.breaker.failure(permit, counted=counted)

    async def _round_trip(
        self, route_type: RouteType, path: tuple[str, ...], input: Any, permit: Permit
    ) -> Any:
        connection = await self._connect(bypass_backoff=permit is Permit.TRIAL)
        request_id = str(next(self._ids))
        message = encode_request(request_id, route_type, path, input)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.pending[request_id] = future
        try:
            try:
                async with connection.send_lock:
                    await connection.ws.send_str(message)
            except (aiohttp.ClientError, OSError, RuntimeError) as exc:
                raise DassieUnavailable(
                    f"could not send to the Dassie node: {exc!r}", incident=connection.lost
                ) from exc
            return await future
        finally:
            connection.pending.pop(request_id, None)

    def _unwrap(self, result: Any, name: str) -> Any:
        if not isinstance(result, dict):
            self.errors_total += 1
            raise DassieError(f"invalid_response: {name} answered without a result object")
        if result.get("type") == "success":
            return result.get("data")
        self.errors_total += 1
        if result.get("type") == "error":
            raise DassieError(str(result.get("message", "unknown error")))
        raise DassieError(f"invalid_response: {name} result type {result.get('type')!r}")

    # -- connection -----------------------------------------------------------------------------

    async def _connect(self, *, bypass_backoff: bool) -> _Connection:
        if self._connection is not None and self._connection.usable:
            return self._connection
        if self._connecting is None:
            wait = self._retry_at - self._clock()
            if wait > 0 and not bypass_backoff:
                raise DassieUnavailable(
                    f"Dassie node unreachable ({self._last_error}); reconnecting in {wait:.1f}s",
                    incident=self._last_incident,
                )
            self._connecting = asyncio.ensure_future(self._open_connection())
            self._connecting.add_done_callback(_retrieve_exception)
        # Shielded: a caller timing out must not cancel the attempt others are waiting for.
        return await asyncio.shield(self._connecting)

    async def _open_connection(self) -> _Connection:
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(
                        total=None, connect=self.timeout, sock_connect=self.timeout
                    )
                )
            try:
                ws = await self._session.ws_connect(
                    self.url,
                    headers={"Authorization": f"Bearer {self._token}"},
                    heartbeat=self.heartbeat,
                    max_msg_size=16 * 1024 * 1024,
                )
            except aiohttp.WSServerHandshakeError as exc:
                self._connect_failed(f"handshake refused with HTTP {exc.status}")
                if exc.status in (401, 403):
                    raise DassieAuthError(
                        f"Dassie node at {self.url} refused the token (HTTP {exc.status})",
                        exc.status,
                        incident=object(),
                    ) from exc
                raise DassieUnavailable(
                    f"Dassie node at {self.url} refused the WebSocket (HTTP {exc.status})",
                    incident=object(),
                ) from exc
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._connect_failed(repr(exc))
                raise DassieUnavailable(
                    f"cannot connect to the Dassie node at {self.url}: {exc!r}", incident=object()
                ) from exc
            connection = _Connection(ws)
            connection.reader = asyncio.create_task(self._read(connection), name="dassie-reader")
            self._connection = connection
            self.connects_total += 1
            self._backoff = 0.0
            self._retry_at = 0.0
            return connection
        finally:
            self._connecting = None

    def _connect_failed(self, reason: str) -> None:
        self._last_error = reason
        self._backoff = min(self.max_backoff, max(FIRST_BACKOFF, self._backoff * 2))
        self._retry_at = self._clock() + self._backoff * random.uniform(0.8, 1.2)

    async def _read(self, connection: _Connection) -> None:
        reason = "closed by the node"
        try:
            async for message in connection.ws:
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._dispatch(connection, message.data)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    reason = repr(connection.ws.exception())
                    break
        except Exception as exc:  # the socket is gone whatever happened; fail what waits on it
            reason = repr(exc)
        finally:
            if self._closed:
                reason = "the client was closed"
            self.disconnects_total += 1
            if self._connection is connection:
                self._connection = None
            self._last_error = f"connection lost: {reason}"
            for request_id, future in list(connection.pending.items()):
                if not future.done():
                    future.set_exception(
                        DassieUnavailable(
                            f"connection to the Dassie node was lost ({reason}) while waiting "
                            f"for request {request_id}",
                            incident=connection.lost,
                        )
                    )
            with contextlib.suppress(Exception):
                await connection.ws.close()

    def _dispatch(self, connection: _Connection, raw: str | bytes) -> None:
        try:
            message = decode_envelope(raw)
        except EnvelopeError as exc:
            future = connection.pending.get(exc.request_id) if exc.request_id else None
            if future is not None and not future.done():
                future.set_result({"type": "error", "message": f"invalid_response: {exc}"})
            log.warning("Dassie node sent an unreadable message (%s): %.200r", exc, raw)
            return
        if not isinstance(message, dict):
            log.warning("Dassie node sent a non-object message: %.200r", raw)
            return
        if message.get("type") != "response":
            log.debug("ignoring Dassie message of type %r", message.get("type"))
            return
        request_id = message.get("id")
        future = connection.pending.get(request_id) if isinstance(request_id, str) else None
        if future is not None and not future.done():
            future.set_result(message.get("result"))

    async def close(self) -> None:
        """Close the socket and session; requests still waiting fail with DassieUnavailable."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            await asyncio.wait([connecting])
        connection = self._connection
        if connection is not None:
            await connection.ws.close()
            if connection.reader is not None:
                await asyncio.wait([connection.reader])
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Mark a shared connect attempt's failure as seen even if every waiter timed out."""
    if not future.cancelled():
        future.exception()
