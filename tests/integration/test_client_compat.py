"""Interoperability: rust-nostr's Python bindings (`nostr-sdk`) against our relay.

A client library written by someone else must be able to publish, query, subscribe, delete
(NIP-09) and replace (replaceable and addressable kinds) exactly as it does against any
well-known relay. Every query made through nostr-sdk here uses a *fresh* client, so that what
is checked is what the relay returned, not the library's local event tracker; the results are
cross-checked with our own minimal `RelayClient` where relay-side state matters.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TypeVar

from nostr_sdk import (
    Client,
    ClientNotification,
    ClientNotificationStream,
    Event,
    EventBuilder,
    Filter,
    Keys,
    Kind,
    KindStandard,
    Metadata,
    MetadataRecord,
    RelayMessageEnum,
    RelayUrl,
    ReqTarget,
    SendEventOutput,
    Tag,
    Timestamp,
)

from tests.client import connect
from tests.services import RelayProcess

TIMEOUT = 10.0
SDK_TIMEOUT = timedelta(seconds=TIMEOUT)

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, TIMEOUT)


@asynccontextmanager
async def sdk_client(relay: RelayProcess) -> AsyncIterator[Client]:
    """A nostr-sdk client connected to our relay only; shut down on exit."""
    client = Client()
    url = RelayUrl.parse(relay.url)
    assert await bounded(client.add_relay(url))
    try:
        output = await bounded(client.try_connect(timeout=SDK_TIMEOUT))
        assert output.failed == {}, f"nostr-sdk could not connect: {output.failed}"
        assert [str(u) for u in output.success] == [str(url)]
        yield client
    finally:
        await bounded(client.disconnect())
        await bounded(client.shutdown())


async def publish(client: Client, event: Event) -> SendEventOutput:
    """Send through nostr-sdk and require the relay to have accepted it (OK true)."""
    output = await bounded(client.send_event(event, ok_timeout=SDK_TIMEOUT))
    assert output.failed == {}, f"relay rejected {event.as_json()}: {output.failed}"
    assert len(output.success) == 1
    assert output.id == event.id()
    return output


async def fetch(relay: RelayProcess, *filters: Filter) -> list[Event]:
    """REQ through a fresh nostr-sdk client (its tracker knows nothing yet), until EOSE."""
    async with sdk_client(relay) as client:
        return await bounded(
            client.fetch_events(ReqTarget.auto(list(filters)), timeout=SDK_TIMEOUT)
        )


async def raw_query(relay: RelayProcess, *filters: dict[str, object]) -> list[dict[str, object]]:
    async with connect(relay.url) as client:
        return await client.query("cross-check", *filters)


def ids(events: list[Event]) -> set[str]:
    return {event.id().to_hex() for event in events}


async def next_matching(
    stream: ClientNotificationStream, predicate: Callable[[object], bool]
) -> object:
    """The first notification satisfying `predicate` (callers bound this with wait_for)."""
    while True:
        notification = await stream.next()
        assert notification is not None, "notification stream ended"
        if predicate(notification):
            return notification


def relay_message(notification: object) -> object | None:
    if isinstance(notification, ClientNotification.MESSAGE):
        return notification.message.as_enum()
    return None


async def test_publish_then_fetch_by_author(relay: RelayProcess) -> None:
    keys = Keys.generate()
    note = EventBuilder(Kind.from_std(KindStandard.TEXT_NOTE), "hello from nostr-sdk").finalize(
        keys
    )
    async with sdk_client(relay) as client:
        await publish(client, note)
    got = await fetch(relay, Filter().author(keys.public_key()).kind(Kind(1)))
    assert len(got) == 1
    assert got[0].id() == note.id()
    assert got[0].content() == "hello from nostr-sdk"
    assert got[0].author().to_hex() == keys.public_key().to_hex()
    assert got[0].verify()
    # What our own client sees is the very same event, byte for byte in its fields.
    stored = await raw_query(relay, {"authors": [keys.public_key().to_hex()]})
    assert [e["id"] for e in stored] == [note.id().to_hex()]
    assert stored[0]["sig"] == note.signature()


async def test_live_subscription_receives_published_note(relay: RelayProcess) -> None:
    alice = Keys.generate()
    async with sdk_client(relay) as publisher, sdk_client(relay) as subscriber:
        stream = subscriber.notifications()
        subscription = await bounded(
            subscriber.subscribe(
                ReqTarget.auto([Filter().author(alice.public_key()).kind(Kind(1))]),
                id="live-compat",
            )
        )
        assert subscription.failed == {}, subscription.failed
        assert subscription.id == "live-compat"

        # Only publish once the relay has finished the stored part (EOSE): the note must
        # arrive as a live event, not as a stored one.
        def is_eose(n: object) -> bool:
            message = relay_message(n)
            return (
                isinstance(message, RelayMessageEnum.END_OF_STORED_EVENTS)
                and message.subscription_id == "live-compat"
            )

        await bounded(next_matching(stream, is_eose))

        note = EventBuilder(Kind(1), "live through nostr-sdk").finalize(alice)
        await publish(publisher, note)

        def is_note(n: object) -> bool:
            return isinstance(n, ClientNotification.NEW_EVENT) and n.event.id() == note.id()

        received = await bounded(next_matching(stream, is_note))
        assert isinstance(received, ClientNotification.NEW_EVENT)
        assert received.subscription_id == "live-compat"
        assert received.event.content() == "live through nostr-sdk"
        assert received.event.verify()
        await bounded(subscriber.unsubscribe("live-compat"))


async def test_deletion_request_removes_the_note(relay: RelayProcess) -> None:
    keys = Keys.generate()
    note = EventBuilder(Kind(1), "soon gone").finalize(keys)
    async with sdk_client(relay) as client:
        await publish(client, note)
        assert ids(await fetch(relay, Filter().id(note.id()))) == {note.id().to_hex()}

        deletion = (
            EventBuilder(Kind.from_std(KindStandard.EVENT_DELETION), "mistake")
            .tags([Tag.event(note.id()), Tag.parse(["k", "1"])])
            .finalize(keys)
        )
        await publish(client, deletion)

    assert await fetch(relay, Filter().id(note.id())) == []
    assert ids(await fetch(relay, Filter().author(keys.public_key()))) == {deletion.id().to_hex()}
    assert await raw_query(relay, {"ids": [note.id().to_hex()]}) == []
    stored = await raw_query(relay, {"authors": [keys.public_key().to_hex()]})
    assert [e["id"] for e in stored] == [deletion.id().to_hex()]


async def test_replaceable_metadata_keeps_only_the_newest(relay: RelayProcess) -> None:
    keys = Keys.generate()
    now = int(time.time())

    def metadata(name: str, created_at: int) -> Event:
        return (
            Metadata.from_record(MetadataRecord(name=name, about=f"I am {name}"))
            .into_event_builder()
            .custom_created_at(Timestamp.from_secs(created_at))
            .finalize(keys)
        )

    older, newer = metadata("old name", now - 10), metadata("new name", now - 5)
    async with sdk_client(relay) as client:
        await publish(client, older)
        await publish(client, newer)

    got = await fetch(relay, Filter().author(keys.public_key()).kind(Kind(0)))
    assert ids(got) == {newer.id().to_hex()}
    assert Metadata.from_json(got[0].content()).as_record().name == "new name"
    stored = await raw_query(relay, {"authors": [keys.public_key().to_hex()], "kinds": [0]})
    assert [e["id"] for e in stored] == [newer.id().to_hex()]


async def test_addressable_long_form_is_replaced_per_d_tag(relay: RelayProcess) -> None:
    keys = Keys.generate()
    now = int(time.time())
    long_form = Kind.from_std(KindStandard.LONG_FORM_TEXT_NOTE)
    assert long_form.as_u16() == 30023 and long_form.is_addressable()

    def article(d: str, content: str, created_at: int) -> Event:
        return (
            EventBuilder(long_form, content)
            .tags([Tag.identifier(d), Tag.parse(["title", content])])
            .custom_created_at(Timestamp.from_secs(created_at))
            .finalize(keys)
        )

    # The session database is shared, and other tests query `#d: ["post"]` across all
    # authors, so the d tags carry a per-run suffix to keep this test's articles out of theirs.
    post, other_d = f"post-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"
    first = article(post, "first draft", now - 10)
    second = article(post, "final version", now - 5)
    other = article(other_d, "another article", now - 10)
    async with sdk_client(relay) as client:
        for event in (first, other, second):
            await publish(client, event)

    by_author = Filter().author(keys.public_key()).kind(long_form)
    assert ids(await fetch(relay, by_author)) == {second.id().to_hex(), other.id().to_hex()}
    by_d = await fetch(relay, Filter().author(keys.public_key()).kind(long_form).identifier(post))
    assert ids(by_d) == {second.id().to_hex()}
    assert by_d[0].content() == "final version"
    assert by_d[0].tags()[0].to_vec() == ["d", post]

    stored = await raw_query(relay, {"authors": [keys.public_key().to_hex()], "kinds": [30023]})
    assert sorted(e["id"] for e in stored) == sorted([second.id().to_hex(), other.id().to_hex()])


async def test_sending_the_same_event_twice_succeeds_both_times(relay: RelayProcess) -> None:
    keys = Keys.generate()
    note = EventBuilder(Kind(1), "say it twice").finalize(keys)
    async with sdk_client(relay) as client:
        stream = client.notifications()
        first = await publish(client, note)
        second = await publish(client, note)
        assert first.id == second.id == note.id()

        # Both sends reached the relay, which answered OK true both times (the second one
        # with NIP-01's "duplicate:" prefix), as seen by nostr-sdk's own message stream.
        def is_ok(n: object) -> bool:
            message = relay_message(n)
            return isinstance(message, RelayMessageEnum.OK) and message.event_id == note.id()

        oks = [await bounded(next_matching(stream, is_ok)) for _ in range(2)]
        answers = [relay_message(ok) for ok in oks]
        assert [a.status for a in answers] == [True, True]  # type: ignore[union-attr]
        assert answers[1].message.startswith("duplicate:")  # type: ignore[union-attr]

    stored = await raw_query(relay, {"ids": [note.id().to_hex()]})
    assert len(stored) == 1
