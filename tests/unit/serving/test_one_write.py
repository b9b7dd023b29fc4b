"""A scoring worker's answer leaves in one write, or not at all: uvicorn's real request
cycle, on a transport that records each write."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from duration.serving.one_write import OneWriteCycle


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def cycle(transport: Transport) -> OneWriteCycle:
    import logging

    return OneWriteCycle(
        scope={
            "method": "POST",
            "type": "http",
            "http_version": "1.1",
            "path": "/invocations",
            "query_string": b"",
            "client": None,
        },
        transport=transport,
        flow=SimpleNamespace(write_paused=False),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )


ANSWER = b'{"predictions": [12.5]}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"23")],
}


def test_the_headers_and_the_body_leave_as_one_write():
    t = Transport()
    c = cycle(t)

    async def answer() -> None:
        await c.send(START)
        assert t.writes == []  # held until the answer is whole
        await c.send({"type": "http.response.body", "body": ANSWER})

    asyncio.run(answer())
    assert len(t.writes) == 1
    assert t.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and t.writes[0].endswith(ANSWER)


def test_an_answer_never_finished_is_never_written():
    """The app fails after starting its answer: nothing leaves, the connection closes, and
    nginx retries the request on another worker."""
    t = Transport()
    c = cycle(t)

    async def app(scope, receive, send):
        await send(START)
        raise RuntimeError("the worker fails mid-answer")

    asyncio.run(c.run_asgi(app))
    assert t.writes == [] and t.closed


def test_an_answer_to_a_connection_close_request_is_written_whole_then_closed():
    t = Transport()
    c = cycle(t)
    c.keep_alive = False  # the client asked `Connection: close` (urllib does)

    async def answer() -> None:
        await c.send(START)
        await c.send({"type": "http.response.body", "body": ANSWER})

    asyncio.run(answer())
    assert len(t.writes) == 1 and t.writes[0].endswith(ANSWER) and t.closed
