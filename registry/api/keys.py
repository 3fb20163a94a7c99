"""Typed application keys (aiohttp AppKey) instead of string-keyed globals."""

from __future__ import annotations

from aiohttp import web

from registry.api.listing import Listings
from registry.node import Node

NODE = web.AppKey("node", Node)
LISTINGS = web.AppKey("listings", Listings)
