"""A scoring worker: MLflow's scoring server for one registered version, with a front that
records every served ride in the prediction log.

uvicorn runs it (`--factory duration.infra.scoring_app:create`, several workers). The
front reads each JSON request once: it takes out the client's `ride_id`s, keeps only the
columns the model's signature reads, and refuses what no worker should take (bad JSON, no
rides, too many rides, a `ride_id` that is not a string or an integer) with an HTTP 4xx and
a JSON error. For the project's own model and plain values (what the signature's types ask
for, with no conversion to guess) it predicts itself, the same way MLflow's server would;
everything else goes to MLflow's server as it is, minus the columns it does not read. Every
answered ride becomes one row of the log, with the request's id (nginx's `X-Request-Id`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from duration.core.model import DurationModel
from duration.core.records import resolve_columns
from duration.errors import DurationError
from duration.infra.prediction_log import INPUTS, Counters, PredictionLog

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
JSON = "application/json"
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$")


@dataclass(frozen=True, kw_only=True)
class Rides:
    """A request's rides: the signature's columns, the clients' ride ids, how many."""

    columns: dict[str, list]
    ride_ids: list[str | None]
    n: int


NO_RIDES = Rides(columns={}, ride_ids=[], n=0)
ACCEPTED = b'{"accepted": true}'
SHADOW_BACKLOG = 2_000  # copies a shadow holds unscored; past it, new ones are dropped


class Refused(Exception):
    """A request no worker takes: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _table(payload: Any) -> tuple[list[str], list[list]]:
    """(columns, rows) of a `dataframe_split` or `dataframe_records` request."""
    if not isinstance(payload, dict):
        raise Refused(400, "send a JSON object with dataframe_split or dataframe_records")
    if isinstance(split := payload.get("dataframe_split"), dict):
        columns, data = split.get("columns"), split.get("data")
        if isinstance(columns, list) and isinstance(data, list):
            return [str(c) for c in columns], data
    if isinstance(records := payload.get("dataframe_records"), list):
        if not all(isinstance(r, dict) for r in records):
            raise Refused(400, "dataframe_records must be a list of objects, one per ride")
        names = list(dict.fromkeys(k for r in records for k in r))
        return names, [[r.get(k) for k in names] for r in records]
    raise Refused(400, "send the rides as dataframe_split or dataframe_records")


def _ride_ids(values: list) -> list[str | None]:
    for i, v in enumerate(values):
        if v is not None and (isinstance(v, bool) or not isinstance(v, str | int)):
            raise Refused(
                400, f"ride_id of ride {i} is {type(v).__name__}: send a string or an integer"
            )
    return [None if v is None else str(v) for v in values]


def parse(body: bytes, wanted: list[str], max_rides: int) -> Rides:
    """The rides of a JSON request, or Refused."""
    try:
        columns, rows = _table(json.loads(body))
    except ValueError as e:
        raise Refused(400, f"the request is not JSON: {e}") from e
    if not rows:
        raise Refused(400, "the request holds no rides: send at least one")
    if len(rows) > max_rides:
        raise Refused(
            413, f"the request holds {len(rows)} rides: send at most {max_rides} a request"
        )
    if any(not isinstance(r, list) or len(r) != len(columns) for r in rows):
        raise Refused(400, f"every ride must have the {len(columns)} columns given")
    by_name = {c: [r[j] for r in rows] for j, c in enumerate(columns)}
    ride_ids = _ride_ids(by_name.get("ride_id", [None] * len(rows)))
    kept = {c: by_name[c] for c in wanted if c in by_name}
    return Rides(columns=kept, ride_ids=ride_ids, n=len(rows))


def _kind(t: Any) -> str:
    """A signature column's type as a word: long, double, datetime... or any."""
    from mlflow.types import DataType  # deferred: MLflow loads in the worker only

    return t.name if isinstance(t, DataType) else str(t).lower()


def _plain(kind: str, values: list) -> np.ndarray | None:
    """A column of a signature type as the array MLflow's schema check would make of it,
    when its values need no guess (else None: MLflow's server decides)."""
    if kind == "long" and all(type(v) is int for v in values):
        return np.array(values, dtype=np.int64)
    if kind == "double" and all(type(v) in (int, float) for v in values):
        return np.array(values, dtype=np.float64)
    if kind == "datetime" and all(type(v) is str and _ISO.match(v) for v in values):
        if len({len(v) for v in values}) == 1:  # one format, as pandas infers it
            return np.array(values, dtype="datetime64[us]")
        return None
    if kind == "any" and all(v is None or type(v) in (int, float) for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return None


class Front:
    """The ASGI app: the front described above, around MLflow's scoring app."""

    def __init__(
        self, *, inner: Any, pyfunc: Any, log: PredictionLog | None, meta: dict[str, str],
        max_rides: int,
    ) -> None:  # fmt: skip
        self.inner, self.log, self.max_rides = inner, log, max_rides
        self.who = (meta["model_name"], meta["model_version"], meta["arm"])  # in SCHEMA's order
        self.shadow = meta["arm"] == "shadow"
        self.backlog = 0  # a shadow's copies acknowledged, not yet scored
        self.identity = [(b"x-model-name", meta["model_name"].encode()),
                         (b"x-model-version", meta["model_version"].encode()),
                         (b"x-model-arm", meta["arm"].encode()),
                         (b"x-served-by", str(os.getpid()).encode())]  # fmt: skip
        schema = pyfunc.metadata.get_input_schema()
        self.types = {c.name: _kind(c.type) for c in schema.inputs} if schema else {}
        self.required = [c.name for c in schema.inputs if c.required] if schema else []
        impl = pyfunc.unwrap_python_model() if hasattr(pyfunc, "unwrap_python_model") else None
        self.model = impl if isinstance(impl, DurationModel) else None
        canon = resolve_columns(list(self.types))  # canonical name -> the signature's
        self.inputs = [canon.get(c) for c in INPUTS]  # the log's inputs, as clients name them

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http" and scope["path"] == "/invocations":
            return await self._invocations(scope, receive, send)
        return await self.inner(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.log is not None:
                    self.log.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.log is not None:
                    self.log.close()  # a graceful stop flushes the log
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        body = await _body(receive)
        reply = [(b"x-request-id", request_id.encode()), *self.identity]
        smoke = bool(headers.get("x-duration-smoke"))  # a deploy's smoke test: not served
        if self.shadow and not smoke:  # a copy of a client's request: no one waits for it
            await _answer(send, 202, ACCEPTED, reply)  # acknowledged at once, scored after
            if self.backlog < SHADOW_BACKLOG and headers.get("content-type", JSON) == JSON:
                self._backlog(+1)
                asyncio.get_running_loop().create_task(self._mirrored(scope, body, request_id))
            elif self.log is not None:
                self.log.failed()  # more than it can score: dropped, counted
            return
        if not headers.get("content-type", JSON).startswith(JSON):
            return await self._pass(scope, body, send, reply)  # CSV, parquet: MLflow's own
        status, content, rides, pred = await self._score(scope, body)
        if status != 200:
            self._failed()
        elif not smoke:  # buffered before the client has its answer: a count never lags it
            self._record(request_id, rides, pred, time.perf_counter() - start)
        await _answer(send, status, content, reply)

    async def _mirrored(self, scope: Scope, body: bytes, request_id: str) -> None:
        """Score a shadow's copy of a request and log it, under the primary's request id."""
        start = time.perf_counter()
        try:
            status, _, rides, pred = await self._score(scope, body)
            if status == 200:
                self._record(request_id, rides, pred, time.perf_counter() - start)
            else:
                self._failed()
        finally:
            self._backlog(-1)

    def _backlog(self, change: int) -> None:
        self.backlog += change
        if self.log is not None:
            self.log.counters.unscored_copies = self.backlog

    async def _score(self, scope: Scope, body: bytes) -> tuple[int, bytes, Rides, list]:
        """The request's status, answer, rides and predictions."""
        try:
            rides = parse(body, list(self.types), self.max_rides)
            if missing := [c for c in self.required if c not in rides.columns]:
                raise Refused(
                    400, f"the rides lack {missing}, which the model requires: send every "
                    f"column of its signature ({', '.join(self.types)})",
                )  # fmt: skip
        except Refused as e:
            return e.status, _error(e), NO_RIDES, []
        status, content, pred = await self._predict(scope, rides)
        return status, content, rides, pred

    async def _predict(self, scope: Scope, rides: Rides) -> tuple[int, bytes, list]:
        """Our own prediction for plain values, else MLflow's server's answer: the status,
        the body, and the predictions (one per ride) when it answered."""
        maybe = {c: _plain(self.types[c], v) for c, v in rides.columns.items()}
        arrays = {c: a for c, a in maybe.items() if a is not None}
        if self.model is not None and len(arrays) == len(maybe):
            try:
                pred = self.model.predict_columns(arrays, rides.n)
            except DurationError as e:  # rides the features cannot take (a missing column)
                return 400, _error(Refused(400, str(e))), []
            if pred is not None:
                values = pred.tolist()
                return 200, json.dumps({"predictions": values}).encode(), values
        body = json.dumps(
            {
                "dataframe_split": {
                    "columns": list(rides.columns),
                    "data": [list(r) for r in zip(*rides.columns.values(), strict=True)],
                }
            }
        )
        status, _, content = await _call(self.inner, scope, body.encode())  # fmt: skip
        values = _predictions(content, rides.n) if status == 200 else []
        return status, content, values

    async def _pass(self, scope: Scope, body: bytes, send: Send, reply: list) -> None:
        status, headers, content = await _call(self.inner, scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers + reply})
        await send({"type": "http.response.body", "body": content})
        if status != 200:
            self._failed()

    def _record(self, request_id: str, rides: Rides, pred: list, seconds: float) -> None:
        if self.log is None:
            return
        n, cols = rides.n, rides.columns
        inputs = [cols.get(raw) or [None] * n if raw else [None] * n for raw in self.inputs]
        head = (request_id, None, time.time_ns() // 1_000_000, *self.who, seconds * 1000)
        if n == 1:  # the common case, without the zips
            self.log.add([(*head[:1], rides.ride_ids[0], *head[2:], *(c[0] for c in inputs),
                           pred[0])])  # fmt: skip
            return
        self.log.add([(*head[:1], ride_id, *head[2:], *values, p) for ride_id, *values, p in
                      zip(rides.ride_ids, *inputs, pred, strict=True)])  # fmt: skip

    def _failed(self) -> None:
        if self.log is not None:
            self.log.failed()


def _predictions(content: bytes, n: int) -> list:
    """The `n` predictions of MLflow's answer, as the log takes them (None where not one)."""
    try:
        values = json.loads(content)["predictions"]
    except (ValueError, KeyError, TypeError):
        values = []
    if not isinstance(values, list) or len(values) != n:
        return [None] * n
    return [v if type(v) in (int, float) else None for v in values]


def _error(e: Refused) -> bytes:
    code = "REQUEST_TOO_LARGE" if e.status == 413 else "BAD_REQUEST"
    return json.dumps({"error_code": code, "message": str(e)}).encode()


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, content: bytes, reply: list) -> None:
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + reply})
    await send({"type": "http.response.body", "body": content})


async def _call(app: Any, scope: Scope, body: bytes) -> tuple[int, list, bytes]:
    """Run an ASGI app on one request with `body`; its status, headers and whole answer."""
    sent = False
    answer: dict[str, Any] = {"status": 500, "headers": [], "body": []}

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], list(message["headers"])
        elif message["type"] == "http.response.body":
            answer["body"].append(message.get("body", b""))

    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await app({**scope, "headers": headers}, receive, send)
    return answer["status"], answer["headers"], b"".join(answer["body"])


def create() -> Front:
    """The worker's app (uvicorn's factory), for the version and log that `DURATION_SCORING`
    names (`duration.infra.backends.worker_spec` writes it)."""
    from mlflow.pyfunc import scoring_server  # deferred: MLflow loads in the worker only

    spec = json.loads(os.environ["DURATION_SCORING"])
    pyfunc = scoring_server.load_model_with_mlflow_config(spec["model"])
    if isinstance(impl := pyfunc.unwrap_python_model(), DurationModel):
        impl.for_serving()  # one thread a worker (the workers are the parallelism), and its trees
    log = None
    if spec["log"]:
        counters = Counters(pid=os.getpid(), model_name=spec["name"],
                            model_version=spec["version"], arm=spec["arm"])  # fmt: skip
        log = PredictionLog(Path(spec["log"]), Path(spec["status"]), counters, spec["flush_s"])
    meta = {"model_name": spec["name"], "model_version": spec["version"], "arm": spec["arm"]}
    return Front(inner=scoring_server.init(pyfunc), pyfunc=pyfunc, log=log, meta=meta,
                 max_rides=spec["max_rides"])  # fmt: skip
