"""The operator dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by
playwright): log in with the admin token, see live figures and drawn plots; a wrong token is
refused. DASHBOARD_SCREENSHOT=path also writes the screenshot there (docs/dashboard.png)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from playwright.async_api import Browser, Page, async_playwright

from cluster.nostr.signing import Signer
from cluster.payments.claims import payment_tag, sender_pubkey_of
from cluster.payments.dassie import DassieClient
from tests.client import RelayClient, connect
from tests.services import LedgerProcess, RelayProcess, RelayStarter

CHROMIUM = "/usr/bin/chromium"
TOKEN = secrets.token_hex(20)
PAID_KIND, PRICE = 4000, 10


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} missing: run scripts/install-system-deps.sh"
    async with async_playwright() as driver:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def traffic(client: RelayClient, signer: Signer, count: int) -> None:
    """Accepted events, one duplicate and one invalid one, so every series has something."""
    events = [signer.sign(1, f"dashboard browser {i}") for i in range(count)]
    for event in events:
        assert (await client.publish(event))[2] is True
    assert (await client.publish(events[0]))[3].startswith("duplicate:")
    bad = signer.sign(1, "signed")
    tampered = {
        "id": bad.id,
        "pubkey": bad.pubkey,
        "created_at": bad.created_at,
        "kind": bad.kind,
        "tags": bad.tags,
        "content": "not what was signed",
        "sig": bad.sig,
    }
    assert (await client.publish(tampered))[3].startswith("invalid:")


async def paid_traffic(client: RelayClient, ledger: LedgerProcess, count: int) -> str:
    """Events of a priced kind, each carrying a claim on a channel opened at the ledger node."""
    payer = Signer()
    async with DassieClient(ledger.url, ledger.token, timeout=5) as node:
        channel = await node.open_channel(sender_pubkey_of(payer.secret), 10_000, "BTC", 3600)
    for nonce in range(1, count + 1):
        tag = payment_tag(payer.secret, channel.channel_id, PRICE, nonce, "BTC")
        event = payer.sign(PAID_KIND, f"paid {nonce}", [tag])
        assert (await client.publish(event))[2] is True
    return channel.channel_id


async def number(page: Page, selector: str) -> float:
    text = (await page.text_content(selector) or "").replace(",", "").strip()
    return float(text) if text and text[0].isdigit() else 0.0  # "\u2013" before any data


async def points(page: Page, selector: str) -> float:
    return float(await page.get_attribute(selector, "data-points") or 0)


async def until(read: Callable[[], Awaitable[float]], at_least: float, timeout: float = 15) -> None:
    """Poll the page from here (its CSP forbids the eval that page.wait_for_function uses)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (value := await read()) < at_least:
        assert loop.time() < deadline, f"stuck at {value}, expected at least {at_least}"
        await asyncio.sleep(0.25)


async def revenue_rows(page: Page, kind: int) -> float:
    """Revenue rows for `kind` in the table (the figures are cached for a few seconds)."""
    cells = await page.locator("#revenue-table tbody tr td:first-child").all_text_contents()
    return float(cells.count(str(kind)))


async def painted_pixels(page: Page, selector: str) -> int:
    """Pixels the page drew on a canvas (not transparent): the plot really is drawn."""
    return int(
        await page.eval_on_selector(
            selector,
            """canvas => {
                const data = canvas.getContext('2d')
                    .getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
                return painted;
            }""",
        )
    )


async def test_dashboard_in_chromium(
    start_relay: RelayStarter, browser: Browser, ledger: LedgerProcess, tmp_path: Path
) -> None:
    relay: RelayProcess = start_relay.start(
        workers=2,
        RELAY_ADMIN__TOKEN=TOKEN,
        DASSIE_RPC_URL=ledger.url,
        DASSIE_RPC_TOKEN=ledger.token,
        RELAY_PRICING=f"{PAID_KIND}:{PRICE}",
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{relay.http_url}/dashboard/data") as response,
    ):
        assert response.status == 401
    signer = Signer()
    async with connect(relay.url) as client, connect(relay.url) as listener:
        await listener.send(["REQ", "live", {"kinds": [1]}])
        page = await browser.new_page(viewport={"width": 1400, "height": 1500})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(f"{relay.http_url}/dashboard")
        assert await page.is_visible("#login") and not await page.is_visible("#dashboard")

        await page.fill("#token", "not-the-token-" + "x" * 30)
        await page.click("#token-login")
        await page.wait_for_selector("#login-error:has-text('wrong token')", timeout=10_000)
        assert not await page.is_visible("#dashboard")
        errors.clear()  # the browser logs the refused request (401) as a console error

        await page.fill("#token", TOKEN)
        await page.click("#token-login")
        await page.wait_for_selector("#dashboard", state="visible", timeout=10_000)
        assert await page.evaluate("sessionStorage.getItem('relay-dashboard-auth')") is not None

        # Traffic while the page polls, so the rolling series have rising points.
        for _ in range(4):
            await traffic(client, signer, 8)
            await asyncio.sleep(1.0)
        channel = await paid_traffic(client, ledger, 5)
        await until(lambda: number(page, "#v-accepted-total"), 32)
        await until(lambda: points(page, "#chart-events"), 6)
        assert await number(page, "#v-accepted-total") >= 32
        assert await number(page, "#v-connections") >= 2
        assert await number(page, "#v-subscriptions") >= 1
        assert (await page.text_content("#v-instances") or "").strip() == "1 / 1"
        assert await painted_pixels(page, "#chart-events") > 500
        assert await painted_pixels(page, "#chart-acceptance") > 500
        instances = await page.text_content("#instances-table tbody")
        assert instances is not None and f":{relay.port}" in instances
        ok_table = await page.text_content("#ok-table tbody") or ""
        assert "accepted" in ok_table and "invalid" in ok_table and "duplicate" in ok_table
        latency = await page.text_content("#latency-table tbody") or ""
        assert "Event acceptance" in latency and "ms" in latency
        await until(lambda: revenue_rows(page, PAID_KIND), 1)
        revenue = await page.text_content("#revenue-table tbody") or ""
        assert "BTC" in revenue and "Payment verification" in latency
        channels = await page.text_content("#channels-table tbody") or ""
        assert channel[:16] in channels
        assert "ok" in (await page.text_content("#v-health") or "")

        shot = tmp_path / "dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("DASHBOARD_SCREENSHOT"):
            shutil.copy(shot, os.environ["DASHBOARD_SCREENSHOT"])
        assert errors == []

        await page.click("#logout")
        assert await page.is_visible("#login")
        assert await page.evaluate("sessionStorage.getItem('relay-dashboard-auth')") is None


# A stand-in NIP-07 extension: window.nostr as extensions inject it, signing in this test.
NIP07_SHIM = """
window.nostr = {
    getPublicKey: async () => window.operatorPubkey(),
    signEvent: async (event) => JSON.parse(await window.operatorSign(JSON.stringify(event))),
};
"""


async def test_dashboard_login_with_a_nip07_extension(
    start_relay: RelayStarter, browser: Browser
) -> None:
    operator = Signer()
    relay = start_relay.start(workers=1, RELAY_ADMIN__PUBKEYS=json.dumps([operator.pubkey]))
    signed: list[dict[str, Any]] = []

    def sign(template: str) -> str:
        event = json.loads(template)
        done = operator.sign(event["kind"], event["content"], event["tags"], event["created_at"])
        signed.append(msgspec.to_builtins(done))
        return msgspec.json.encode(done).decode()

    context = await browser.new_context()
    await context.expose_function("operatorSign", sign)
    await context.expose_function("operatorPubkey", lambda: operator.pubkey)
    await context.add_init_script(NIP07_SHIM)
    page = await context.new_page()
    await page.goto(f"{relay.http_url}/dashboard")
    await page.wait_for_selector("#nostr-login", state="visible", timeout=10_000)
    await page.click("#nostr-login")
    await page.wait_for_selector("#dashboard", state="visible", timeout=10_000)
    await until(lambda: points(page, "#chart-events"), 4)  # two polls, two series
    assert (await page.text_content("#v-instances") or "").strip() == "1 / 1"
    # One fresh NIP-98 event per data request, naming the exact URL and method.
    assert len(signed) >= 2 and all(e["kind"] == 27235 for e in signed)
    assert ["u", f"{relay.http_url}/dashboard/data"] in signed[0]["tags"]
    assert ["method", "GET"] in signed[0]["tags"]
    await context.close()
