"""A synchronous view of ComfyUI's websocket (/ws?clientId=...): a background thread collects every JSON message.

aiohttp (a ComfyUI requirement) runs the connection on its own event loop in a daemon thread, so tests stay plain
synchronous code and Playwright's sync API (which refuses to run inside an asyncio loop) can share the process.
Binary frames (latent previews) are ignored.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

Event = tuple[str, dict]


class EventStream:
    """Connects at construction (raises ConnectionError if it cannot) and records ``(type, data)`` messages."""

    def __init__(self, url: str, connect_timeout: float = 30.0) -> None:
        self.url = url
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws = None
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="comfyui-ws", daemon=True)
        self._thread.start()
        if not self._connected.wait(connect_timeout) or self._error is not None:
            self.close()
            raise ConnectionError(f"websocket {url}: {self._error or 'no connection'}")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # recorded for the constructor / waiters
            self._error = err
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()
            self._connected.set()

    async def _main(self) -> None:
        import aiohttp

        self._loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url, heartbeat=30, max_msg_size=0) as ws:
                self._ws = ws
                self._connected.set()
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        try:
                            data = json.loads(msg.data)
                        except ValueError:
                            continue
                        with self._cond:
                            self._events.append((data.get("type", ""), data.get("data") or {}))
                            self._cond.notify_all()
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break

    def snapshot(self) -> list[Event]:
        with self._cond:
            return list(self._events)

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float) -> Event | None:
        """The first recorded event (past or future) matching ``predicate``; None on timeout or close."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for event in self._events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self._events)
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    return None
                self._cond.wait(min(left, 1.0))

    def close(self) -> None:
        loop, ws = self._loop, self._ws
        if loop is not None and ws is not None and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(ws.close(), loop).result(timeout=5)
            except Exception:  # already closing or the loop is gone
                pass
        self._thread.join(timeout=5)
