"""A userspace TCP proxy that plays a bad network link between two namespaces.

Why our own: this kernel has neither netem nor iptables, so latency, stalls and cut connections
cannot come from the kernel. The proxy runs as its own process (`python -m tests.netns.proxy`,
usually inside a namespace of its own) so its timing does not depend on the test's busy event
loop. It is driven over a line-based control port, one JSON object per line:

    {"delay_up_ms": 20, "delay_down_ms": 20}   one-way delay per direction (up: client -> target)
    {"stall": 2.0}                             forward nothing for 2 s (bytes wait, then flow)
    {"cut": true}                              forward half of the next chunk, then reset every
                                               open connection (a cut mid-frame; one that
                                               sends nothing within 1 s is reset anyway)
    {"stats": true}                            counters: connections, bytes, cuts

Each line is answered with one JSON line (the current state and counters).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from typing import Any

CHUNK = 65536
MAX_BUFFERED = 16 << 20
"""Bytes a direction may hold while delaying or stalling; past it reading pauses (backpressure),
like a full TCP window, so a stall can never grow the proxy without bound."""


class Link:
    """The shared condition of the link: delays, stall deadline, cut requests, counters."""

    def __init__(self) -> None:
        self.delay = {"up": 0.0, "down": 0.0}
        self.stalled_until = 0.0
        self.cut_generation = 0
        self.connections: set[Connection] = set()
        self.stats: dict[str, int] = {
            "accepted": 0,
            "cut": 0,
            "cut_mid_frame": 0,
            "bytes_up": 0,
            "bytes_down": 0,
        }

    def state(self) -> dict[str, Any]:
        return {
            **self.stats,
            "open": len(self.connections),
            "delay_up_ms": self.delay["up"] * 1000,
            "delay_down_ms": self.delay["down"] * 1000,
            "stalled_for": max(0.0, self.stalled_until - time.monotonic()),
        }


class Direction:
    """One way of one connection: a reader fills a timed queue, a writer drains it when due."""

    def __init__(
        self,
        link: Link,
        name: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        owner: Connection,
    ) -> None:
        self.link = link
        self.name = name
        self.reader = reader
        self.writer = writer
        self.owner = owner
        self.queue: deque[tuple[float, bytes]] = deque()
        self.buffered = 0
        self.ready = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.eof = False

    async def read_loop(self) -> None:
        while True:
            await self.room.wait()
            data = await self.reader.read(CHUNK)
            if not data:
                self.eof = True
                self.ready.set()
                return
            self.queue.append((time.monotonic() + self.link.delay[self.name], data))
            self.buffered += len(data)
            if self.buffered > MAX_BUFFERED:
                self.room.clear()
            self.ready.set()

    async def write_loop(self) -> None:
        while True:
            if not self.queue:
                if self.eof:
                    with contextlib.suppress(OSError):
                        if self.writer.can_write_eof():
                            self.writer.write_eof()
                    return
                self.ready.clear()
                await self.ready.wait()
                continue
            due, data = self.queue[0]
            wait = max(due, self.link.stalled_until) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.5))  # re-check: a stall may start or end
                continue
            if self.owner.cut_at < self.link.cut_generation:
                # Cut mid-frame: half of this chunk goes out, then both sockets are reset.
                self.link.stats["cut_mid_frame"] += 1
                self.writer.write(data[: max(1, len(data) // 2)])
                with contextlib.suppress(OSError):
                    await self.writer.drain()
                self.owner.abort()
                return
            self.queue.popleft()
            self.buffered -= len(data)
            if self.buffered <= MAX_BUFFERED:
                self.room.set()
            self.writer.write(data)
            self.link.stats[f"bytes_{self.name}"] += len(data)
            await self.writer.drain()


class Connection:
    def __init__(
        self,
        link: Link,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.link = link
        self.cut_at = link.cut_generation
        self.client_writer = client[1]
        self.target_writer = target[1]
        self.up = Direction(link, "up", client[0], target[1], self)
        self.down = Direction(link, "down", target[0], client[1], self)
        self.aborted = False

    def abort(self) -> None:
        """Reset both sockets (RST, not FIN): what a dropped middlebox or a dead link does."""
        if self.aborted:
            return
        self.aborted = True
        self.link.stats["cut"] += 1
        for writer in (self.client_writer, self.target_writer):
            with contextlib.suppress(OSError, RuntimeError):
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                writer.transport.abort()

    async def run(self) -> None:
        self.link.connections.add(self)
        tasks = [
            asyncio.create_task(loop())
            for loop in (
                self.up.read_loop,
                self.up.write_loop,
                self.down.read_loop,
                self.down.write_loop,
            )
        ]
        try:
            # Either side closing (or any error) ends the connection once queued bytes are out.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if not any(t.exception() for t in done if not t.cancelled()):
                await asyncio.wait(tasks, timeout=30)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (self.client_writer, self.target_writer):
                writer.close()
            self.link.connections.discard(self)


async def serve(listen: tuple[str, int], target: tuple[str, int], control: tuple[str, int]) -> None:
    link = Link()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link.stats["accepted"] += 1
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(*target), timeout=5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        await Connection(link, (reader, writer), upstream).run()

    async def on_control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                command = json.loads(line)
                if "delay_up_ms" in command:
                    link.delay["up"] = float(command["delay_up_ms"]) / 1000
                if "delay_down_ms" in command:
                    link.delay["down"] = float(command["delay_down_ms"]) / 1000
                if "stall" in command:
                    link.stalled_until = time.monotonic() + float(command["stall"])
                if command.get("cut"):
                    link.cut_generation += 1
                    for connection in list(link.connections):
                        # A connection that sends no next chunk to cut in half within 1 s is
                        # reset anyway.
                        loop = asyncio.get_running_loop()
                        loop.call_later(1.0, connection.abort)
                writer.write(json.dumps(link.state()).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    proxy = await asyncio.start_server(on_client, *listen, reuse_address=True)
    controller = await asyncio.start_server(on_control, *control, reuse_address=True)
    print(f"proxy {listen} -> {target}, control {control}", flush=True)
    async with proxy, controller:
        await asyncio.gather(proxy.serve_forever(), controller.serve_forever())


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, type=_address)
    parser.add_argument("--target", required=True, type=_address)
    parser.add_argument("--control", required=True, type=_address)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.target, args.control))


if __name__ == "__main__":
    main()
