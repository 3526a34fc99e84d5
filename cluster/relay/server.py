"""Run the relay app under gunicorn with uvloop aiohttp workers, configured from Settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from gunicorn.app.base import BaseApplication

from cluster.config import Settings
from cluster.logs import configure, logging_config
from cluster.metrics import mark_worker_dead
from cluster.relay.app import create_app
from cluster.relay.private_metrics import private_metrics_listener

WORKER_CLASS = "aiohttp.GunicornUVLoopWebWorker"


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    network = settings.network
    return {
        "bind": [f"{network.host}:{network.port}"],
        "workers": network.workers,
        "worker_class": WORKER_CLASS,
        # Time a worker gets on SIGTERM to answer in-flight EVENTs and close sockets (1001).
        "graceful_timeout": int(network.shutdown_timeout) + 5,
        "timeout": 30,
        "keepalive": 75,
        "backlog": 4096,
        "worker_connections": 20_000,
        "accesslog": None,
        "control_socket_disable": True,
        "loglevel": "info",
        "logconfig_dict": logging_config(settings.logging.level, settings.logging.format),
        "proc_name": f"relay-cluster:{network.port}",
        "child_exit": _child_exit,
    }


def _child_exit(server: object, worker: Any) -> None:
    mark_worker_dead(worker.pid)


class RelayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's programmatic API: settings are loaded once, in the master, before forking."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.options = gunicorn_options(settings)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[[], Awaitable[web.Application]]:
        settings = self.settings

        async def app_factory() -> web.Application:
            app = create_app(settings)
            # Every worker competes for network.metrics_port; one serves it (private_metrics).
            app.cleanup_ctx.append(private_metrics_listener)
            return app

        return app_factory


def serve(settings: Settings) -> None:
    configure(settings.logging.level, settings.logging.format)
    RelayServer(settings).run()
