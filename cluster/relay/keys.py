"""Typed application state keys (aiohttp AppKey), shared by the app factory and the routes."""

from __future__ import annotations

from aiohttp import web

from cluster.config import Settings
from cluster.relay.connection import ConnectionRegistry
from cluster.relay.context import RelayContext

SETTINGS_KEY = web.AppKey("settings", Settings)
CONTEXT_KEY = web.AppKey("context", RelayContext)
CONNECTIONS_KEY = web.AppKey("connections", ConnectionRegistry)
