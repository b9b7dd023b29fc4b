"""Search, register and promote against both backends a team server runs on (SQLite and
PostgreSQL, parametrised); concurrent searches, promotes and pipelines lose nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlflow.tracking import MlflowClient

from duration.data import matrices
from duration.errors import DurationError
from duration.registry.lease import LEASE_TAG, registry_lease
from duration.registry.promote import promote
from duration.registry.register import register
from duration.tracking.experiments import experiment_id
from duration.training.config import SearchConfig
from duration.training.search import search
from tests.helpers import children, cli_env, running_runs, spawn, use_tracking

# Under pytest-xdist (`make test`: -n 2 --dist loadgroup) this module runs on one worker,
# so its expensive session fixture (the PostgreSQL cluster and its server) is built once.
pytestmark = pytest.mark.xdist_group("postgres")


def config(**kw) -> SearchConfig:
    return SearchConfig(progress=False, **kw)


def test_search_register_and_two_promotes_at_once(backend, vectorized):
    """A weak v1 in Production, a better searched v2 in Staging, then two `promote` commands
    at once: v2 is the only Production version and holds the alias; the other says it lost."""
    name = f"backend-{uuid.uuid4().hex[:8]}"
    inputs = matrices.load_inputs(vectorized, "green", "default", "2021-01", "2021-02")
    weak = search(inputs, config(trials=1, seed=1, max_rounds=2))
    v1 = register(vectorized, "2021-03", name, top_n=1, parent_run_id=weak.parent_run_id)
    assert v1.model_version == "1"
    assert MlflowClient().get_run(v1.run_id).data.tags["mlflow.parentRunId"] == weak.parent_run_id
    assert promote(vectorized, name).promoted

    good = search(inputs, config(trials=2, seed=7, max_rounds=12))
    assert good.status == "FINISHED" and good.completed == 2
    kids = children(good.parent_run_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    v2 = register(vectorized, "2021-03", name, top_n=2, parent_run_id=good.parent_run_id)
    assert v2.model_version == "2" and v2.run_id == good.best_run_id

    procs = [spawn(["promote", "--name", name], cli_env(vectorized, backend)) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted(out for out, _ in outs)
    assert said[0].startswith("kept Production: lost to another promote"), said
    assert said[1].startswith("promoted: challenger v2"), said
    client = MlflowClient()
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name='{name}'")}
    assert stages == {"1": "Archived", "2": "Production"}
    assert client.get_registered_model(name).aliases == {"production": "2"}
    assert running_runs() == []


def test_first_use_of_an_experiment_from_many_commands_at_once(backend):
    """Eight callers ask for the same new experiment at the same moment (as two searches or
    two pipelines do on a fresh server): all get one id, none the server's "already exists".
    Three rounds, as the first one of a process is often too slow to collide."""
    for _ in range(3):
        name = f"race-{uuid.uuid4().hex[:8]}"
        gate = threading.Barrier(8)

        def ask(_: int, name: str = name, gate: threading.Barrier = gate) -> str:
            gate.wait()
            return experiment_id(name, backend)

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(ask, range(8)))
        assert len(set(ids)) == 1
        assert MlflowClient(backend).get_experiment_by_name(name).experiment_id == ids[0]


def test_promote_lease_takes_turns_across_hosts(backend):
    """Three holders of the registry's promote lease at once (distinct owners, as on three
    hosts, where no lock file is shared): their turns never overlap, and the tag is gone after."""
    name = f"lease-{uuid.uuid4().hex[:8]}"
    MlflowClient(backend).create_registered_model(name)
    gate, turns = threading.Barrier(3), []

    def hold(_: int) -> bool:
        gate.wait()
        with registry_lease(name, wait=60, settle=0.5) as waited:
            start = time.monotonic()
            time.sleep(0.3)
            turns.append((start, time.monotonic()))
        return waited

    with ThreadPoolExecutor(3) as pool:
        waited = list(pool.map(hold, range(3)))
    turns.sort()
    assert all(a[1] <= b[0] for a, b in zip(turns, turns[1:], strict=False)), turns
    assert sum(waited) >= 2
    assert LEASE_TAG not in MlflowClient(backend).get_registered_model(name).tags


def test_promote_lease_of_another_host_is_waited_for_then_expires(mlflow_server):
    """A lease another host holds is refused in one line naming it after `wait`; once it
    expires the lease is taken, and a lease left by a dead process on this host at once."""
    client, name = MlflowClient(mlflow_server), f"lease-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)

    def lease(host: str, pid: int, since: float, until: float) -> None:
        owner = {"owner": f"{host}:{pid}:x", "host": host, "pid": pid, "since": since}
        client.set_registered_model_tag(name, LEASE_TAG, json.dumps({**owner, "until": until}))

    lease("build-7", 4242, time.time(), time.time() + 600)
    held = pytest.raises(DurationError, match=r"on build-7 \(pid 4242\).*promote_lease")
    with held, registry_lease(name, wait=1, settle=0.2):
        pass
    lease("build-7", 4242, time.time(), time.time() + 2)
    with registry_lease(name, wait=30, settle=0.2) as waited:
        assert waited
    since = time.time()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    lease(socket.gethostname(), int(dead.stdout), since, time.time() + 600)
    with registry_lease(name, wait=1, settle=0.2) as waited:
        assert not waited


def test_two_searches_at_once(backend, vectorized, tmp_path):
    """Two `duration tune` commands at once on one server: both finish, no trial is lost."""
    env = cli_env(vectorized, backend)
    args = ["tune", "--trials", "2", "--max-rounds", "5"]
    files = [tmp_path / f"search-{seed}.json" for seed in (3, 4)]
    procs = [spawn([*args, "--seed", f.stem[-1], "--summary", str(f)], env) for f in files]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    parents = [json.loads(f.read_text())["parent_run_id"] for f in files]
    assert len(set(parents)) == 2
    for parent in parents:
        assert MlflowClient().get_run(parent).info.status == "FINISHED"
        kids = children(parent)
        assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
        assert all("val_rmse" in k.data.metrics for k in kids)
    assert running_runs() == []


def test_two_pipelines_at_once_on_postgres(pg_server, vectorized, tmp_path):
    """Two teammates' pipelines at once against the PostgreSQL-backed server: both finish,
    each registers its own search's best trial, and one version ends in Production."""
    env = cli_env(vectorized, pg_server)
    args = ["pipeline", "--trials", "2", "--max-rounds", "10", "--baselines", "none"]
    files = [tmp_path / f"pipeline-{seed}.json" for seed in (1, 2)]
    procs = [spawn([*args, "--seed", f.stem[-1], "--summary", str(f)], env) for f in files]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    old = use_tracking(pg_server)
    try:
        client = MlflowClient()
        summaries = [json.loads(f.read_text()) for f in files]
        for s in summaries:
            v = client.get_model_version(s["model_name"], s["model_version"])
            assert v.run_id == s["registered"]["run_id"]
            # its own search, not whichever search the server saw last
            assert (
                client.get_run(v.run_id).data.tags["mlflow.parentRunId"]
                == (s["search"]["parent_run_id"])
            )
        name = summaries[0]["model_name"]
        prod = [
            v
            for v in client.search_model_versions(f"name='{name}'")
            if v.current_stage == "Production"
        ]
        assert len(prod) == 1
        assert client.get_registered_model(name).aliases.get("production") == prod[0].version
        assert running_runs() == []
    finally:
        use_tracking(old)
