"""The core settings sections: network, database, Redis, limits, prices, payments, access.

Each is a frozen msgspec struct that refuses unknown keys; cluster/config/__init__.py puts them
together in `Settings` and loads them from TOML and the environment.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

import msgspec

from cluster.config.types import NonNegative, Port, Positive, Seconds


class NetworkSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    """Address the relay instance binds."""
    port: Port = 8008
    """TCP port of this instance."""
    workers: Positive = 2
    """gunicorn worker processes per instance."""
    public_url: str = ""
    """The ws(s):// URL clients use (NIP-11, NIP-42); empty means derived from host and port."""
    metrics_token: str = ""
    """If set, GET /metrics on the public port requires `Authorization: Bearer <token>` (env
    only, like secrets); with neither this nor metrics_port, /metrics is refused (404)."""
    metrics_port: Port = 0
    """If set, each instance also serves /metrics without a token on metrics_host:metrics_port
    and the public port never serves it; 0 = no private listener."""
    metrics_host: str = "127.0.0.1"
    """Address of the private /metrics listener (e.g. the pod IP or 0.0.0.0 in a container)."""
    ping_interval: Seconds = 30.0
    """Seconds between WebSocket pings to idle clients (dead peers are closed)."""
    idle_timeout: Seconds = 600.0
    """Seconds without client messages after which a connection with no subscriptions closes."""
    compression: bool = False
    """Offer permessage-deflate (zlib level 1) to clients that ask for it."""
    compression_threshold: NonNegative = 1024
    """With compression on, messages smaller than this many bytes are sent uncompressed."""
    shutdown_timeout: Seconds = 10.0
    """Seconds a worker waits for in-flight EVENTs to be answered on SIGTERM."""
    drain_timeout: Seconds = 30.0
    """Seconds a client may take nothing from its socket while data waits for it before it is
    closed with 1008 (its pings and other input do not count)."""


class DatabaseSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = ""
    """PostgreSQL URL; empty means `relay-cluster up` starts an embedded server."""
    pool_min: NonNegative = 2
    """Connections each worker keeps open."""
    pool_max: Positive = 8
    """Query connections per worker, at most. A worker also holds writer_lanes writer
    connections and, with payments, one outbox connection: keep instances x workers x
    (pool_max + writer_lanes + 1) below PostgreSQL's max_connections."""
    pool_timeout: Seconds = 5.0
    """Seconds a query waits for a free pooled connection before failing with `error:`."""
    query_timeout_ms: Positive = 5000
    """Statement timeout of a REQ's query (the query pool's session `statement_timeout`), so a
    pathological query cannot pin a connection."""
    count_timeout_ms: Positive = 2000
    """Statement timeout of a COUNT (set for that statement only): past it the client gets
    CLOSED `error:`. Counting is a scan, so it gets less time than a REQ's indexed read."""
    network_timeout_ms: NonNegative = 10000
    """How long a pool connection may wait on a server that stopped answering (a silent
    partition: packets dropped, nothing refused) before it fails and the client is answered
    `error:`: libpq's tcp_user_timeout, connect_timeout and TCP keepalives; without them a
    wait lasts until the kernel gives up retransmitting (minutes). 0: the OS defaults."""
    write_timeout_ms: Positive = 10000
    """Statement timeout of the group-commit writer's and the outbox's own connections: a batch
    of up to write_batch_max events is one statement, and it must not be cut by a query budget."""
    write_batch_max: Positive = 256
    """Events committed together by a worker's writer in one transaction (group commit)."""
    writer_lanes: Positive = 1
    """Group-commit loops per worker (each on its own connection). A connection's events always
    use one lane, so they commit in order. One lane makes the fullest batches (the cost of a
    commit is shared by more events); more lanes let a batch form while another commits."""
    write_linger_ms: NonNegative = 1
    """Under load, how long a lane waits to gather more events into its next commit (an idle
    lane commits a lone event at once). 1 ms: 4 ms put p50 at 6.7 ms at 1,000 ev/s for 5%
    less CPU; 0 costs 10-20% more CPU per event from 3,000 ev/s (docs/PERFORMANCE-LOG.md)."""
    replica_urls: list[str] = []
    """PostgreSQL streaming replicas (or a managed database's reader endpoints) that serve REQ,
    COUNT and NIP-77 item lists; writes, payments and everything else use `url`. Env:
    RELAY_DATABASE__REPLICA_URLS='["postgresql://..."]'. docs/SCALING.md."""
    replica_max_lag_ms: Positive = 3000
    """A replica more than this far behind the primary serves no reads until it catches up."""
    replica_check_interval_ms: Positive = 1000
    """How often each worker measures its replicas' lag (one short query on each server)."""

    def __post_init__(self) -> None:
        for replica in self.replica_urls:
            if not replica.startswith(("postgresql://", "postgres://")):
                raise ValueError(f"replica_urls: {replica!r} is not a postgresql:// URL")


class QuerySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    concurrency: NonNegative = 0
    """REQ/COUNT store queries one worker runs at once (cluster/relay/admission.py); more wait,
    served round-robin across client addresses. 0: database.pool_max minus the two pricing and
    purge may need (at least 1). At most database.pool_max, so an admitted query finds a
    pooled connection."""
    queue_per_address: Positive = 16
    """Queries one client address may have waiting for a slot in one worker; past it the query
    is refused at once with CLOSED `rate-limited:`."""


class RedisSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = ""
    """Redis URL; empty means `relay-cluster up` starts a local redis-server."""
    key_prefix: str = "relay:"
    """Prefix of every key and stream this cluster uses (lets clusters share one Redis)."""
    stream_maxlen: Positive = 100_000
    """Approximate length of the fan-out stream: how far back a reconnecting worker can catch up."""
    sentinels: list[str] = []
    """Redis Sentinel addresses ("host:port"); when set, the master of `sentinel_service` is
    asked from them and `url` gives only the password, database and TLS (its host is ignored)."""
    sentinel_service: str = "mymaster"
    """The master name the sentinels monitor (`sentinel monitor <name> ...`)."""
    sentinel_password: str = ""
    """Password of the sentinels themselves (`requirepass` in sentinel.conf); empty: none."""

    def __post_init__(self) -> None:
        for address in self.sentinels:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"sentinels: {address!r} is not host:port")


class LimitSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_message_bytes: Positive = 131072
    """Largest WebSocket message accepted."""
    max_subscriptions: Positive = 20
    """Open subscriptions per connection."""
    max_subscriptions_per_address: NonNegative = 200
    """Open subscriptions of one client address in one worker, across its connections; 0: no
    limit but the per-connection one."""
    max_wide_filters_per_address: NonNegative = 20
    """Filters without ids, authors or tags (kinds only, or nothing: matched against most
    incoming events) that one client address may hold open in one worker; 0: no limit."""
    max_filters: Positive = 10
    """Filters per REQ or COUNT."""
    max_filter_values: Positive = 1000
    """Values in one filter list (ids, authors, kinds, a #tag)."""
    max_limit: Positive = 5000
    """Largest `limit` honoured; larger limits are lowered to this."""
    default_limit: Positive = 500
    """Limit applied to a filter that has none."""
    max_event_tags: Positive = 2000
    """Tags per event."""
    max_content_length: Positive = 65536
    """Characters of event content."""
    max_subid_length: Positive = 64
    """Characters of a subscription id."""
    created_at_past: NonNegative = 0
    """Oldest accepted created_at, in seconds before now; 0 means no lower bound."""
    created_at_future: NonNegative = 900
    """Newest accepted created_at, in seconds after now."""
    max_inflight_events: Positive = 64
    """EVENTs one connection may have in processing at once (more wait: backpressure)."""
    max_rows_per_req: Positive = 5000
    """Stored events one REQ returns at most, across all its filters (each keeps its limit)."""
    req_stall_timeout: Seconds = 3.0
    """Seconds a REQ may wait for its client to make room for more stored events while it holds
    a database connection and a query slot; past it the REQ ends with CLOSED `error:` (the
    connection stays, under network.drain_timeout)."""
    max_outbound_bytes: Positive = 100_000
    """Bytes queued for one connection (stored results, live events held during a REQ, live
    events): a REQ reads more rows only below it; past it a client whose socket is backed up is
    closed with 1008. Keep it several times the largest event (max_message_bytes) you accept."""


class PricingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kinds: dict[str, NonNegative] = {}
    """Price in sats per event kind, e.g. {"1" = 10, "30023" = 100}; env RELAY_PRICING="1:10"."""
    default: NonNegative = 0
    """Price of kinds not listed in `kinds` (0: free)."""
    per_kib: NonNegative = 0
    """Extra sats per started KiB of content, for priced kinds only."""
    refresh_seconds: Seconds = 300.0
    """How often workers re-read operator price overrides from PostgreSQL (L1 cache TTL)."""
    bind_claims: bool = True
    """A claim pays only for events its channel's sender signed (claim_not_bound otherwise), so
    a claim copied from another author's event cannot be spent; off for a relay whose paying
    service publishes for its users."""

    def __post_init__(self) -> None:
        for kind in self.kinds:
            if not kind.isdigit() or int(kind) > 65535:
                raise ValueError(f"pricing.kinds: '{kind}' is not a kind number (0-65535)")

    @property
    def any_priced(self) -> bool:
        return self.default > 0 or any(price > 0 for price in self.kinds.values())


class DassieSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = ""
    """WebSocket URL of the Dassie node's RPC (e.g. ws://127.0.0.1:5000/rpc); env DASSIE_RPC_URL."""
    token: str = ""
    """Bearer token for the node (>= 32 chars); set it with env DASSIE_RPC_TOKEN, never a file."""
    timeout: Seconds = 3.0
    """Seconds one RPC call may take before it counts as a failure."""
    failure_threshold: Positive = 5
    """Consecutive failures that open the circuit breaker."""
    reset_after: Seconds = 30.0
    """Seconds the open breaker refuses calls before one trial call."""
    channel_ttl: Seconds = 30.0
    """Channel-state cache lifetime, in-process (L1) and in Redis (L2)."""
    stale_grace: Seconds = 300.0
    """How old a cached channel state may be and still be used while the node is unreachable."""


class InfoSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str = "relay-cluster"
    """NIP-11 name."""
    description: str = "A horizontally scaled Nostr relay cluster."
    """NIP-11 description."""
    pubkey: str = ""
    """NIP-11 admin pubkey (hex)."""
    contact: str = ""
    """NIP-11 contact."""
    icon: str = ""
    """NIP-11 icon URL."""


def _default_trusted_proxies() -> list[str]:
    return ["127.0.0.1/32", "::1/128"]


class RateLimitSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    events_per_minute_per_ip: NonNegative = 120
    """EVENT messages one client IP may send per minute, cluster-wide; 0 disables the limit."""
    events_per_minute_per_pubkey: NonNegative = 60
    """Events one author pubkey may publish per minute, cluster-wide; 0 disables the limit."""
    reqs_per_minute_per_ip: NonNegative = 120
    """REQ and COUNT messages one client IP may send per minute, cluster-wide; 0 disables."""
    connections_per_ip: NonNegative = 50
    """WebSocket connections open at once from one client IP, cluster-wide; 0 disables."""
    invalid_events_per_minute_per_ip: NonNegative = 30
    """EVENTs refused by verification or policy one client IP may send per minute before its
    connection is closed (1008), cluster-wide; 0 disables."""
    invalid_events_per_connection: NonNegative = 100
    """Invalid EVENTs one connection may send in all before it is closed (after the first ten,
    each further EVENT waits a little longer: the client is slowed first); 0 disables."""
    handshakes_per_second_per_ip: NonNegative = 10
    """WebSocket handshakes and HTTP requests one client IP may start per second, counted by the
    nginx that `relay-cluster up` runs (five seconds' worth may come at once; past it nginx
    answers 429 itself, so a reconnect storm costs the relay workers nothing); addresses in
    `exempt` are not counted; 0 disables. The shipped compose and Akash nginx files use 10."""
    messages_per_second_per_ip: NonNegative = 100
    """Messages of any kind one client IP may send per second to one worker, each costing 1
    plus 1 per whole 4 KiB (two seconds' worth may come at once); past it the worker stops
    reading that address's sockets until its budget refills (cluster/relay/budgets.py); 0
    disables. Keep it above events_per_minute_per_ip / 60 plus the REQs and CLOSEs clients send."""
    query_cost_per_minute_per_ip: NonNegative = 600_000
    """Estimated database rows the REQs and COUNTs of one client IP may touch per minute in one
    worker (cluster/nostr/filter_cost.py); past it they are refused `rate-limited:`, and one
    costing more than this alone `blocked:`; 0 disables."""
    trusted_proxies: list[str] = msgspec.field(default_factory=_default_trusted_proxies)
    """Peers (IPs or CIDRs) whose X-Forwarded-For is believed: the proxies in front (nginx)."""
    fallback_workers: Positive = 8
    """Workers assumed to share a limit while Redis is down; each then allows limit / this."""
    exempt: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    """Client addresses (IPs or CIDRs) never rate-limited: loopback tools and load tests."""

    def __post_init__(self) -> None:
        for entry in [*self.trusted_proxies, *self.exempt]:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"rate_limits: '{entry}' is not an IP address or CIDR") from None


class AuthSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    required_for_writes: bool = False
    """EVENTs are refused (`auth-required:`) until the connection has authenticated (NIP-42)."""
    restrict_dm_reads: bool = True
    """DM kinds (4, 1059) are served only to their author or a p-tagged recipient (NIP-42)."""
    window: Positive = 600
    """Seconds an AUTH event's created_at may differ from now."""


class PolicySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_pow_difficulty: NonNegative = 0
    """NIP-13: leading zero bits an event id needs (0: no proof of work required)."""
    accept_protected: bool = True
    """NIP-70: accept `["-"]`-tagged events from their authenticated author (else refuse all)."""


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: Literal["json", "text"] = "json"
    """`json`: one object per line (for log shippers); `text`: for people at a terminal."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
