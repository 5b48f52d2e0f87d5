"""Connections that never finish their request headers are closed: uvicorn's h11 protocol with a deadline.

uvicorn waits for a request's headers as long as the client likes (a slow-headers client kept 3,000 connections
open for minutes, issue 25). `HeaderDeadlineProtocol` closes a connection that has not sent a whole request head
within access.request_limits()["header_seconds"] (from its opening, and again after each response on a kept-alive
connection), and refuses a new connection outright while "pending" connections are already waiting for their heads,
or "pending_per_address" from the same address (a trusted proxy's address is not capped: popcorn.serve.access).
Bodies are timed by the ASGI layer (popcorn.ui.guard). Serve with `uvicorn.run(app, http=HeaderDeadlineProtocol)`.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from uvicorn.protocols.http.h11_impl import H11Protocol

from popcorn.serve import access

_PENDING: Counter = Counter()  # address -> connections waiting for their request head (this process)


class HeaderDeadlineProtocol(H11Protocol):
    _deadline: asyncio.TimerHandle | None = None
    _pending_as: str | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        limits = access.request_limits()
        capped = address not in access.trusted_proxies() and "*" not in access.trusted_proxies()
        if sum(_PENDING.values()) >= limits["pending"] or (capped and _PENDING[address] >=
                                                           limits["pending_per_address"]):
            transport.close()
            return
        self._wait_for_head()

    def _wait_for_head(self) -> None:
        self._stop_waiting()
        if self.transport.is_closing():
            return
        self._pending_as = self.client[0] if self.client else ""
        _PENDING[self._pending_as] += 1
        self._deadline = self.loop.call_later(access.request_limits()["header_seconds"], self._head_too_late)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._pending_as is not None:
            _PENDING[self._pending_as] -= 1
            if _PENDING[self._pending_as] <= 0:
                del _PENDING[self._pending_as]
            self._pending_as = None

    def _head_too_late(self) -> None:
        self._deadline = None
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a whole request head arrived
            self._stop_waiting()

    def handle_websocket_upgrade(self, event) -> None:
        self._stop_waiting()
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()  # may start the next, pipelined request
        if self.cycle is cycle and not self.transport.is_closing():  # kept alive: the next head, the same deadline
            self._wait_for_head()

    def connection_lost(self, exc) -> None:
        self._stop_waiting()
        super().connection_lost(exc)
