"""The transport floor of `make bench-serve`: a bare ASGI app that reads the request and
answers a fixed prediction, run under uvicorn exactly as the scoring workers are."""

from __future__ import annotations

from typing import Any

ANSWER = b'{"predictions": [12.5]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict, receive: Any, send: Any) -> None:
    """Read the whole body, answer ANSWER (and 200 to /health)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
