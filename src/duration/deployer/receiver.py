"""The deployer's process (`python -m duration.deployer --model NAME`): a webhook receiver
on 127.0.0.1:DURATION_DEPLOY_HOOK_PORT and one worker that brings serving to the registry's
aliases (`duration.ops.converge`), one change at a time.

- POST /hook takes a signed MLflow webhook (`duration.deployer.hook`): a genuine one about
  what serves wakes the worker (trigger `webhook`); any other is refused with its reason,
  in one line of the log.
- The worker also reconciles at start and every DURATION_RECONCILE_S (trigger
  `reconcile`), so a lost webhook costs at most one interval.
- GET /health says what it last did.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from duration.deployer import hook
from duration.errors import DurationError
from duration.infra.net import LOOPBACK
from duration.ops.converge import converge
from duration.ops.deploy import Trigger
from duration.registry.uris import quiet_stage_notice
from duration.settings import Settings
from duration.tracking import client

log = logging.getLogger("duration.deployer")


@dataclass(kw_only=True)
class Health:
    """What GET /health answers."""

    model: str
    started_at: float = field(default_factory=time.time)
    webhooks: int = 0  # taken
    refused: int = 0
    converged: int = 0  # passes of the worker
    last_trigger: str | None = None
    last_at: float | None = None
    last_steps: list[str] = field(default_factory=list)
    last_error: str | None = None


class Worker:
    """One converge at a time; a webhook that arrives during one asks for another."""

    def __init__(self, settings: Settings, model: str) -> None:
        self.settings, self.model = settings, model
        self.health = Health(model=model)
        self._wake = threading.Condition()
        self._asked: Trigger | None = Trigger.reconcile  # at start: reconcile once

    def ask(self, trigger: Trigger) -> None:
        with self._wake:
            if self._asked is not Trigger.webhook:  # a webhook outranks a reconcile
                self._asked = trigger
            self._wake.notify()

    def _next(self, stop: threading.Event) -> Trigger | None:
        with self._wake:
            if self._asked is None:
                self._wake.wait(self.settings.automate.reconcile_s)
            trigger, self._asked = self._asked or Trigger.reconcile, None
        return None if stop.is_set() else trigger

    def run(self, stop: threading.Event) -> None:
        while (trigger := self._next(stop)) is not None:
            self.once(trigger)

    def once(self, trigger: Trigger) -> None:
        h = self.health
        h.last_trigger, h.last_at, h.converged = trigger.value, time.time(), h.converged + 1
        try:
            done = converge(self.settings, self.model, trigger)
            h.last_steps, h.last_error = [d.said() for d in done], None
            for d in done:
                log.info("%s: %s", trigger.value, d.said())
        except DurationError as e:
            h.last_error = str(e)
            log.warning("%s: could not compare serving with the registry: %s", trigger, e)
        except Exception as e:  # noqa: BLE001 - the loop goes on; the next pass tries again
            h.last_error = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            log.warning("%s: failed: %s", trigger.value, h.last_error)


def handler(worker: Worker, secret: str) -> type[BaseHTTPRequestHandler]:
    """The request handler, bound to the worker and the webhook's secret."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "duration-deployer"

        def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/health":
                self._answer(HTTPStatus.NOT_FOUND, {"error": "GET /health or POST /hook"})
                return
            self._answer(HTTPStatus.OK, asdict(worker.health))

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/hook":
                self._answer(HTTPStatus.NOT_FOUND, {"error": "POST /hook"})
                return
            size = int(self.headers.get("Content-Length") or 0)
            if not 0 < size <= hook.MAX_BODY:
                worker.health.refused += 1
                log.warning("refused a webhook: a body of %d bytes", size)
                self._answer(HTTPStatus.BAD_REQUEST, {"error": "a body of 1-65536 bytes"})
                return
            body = self.rfile.read(size)
            try:
                d = hook.check(secret, dict(self.headers.items()), body, worker.model, time.time())
            except hook.Refused as e:
                worker.health.refused += 1
                log.warning("refused a webhook from %s: %s", self.client_address[0], e)
                self._answer(HTTPStatus.FORBIDDEN, {"error": str(e)})
                return
            worker.health.webhooks += 1
            what = d.alias or d.tag or ""
            log.info(
                "webhook %s %s v%s (%s): %s", d.event, what, d.version, d.delivery_id, d.verdict
            )
            if d.verdict is hook.Verdict.act:
                worker.ask(Trigger.webhook)
            self._answer(HTTPStatus.OK, {"delivery": d.delivery_id, "verdict": d.verdict.value})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass  # each request is logged once, above, with what was decided

    return Handler


def serve(settings: Settings, model: str, secret: str, stop: threading.Event) -> None:
    """Receive webhooks and converge until `stop` is set."""
    worker = Worker(settings, model)
    server = ThreadingHTTPServer((LOOPBACK, settings.automate.hook_port), handler(worker, secret))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
    log.info(
        "following the aliases of %s: webhooks at %s, reconcile every %.0f s",
        model,
        settings.automate.hook_url,
        settings.automate.reconcile_s,
    )
    work = threading.Thread(target=worker.run, args=(stop,), name="worker")
    work.start()
    stop.wait()
    server.shutdown()
    worker.ask(Trigger.reconcile)  # wake it; it sees `stop` and ends after its current step
    work.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duration.deployer")
    parser.add_argument("--model", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    settings = Settings.from_env()
    client.configure()
    quiet_stage_notice()
    client.use(settings.tracking.url)
    secret_file = settings.paths.deployer_state / "webhook.secret"
    try:
        secret = secret_file.read_text().strip()
    except OSError as e:
        log.error(
            "no webhook secret at %s (%s): start it with `duration serve start`", secret_file, e
        )
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve(settings, args.model, secret, stop)
    except OSError as e:
        log.error("cannot listen on %s: %s", settings.automate.hook_url, e)
        return 1
    log.info("stopped")
    return 0
