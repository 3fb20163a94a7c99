"""Headless Chromium driven over the DevTools protocol, for assertions on a rendered page.

``chromium --dump-dom`` and ``--screenshot`` wait for the page to finish loading, which a page
holding a server-sent-events stream open never does; over the DevTools protocol a test reads
the DOM and takes a screenshot whenever it likes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.ports import free_port
from tests.timing import scaled


def binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events arriving meanwhile are skipped)."""
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self._ws.receive_json()
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def text(self) -> str:
        """The page's visible text (``document.body.innerText``)."""
        answer = await self.call(
            "Runtime.evaluate",
            expression="document.body ? document.body.innerText : ''",
            returnByValue=True,
        )
        return str(answer["result"].get("value", ""))

    async def text_with(self, wanted: list[str], timeout: float) -> str:
        """Poll the page's text until every string of ``wanted`` is in it."""
        deadline = time.monotonic() + timeout
        while True:
            text = await self.text()
            if all(w in text for w in wanted) or time.monotonic() > deadline:
                return text
            await asyncio.sleep(0.25)

    async def screenshot(self, path: Path) -> None:
        answer = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(answer["data"]))


@asynccontextmanager
async def browser(profile: Path, log: Path) -> AsyncIterator[aiohttp.ClientSession]:
    """A headless Chromium (its DevTools port on 127.0.0.1) and a session to reach it."""
    chromium = binary()
    assert chromium is not None
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",  # as root
                "--disable-gpu",
                "--no-first-run",
                f"--remote-debugging-port={port}",
                "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=out,
            stderr=out,
        )
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            deadline = time.monotonic() + scaled(30)
            while True:
                try:
                    async with session.get("/json/version") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"chromium did not start: {log.read_text()[-2000:]}")
                await asyncio.sleep(0.1)
            yield session
    finally:
        proc.kill()
        proc.wait()


@asynccontextmanager
async def page(session: aiohttp.ClientSession, url: str) -> AsyncIterator[Page]:
    """A new tab at ``url``, 1400x1000."""
    async with session.put(f"/json/new?{url}") as resp:
        target = await resp.json()
    async with (
        aiohttp.ClientSession() as ws_session,
        ws_session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws,
    ):
        tab = Page(ws)
        await tab.call(
            "Emulation.setDeviceMetricsOverride",
            width=1400,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield tab
