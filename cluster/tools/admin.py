"""`relay-cluster admin`: call one NIP-86 management method, signed with NIP-98.

For operators without a NIP-86 client: the secret key must be one of the relay's
`admin.pubkeys`. The call goes to the relay's own URL over HTTP (ws -> http, wss -> https).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from cluster.nostr.nip98 import HTTP_AUTH_KIND, authorization_header, request_tags
from cluster.nostr.signing import Signer

RPC_TYPE = "application/nostr+json+rpc"
_HTTP_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def http_url_of(relay_url: str) -> str:
    """The HTTP spelling of a relay URL: NIP-86 is served where the WebSocket is."""
    scheme, sep, rest = relay_url.partition("://")
    if not sep or scheme.lower() not in _HTTP_SCHEMES:
        raise ValueError(f"not a relay URL: {relay_url}")
    url = f"{_HTTP_SCHEMES[scheme.lower()]}://{rest}"
    return url if rest.count("/") else url + "/"


def signed_request(
    relay_url: str, secret: str, method: str, params: list[Any], now: int | None = None
) -> tuple[str, bytes, str]:
    """URL, body and Authorization header of one call (pure apart from the clock)."""
    url = http_url_of(relay_url)
    body = orjson.dumps({"method": method, "params": params})
    created_at = int(time.time()) if now is None else now
    event = Signer(secret).sign(
        HTTP_AUTH_KIND, "", request_tags(url, "POST", body), created_at=created_at
    )
    return url, body, authorization_header(event)


async def call(
    relay_url: str, secret: str, method: str, params: list[Any], timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """HTTP status and the JSON-RPC answer (`{"result": ...}` or with `"error"`)."""
    url, body, header = signed_request(relay_url, secret, method, params)
    headers = {"Content-Type": RPC_TYPE, "Authorization": header}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        answer = await response.read()
    try:
        decoded = orjson.loads(answer)
    except orjson.JSONDecodeError:
        decoded = {"result": None, "error": answer.decode(errors="replace")[:500]}
    if not isinstance(decoded, dict):
        decoded = {"result": None, "error": f"unexpected answer: {decoded!r}"[:500]}
    return response.status, decoded
