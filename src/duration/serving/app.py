"""A scoring worker: MLflow's scoring server for one registered version, behind a front that
records every served ride in the prediction log.

uvicorn runs it (`--factory duration.serving.app:create`, several workers). The front reads
each JSON request once (`duration.serving.parse`): it takes out the client's `ride_id`s,
keeps only the columns the model's signature reads, and refuses what no worker should take
with an HTTP 4xx and a JSON error. For the project's own model and plain values (what the
signature's types ask for, with no conversion to guess) it predicts itself, the same way
MLflow's server would; everything else goes to MLflow's server as it is, minus the columns
it does not read. Every answered ride becomes one `ServedRide` of the log, with the
request's id (nginx's `X-Request-Id`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from duration.core import rules
from duration.core.model import DurationModel
from duration.core.records import canonical, normalise, resolve_columns
from duration.errors import DurationError
from duration.infra.proc import alive
from duration.serving import one_write
from duration.serving.log import LOGGED_INPUTS, Counters, EpochMs, PredictionLog, ServedRequest
from duration.serving.metrics import CONTENT_TYPE, METRICS_PATH, Meter, meter_from_env
from duration.serving.parse import NO_RIDES, Refused, Rides, kind, parse, plain
from duration.serving.state import Role
from duration.serving.workers import WorkerSpec

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]
Predictions = list[float | None]  # one a ride; None where MLflow's answer had no number
JSON = "application/json"
ACCEPTED = b'{"accepted": true}'
SHADOW_BACKLOG = 2_000  # copies a shadow holds unscored; past it, new ones are dropped


class Front:
    """The ASGI app: the front described above, around MLflow's scoring app."""

    def __init__(
        self,
        *,
        inner: Any,
        pyfunc: Any,
        log: PredictionLog | None,
        spec: WorkerSpec,
        meter: Meter | None = None,
    ):
        self.inner, self.log, self.spec, self.meter = inner, log, spec, meter
        self.shadow = spec.role is Role.shadow
        self.backlog = 0  # a shadow's copies acknowledged, not yet scored
        self.identity = [
            (b"x-model-name", spec.name.encode()),
            (b"x-model-version", spec.version.encode()),
            (b"x-model-arm", spec.role.value.encode()),
            (b"x-served-by", str(os.getpid()).encode()),
        ]
        schema = pyfunc.metadata.get_input_schema()
        self.types = {c.name: kind(c.type) for c in schema.inputs} if schema else {}
        self.required = [c.name for c in schema.inputs if c.required] if schema else []
        impl = pyfunc.unwrap_python_model() if hasattr(pyfunc, "unwrap_python_model") else None
        self.model = impl if isinstance(impl, DurationModel) else None
        canon = resolve_columns(list(self.types))  # canonical name -> the signature's
        self.inputs = [(c, canon.get(c)) for c in LOGGED_INPUTS]  # as the clients name them
        self.names = {c: raw for c, raw in canon.items()}  # canonical -> as the model names it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"] == "/invocations":
            await self._invocations(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await self._metrics(send)
        else:
            await self.inner(scope, receive, send)

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
            return await self._copy(scope, body, request_id, headers, send, reply)
        if not headers.get("content-type", JSON).startswith(JSON):
            return await self._pass(scope, body, send, reply)  # CSV, parquet: MLflow's own
        status, content, rides, pred = await self._score(scope, body)
        if status >= 500:
            self._failed()
        elif (
            status == 200 and not smoke
        ):  # buffered before the client has its answer: a count never lags it
            self._record(request_id, rides, pred, time.perf_counter() - start)
        if not smoke:
            self._count(status, rides, start)
        await _answer(send, status, content, reply)

    async def _metrics(self, send: Send) -> None:
        """The group's metrics (`duration.serving.metrics`); 404 when they are off."""
        if self.meter is None:
            return await _answer(send, 404, b'{"error": "metrics are off"}', [])
        body = self.meter.exposition()
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _count(self, status: int, rides: Rides, start: float) -> None:
        if self.meter is not None:
            n = rides.n if status == 200 else 0
            self.meter.request(status, n, time.perf_counter() - start)

    async def _copy(
        self,
        scope: Scope,
        body: bytes,
        request_id: str,
        headers: dict[str, str],
        send: Send,
        reply: list[Header],
    ) -> None:
        """A shadow acknowledges a copy at once and scores it after."""
        await _answer(send, 202, ACCEPTED, reply)
        if self.backlog < SHADOW_BACKLOG and headers.get("content-type", JSON) == JSON:
            self._backlog(+1)
            asyncio.get_running_loop().create_task(self._mirrored(scope, body, request_id))
        elif self.log is not None:
            self.log.failed()  # more than it can score: dropped, counted

    async def _mirrored(self, scope: Scope, body: bytes, request_id: str) -> None:
        """Score a shadow's copy of a request and log it, under the primary's request id."""
        start = time.perf_counter()
        try:
            status, _, rides, pred = await self._score(scope, body)
            if status == 200:
                self._record(request_id, rides, pred, time.perf_counter() - start)
            elif status >= 500:
                self._failed()
            self._count(status, rides, start)
        finally:
            self._backlog(-1)

    def _backlog(self, change: int) -> None:
        self.backlog += change
        if self.log is not None:
            self.log.counters.unscored_copies = self.backlog

    async def _score(self, scope: Scope, body: bytes) -> tuple[int, bytes, Rides, Predictions]:
        """The request's status, answer, rides and predictions."""
        try:
            rides = parse(body, list(self.types), self.spec.max_rides)
        except Refused as e:
            self._refused(NO_RIDES)
            return e.status, e.body(), NO_RIDES, []
        try:
            if missing := [c for c in self.required if c not in rides.columns]:
                raise Refused(
                    400,
                    f"the rides lack {missing}, which the model requires: send every "
                    f"column of its signature ({', '.join(self.types)})",
                )
            arrays = self._arrays(rides)
            self._check(rides, arrays)
        except Refused as e:
            self._refused(rides)
            return e.status, e.body(), NO_RIDES, []
        status, content, pred = await self._predict(scope, rides, arrays)
        return status, content, rides, pred

    def _arrays(self, rides: Rides) -> dict[str, np.ndarray] | None:
        """The columns as the arrays MLflow's schema check would make, when no value needs
        a guess (else None: MLflow's server converts them)."""
        arrays = {}
        for c, values in rides.columns.items():
            if (a := plain(self.types[c], values)) is None:
                return None
            arrays[c] = a
        return arrays

    def _check(self, rides: Rides, arrays: dict[str, np.ndarray] | None) -> None:
        """Refuse the request if one ride breaks a rule (`duration.core.rules`), naming the
        ride, the field as the client named it, and what is allowed."""
        if found := rules.first_non_finite(rides.columns):
            name, index, value = found
            raise Refused(400, f"ride {index}: {name} is {value}: send a finite number, or null")
        canon = canonical(arrays, rides.n) if arrays is not None else None
        if canon is None:  # odd types: converted the way the model converts them
            self._readable(rides)
            frame = pd.DataFrame(rides.columns)
            for name in (n for c, n in self.names.items() if c.endswith("_datetime")):
                if name in frame:  # times of several formats, each read as it is
                    frame[name] = pd.to_datetime(frame[name], errors="coerce", format="mixed")
            frame = normalise(frame)
            canon = {c: frame[c].to_numpy() for c in frame.columns}
        if (broken := rules.first_broken(canon, np.datetime64("now", "us"))) is not None:
            name = self.names.get(broken.column, broken.column)
            sent = rides.columns.get(name, [broken.value] * rides.n)[broken.index]
            raise Refused(400, replace(broken, value=sent).message(name))

    def _readable(self, rides: Rides) -> None:
        """Refuse a value that is there but cannot be read as its column's type (a zone
        "x"), which the model's conversion would take as missing."""
        for canon, name in self.names.items():
            values = pd.Series(rides.columns.get(name, []), dtype=object)
            if canon.endswith("_datetime"):
                read = pd.to_datetime(values, errors="coerce", format="mixed")
            else:
                read = pd.to_numeric(values, errors="coerce")
            bad = values.notna().to_numpy() & read.isna().to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                message = rules.Broken(
                    column=canon, index=i, value=values[i], allowed=rules.allowed(canon)
                ).message(name)
                raise Refused(400, message)

    async def _predict(
        self, scope: Scope, rides: Rides, arrays: dict[str, np.ndarray] | None
    ) -> tuple[int, bytes, Predictions]:
        """Our own prediction for plain values, else MLflow's server's answer: the status,
        the body, and the predictions (one per ride) when it answered."""
        if self.model is not None and arrays is not None:
            try:
                pred = self.model.predict_columns(arrays, rides.n)
            except DurationError as e:  # rides the features cannot take (a missing column)
                return 400, Refused(400, str(e)).body(), []
            if pred is not None:
                values = pred.tolist()
                return 200, json.dumps({"predictions": values}).encode(), values
        rows = [list(r) for r in zip(*rides.columns.values(), strict=True)]
        body = json.dumps({"dataframe_split": {"columns": list(rides.columns), "data": rows}})
        status, _, content = await _call(self.inner, scope, body.encode(), JSON)
        values = _predictions(content, rides.n) if status == 200 else []
        return status, content, values

    async def _pass(self, scope: Scope, body: bytes, send: Send, reply: list[Header]) -> None:
        status, headers, content = await _call(self.inner, scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers + reply})
        await send({"type": "http.response.body", "body": content})
        if status != 200:
            self._failed()

    def _record(self, request_id: str, rides: Rides, pred: Predictions, seconds: float) -> None:
        """The answered request into the log, before its answer leaves."""
        if self.log is None:
            return
        spec = self.spec
        inputs = {c: rides.columns[raw] for c, raw in self.inputs if raw in rides.columns}
        self.log.add(
            ServedRequest(
                request_id=request_id,
                served_at=EpochMs(time.time_ns() // 1_000_000),
                model_name=spec.name,
                model_version=spec.version,
                arm=spec.role.value,
                weight=spec.weight,
                latency_ms=seconds * 1000,
                ride_ids=rides.ride_ids,
                inputs=inputs,
                predictions=pred,
            )
        )

    def _refused(self, rides: Rides) -> None:
        """Count a request refused for what it holds (never logged as served)."""
        if self.log is not None:
            self.log.refused(rides.n)

    def _failed(self) -> None:
        if self.log is not None:
            self.log.failed()


def _predictions(content: bytes, n: int) -> Predictions:
    """The `n` predictions of MLflow's answer, as the log takes them (None where not one)."""
    try:
        values = json.loads(content)["predictions"]
    except (ValueError, KeyError, TypeError):
        values = []
    if not isinstance(values, list) or len(values) != n:
        return [None] * n
    return [v if type(v) in (int, float) else None for v in values]


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, content: bytes, reply: list[Header]) -> None:
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + reply})
    await send({"type": "http.response.body", "body": content})


async def _call(
    app: Any, scope: Scope, body: bytes, content_type: str | None = None
) -> tuple[int, list[Header], bytes]:
    """Run an ASGI app on one request with `body` (of `content_type`, if given: the JSON the
    front rewrote); its status, headers and whole answer."""
    sent = False
    status, headers, chunks = 500, [], []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message["headers"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    replaced = {b"content-length"} | ({b"content-type"} if content_type else set())
    kept = [(k, v) for k, v in scope["headers"] if k.lower() not in replaced]
    kept.append((b"content-length", str(len(body)).encode()))
    if content_type:
        kept.append((b"content-type", content_type.encode()))
    await app({**scope, "headers": kept}, receive, send)
    return status, headers, b"".join(chunks)


def create() -> Front:
    """The worker's app (uvicorn's factory), for the spec its environment carries
    (`duration.serving.workers.WorkerSpec`)."""
    from mlflow.pyfunc import scoring_server  # deferred: MLflow loads in the worker only

    spec = WorkerSpec.from_env(os.environ)
    pyfunc = scoring_server.load_model_with_mlflow_config(spec.model)
    if isinstance(impl := pyfunc.unwrap_python_model(), DurationModel):
        impl.for_serving()  # one thread a worker (the workers are the parallelism), and its trees
    meter = meter_from_env(spec.role.value, spec.version)
    log = None
    if spec.log:
        counters = Counters(
            pid=os.getpid(), model_name=spec.name, model_version=spec.version, arm=spec.role.value
        )
        log = PredictionLog(
            Path(spec.log),
            Path(spec.status),
            counters,
            spec.flush_s,
            alive=lambda pid: alive(pid),
            meter=meter,
        )
    one_write.install()  # an answer leaves in one write: a worker's death never halves one
    inner = scoring_server.init(pyfunc)
    return Front(inner=inner, pyfunc=pyfunc, log=log, spec=spec, meter=meter)
