"""An answer leaves a scoring worker in one write, or not at all.

uvicorn writes a response's status line and headers when the app starts it, and its body
in a second write. A worker killed between the two leaves nginx with the headers of an
answer whose body never comes: nginx has already passed them on, cannot retry the request
on another worker, and its client reads half an answer. Here each response's writes are
held until the response is complete, then written as one: the kernel takes all of it or
nothing. A response the app never completes is never written at all (the connection is
closed), so nginx sees a failed connection, and retries the request on another worker.

`install` swaps uvicorn's request cycle for this one (httptools; uvicorn==0.54.0, pinned):
the worker's factory calls it, importing this module does not.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http import httptools_impl


class _Held:
    """A transport that keeps what is written until `release` (everything else passes)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.parts: list[bytes] = []
        self.whole = False  # the answer's last part is being written

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def release(self) -> None:
        """Write what was held, as one write."""
        if self.parts:
            self.real.write(b"".join(self.parts))
            self.parts = []

    def close(self) -> None:
        """Write a whole answer, then close (a `Connection: close` request); an answer not
        finished is dropped, never sent in part."""
        if self.whole:
            self.release()
        self.parts = []
        self.real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class OneWriteCycle(httptools_impl.RequestResponseCycle):
    """uvicorn's request cycle, its response's writes held until the response is done."""

    async def send(self, message: Any) -> None:
        start = message["type"] == "http.response.start" and not self.response_started
        if start:
            self.transport = cast(asyncio.Transport, _Held(self.transport))
        last = message["type"] == "http.response.body" and not message.get("more_body", False)
        held: object = self.transport
        if last and isinstance(held, _Held):
            held.whole = True
        await super().send(message)
        held = self.transport
        if isinstance(held, _Held) and (self.response_complete or self.disconnected):
            self.transport = held.real
            held.release()


def install() -> None:
    """Make every response of this process's uvicorn (httptools) leave in one write."""
    httptools_impl.RequestResponseCycle = OneWriteCycle  # type: ignore[misc]
