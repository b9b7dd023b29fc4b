"""The deployer's life: start it beside serving (with its webhook in the registry), say how
it is, stop it.

The webhook is one per receiver address: `start` creates it, or finds it and gives it this
host's secret (kept in a 0600 file, never in a command line or a log), so starting twice
leaves one; `stop` disables it, so MLflow does not deliver to nobody. Where the webhook
cannot be made (the team server keeps webhooks to admins), the reconcile loop still brings
serving to the aliases within DURATION_RECONCILE_S.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from duration.deployer.hook import EVENTS
from duration.errors import DurationError
from duration.infra.daemon import Daemon
from duration.infra.files import tail, write_atomic
from duration.infra.net import health_problem, port_in_use
from duration.ops import deploy
from duration.serving.state import State
from duration.settings import Settings
from duration.tracking.client import client

START_TIMEOUT_S = 60.0
NEEDLE = "duration.deployer"


@dataclass(frozen=True, kw_only=True)
class DeployerStatus:
    """The deployer, as `serve status` shows it."""

    running: bool
    url: str
    pid: int | None = None
    webhook: str | None = None  # its id in the registry, when it has one
    problem: str | None = None


def daemon(settings: Settings, name: str = "") -> Daemon:
    return Daemon(
        name="deployer",
        argv=[sys.executable, "-m", NEEDLE, "--model", name],
        folder=settings.paths.deployer_state,
        needle=NEEDLE,
        env=settings.to_env(),
    )


def _secret(settings: Settings) -> str:
    """This host's webhook secret (made once, 0600)."""
    path = settings.paths.deployer_state / "webhook.secret"
    with contextlib.suppress(OSError):
        if value := path.read_text().strip():
            return value
    value = secrets.token_urlsafe(32)
    write_atomic(path, value, mode=0o600)
    return value


def _webhook(settings: Settings) -> Any:
    """The registry's webhook to this host's receiver, if there is one."""
    url = settings.automate.hook_url
    return next((w for w in client().list_webhooks(max_results=1000) if w.url == url), None)


def register(settings: Settings) -> str:
    """Create the webhook to this receiver, or find it and give it this host's secret and
    events; its id."""
    from mlflow.entities.webhook import WebhookStatus  # deferred: MLflow is slow to import

    secret, found = _secret(settings), _webhook(settings)
    if found is not None:
        hook_id = str(found.webhook_id)
        client().update_webhook(
            hook_id,
            events=EVENTS,  # type: ignore[arg-type]
            secret=secret,
            status=WebhookStatus.ACTIVE,
        )
        return hook_id
    made = client().create_webhook(
        name="duration-deployer",
        url=settings.automate.hook_url,
        events=EVENTS,  # type: ignore[arg-type]
        description="duration: serving follows the registry's aliases on this host",
        secret=secret,
    )
    return str(made.webhook_id)


def start(settings: Settings, name: str) -> DeployerStatus:
    """Start the deployer for model `name` unless it runs; register its webhook."""
    d = daemon(settings, name)
    if d.pid() is None:
        if port_in_use(settings.automate.hook_port):
            raise DurationError(
                f"port {settings.automate.hook_port} is taken by another program: the deployer "
                "needs it; pick another with DURATION_DEPLOY_HOOK_PORT"
            )
        _secret(settings)
        d.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while health_problem(settings.automate.deployer_url, timeout=1.0) is not None:
            if d.exited() or time.monotonic() > deadline:
                d.stop()
                raise DurationError(
                    f"the deployer did not start ({tail(d.log)[:200]}): see {d.log}"
                )
            time.sleep(0.2)
    return status(settings, register_hook=True)


def status(settings: Settings, register_hook: bool = False) -> DeployerStatus:
    """Whether the deployer runs, and its webhook (registered first, with `register_hook`)."""
    from mlflow.exceptions import MlflowException  # deferred: MLflow is slow to import

    d, url = daemon(settings), settings.automate.hook_url
    pid = d.pid()
    if pid is None:
        return DeployerStatus(running=False, url=url, problem="not running")
    try:
        if register_hook:
            return DeployerStatus(running=True, url=url, pid=pid, webhook=register(settings))
        found = _webhook(settings)
    except MlflowException as e:
        why = " ".join(str(e).split())[:160]
        return DeployerStatus(
            running=True,
            url=url,
            pid=pid,
            problem=f"no webhook ({why}): serving follows the aliases every "
            f"{settings.automate.reconcile_s:.0f} s (DURATION_RECONCILE_S)",
        )
    hook_id = None if found is None else str(found.webhook_id)
    return DeployerStatus(running=True, url=url, pid=pid, webhook=hook_id)


def stop(settings: Settings) -> bool:
    """Stop the deployer and disable its webhook; True if it ran."""
    from mlflow.entities.webhook import WebhookStatus  # deferred: MLflow is slow to import

    ran = daemon(settings).stop()
    with contextlib.suppress(Exception):  # the registry gone or not ours: nothing to disable
        if (found := _webhook(settings)) is not None:
            client().update_webhook(str(found.webhook_id), status=WebhookStatus.DISABLED)
    return ran


@dataclass(frozen=True, kw_only=True)
class Started:
    """`duration serve start`: what serves, and the deployer that follows the registry."""

    state: State
    deployer: DeployerStatus


def start_serving(settings: Settings, name: str, wait: float = 0.0) -> Started:
    """Serve Production (unless it serves), then start the deployer beside it."""
    state = deploy.start(settings, name, wait)
    return Started(state=state, deployer=start(settings, name))


def stop_serving(settings: Settings, wait: float = 0.0) -> list[str]:
    """Stop the deployer first (it would redeploy), then the proxy and the workers."""
    stopped = ["the deployer"] if stop(settings) else []
    return stopped + deploy.stop(settings, wait)
