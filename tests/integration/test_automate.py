"""Level 4 with a real orchestrator (Dagster's daemon and webserver, started by
`duration.automate.life`), real MLflow, real serving and the deployer, on loopback: months
copied into a temporary mirror are decided with no command typed; a live canary is decided by
the next month's served rides and finished through the webhook; the alerts arrive once each;
a kill -9 mid-month, a re-published month, a month published twice and a broken file; and
`automate stop` leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import psutil
import pytest
from mlflow.tracking import MlflowClient

from benchmarks.support.alert_sink import Sink, alert_sink
from benchmarks.support.browser import chromium
from duration.automate import life, sensors
from duration.automate.assets import MODEL_ENV
from duration.data.tlc import trip_file
from duration.deployer import life as deployer
from duration.errors import DurationError
from duration.infra.net import free_port, port_in_use
from duration.ops import life_page, traffic
from duration.ops.decision import recorded
from duration.ops.specs import TrafficRequest
from duration.serving.state import read_state
from duration.settings import Automate, Monitor, Paths, Serve, Settings, Tracking
from duration.tracking.names import (
    AB_EXPERIMENT,
    CYCLE_EXPERIMENT,
    DEPLOY_EXPERIMENT,
    MONITOR_EXPERIMENT,
)
from tests.helpers import until

pytestmark = pytest.mark.xdist_group("automate")
LIFE = "document.getElementById('life').textContent"  # the page's figures, as it embeds them


def publish(source: Path, mirror: Path, month: str, data: bytes | None = None) -> None:
    """The TLC publishes `month` (its real file, or `data`): whole, at once."""
    name = trip_file("green", month)
    part = mirror / "trip-data" / f".{name}.part"
    if data is None:
        shutil.copyfile(source / "trip-data" / name, part)
    else:
        part.write_bytes(data)
    part.rename(mirror / "trip-data" / name)


def orchestrated(
    tmp_path: Path, mirror_path: Path, uri: str, sink: Sink, live: str = "canary", **monitor
) -> Settings:
    """A home of its own: a temporary mirror with green 2021-01..03, free ports, a poll a
    second, the alerts to `sink`, a challenger put live as `live`."""
    mirror = tmp_path / "tlc"
    for part in ("misc", "metadata"):
        shutil.copytree(mirror_path / part, mirror / part)
    (mirror / "trip-data").mkdir()
    for month in ("2021-01", "2021-02", "2021-03"):
        publish(mirror_path, mirror, month)
    return Settings(
        paths=Paths(home=tmp_path / "home", tlc_url=f"file://{mirror}"),
        tracking=Tracking(uri=uri),
        serve=Serve(port=free_port(), workers=1),
        monitor=Monitor(**monitor),
        automate=Automate(
            port=free_port(),
            hook_port=free_port(),
            poll_s=1,
            reconcile_s=5,
            alert_url=sink.url,
            trials=1,
            live=live,
            live_weight=30,
        ),
    )


def with_test_month(name: str) -> str:
    """Production's test month: the months up to it count as decided."""
    MlflowClient().set_model_version_tag(name, "1", "test_month", "2021-03")
    return name


def runs_of(experiment: str, name: str, month: str | None = None) -> pd.DataFrame:
    where = f"tags.model_name = '{name}'" + (f" and tags.month = '{month}'" if month else "")
    return mlflow.search_runs(experiment_names=[experiment], filter_string=where)


def listening(s: Settings) -> bool:
    """True while the orchestrator's UI port accepts connections."""
    return port_in_use(s.automate.port)


def left_running(s: Settings) -> list[str]:
    """Processes of this home's orchestrator that still run."""
    home = str(life.home(s))
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if "dagster" in " ".join(p.info["cmdline"] or []) and (
                (p.info["environ"] or {}).get("DAGSTER_HOME") == home
            ):
                found.append(f"{p.pid} {' '.join(p.info['cmdline'])[:80]}")
        except psutil.Error:
            continue
    return found


def test_months_are_decided_with_no_command_and_a_canary_by_the_next(
    weak, mirror_path, mlflow_server, nginx, tmp_path
):
    name = with_test_month(weak)
    with alert_sink() as sink:
        s = orchestrated(tmp_path, mirror_path, mlflow_server, sink, rmse_ratio=1.0001)
        mirror = Path(s.paths.tlc_url.removeprefix("file://"))
        deployer.start_serving(s, name)
        try:
            st = life.start(s, name)
            assert st.running and st.url.startswith("http://127.0.0.1:")
            # 2021-04 is published: degraded (ratio 1.0001), so the cycle retrains, gates on
            # 2021-04 and puts the winner live as a canary for 30% of clients
            publish(mirror_path, mirror, "2021-04")
            assert until(lambda: recorded(name, "2021-04") is not None, 300), life.status(s)
            april = recorded(name, "2021-04")
            assert (april.verdict, april.action) == ("degraded", "canary"), april.reason
            canary = read_state(s).candidate
            assert (canary.version, canary.role.value, canary.weight) == ("2", "canary", 30)
            # 2021-05 happens: its rides are served by v1 and the canary, then published
            happens = s.model_copy(
                update={"paths": s.paths.model_copy(update={"tlc_url": f"file://{mirror_path}"})}
            )
            req = TrafficRequest(month="2021-05", rides=4000, rate=2000, batch=4)
            t = traffic.replay(happens, req)
            assert t.failed_requests == 0 and set(t.arms) == {"production", "canary"}
            publish(mirror_path, mirror, "2021-05")
            assert until(lambda: recorded(name, "2021-05") is not None, 300), life.status(s)
            may = recorded(name, "2021-05")
            assert may.action == "promoted" and may.production_version == "2", may.reason
            # the finish moved the alias; the deployer served it, through the webhook
            assert until(lambda: read_state(s).version == "2" and not read_state(s).candidate, 60)

            # each deploy run ended (a reconcile pass may be finishing one): the alias moves
            # were deployed through the webhook, the canary, then the finish
            def ended():
                return runs_of(DEPLOY_EXPERIMENT, name).query("status != 'RUNNING'")

            assert until(lambda: len(ended()) == len(runs_of(DEPLOY_EXPERIMENT, name)), 60)
            deploys = ended()
            moved = deploys[deploys["tags.outcome"].isin(["canary", "finished"])]
            assert set(moved["tags.outcome"]) == {"canary", "finished"}, deploys
            assert set(moved["tags.trigger"]) == {"webhook"}
            # every run the orchestrator started names its run
            for exp in (CYCLE_EXPERIMENT, MONITOR_EXPERIMENT):
                assert runs_of(exp, name)["tags.orchestrator_run_id"].notna().all()
            st = life.status(s)
            assert st.months_taken == ["2021-04", "2021-05"] and not st.in_flight
            assert st.last_decision["action"] == "promoted"
        finally:
            stopped = life.stop(s)
            deployer.stop_serving(s)
        assert sorted(stopped) == ["daemon", "webserver"]
        assert not port_in_use(s.automate.port) and left_running(s) == []
        assert life.stop(s) == []  # nothing running: nothing to stop
        # each event once: a degraded month twice, one retrain, one arm, one A/B decision
        said = [(m["event"], m.get("month")) for m in sink.messages]
        assert len(said) == len(set(said)), said
        events = sorted(e for e, _ in said)
        assert events == ["ab_decision", "degraded", "degraded", "live_arm", "retrained"]
    the_life_page_shows_what_the_runs_hold(s, name, tmp_path)


def the_life_page_shows_what_the_runs_hold(s: Settings, name: str, tmp_path: Path) -> None:
    """`duration report` over the two months: it opens in headless Chromium with no error,
    and its figures are the monitoring and A/B runs' own."""
    with pytest.raises(DurationError, match="no monitoring run for 2021-03: run `duration mon"):
        life_page.report(s, name, "2021-03", "2021-05", tmp_path / "no.html")
    out, run_id = life_page.report(s, name, "2021-04", "2021-05", tmp_path / "life.html")
    assert MlflowClient().list_artifacts(run_id, "report")[0].path == "report/model-life.html"
    with chromium() as page:
        page.open(out.as_uri(), 5)
        assert page.errors() == []
        shown = json.loads(page.call("Runtime.evaluate", expression=LIFE)["result"]["value"])
    monitoring = runs_of(MONITOR_EXPERIMENT, name).set_index("tags.month")
    for month in shown["months"]:
        run = monitoring.loc[monitoring["run_id"] == month["monitoring_run"]].iloc[0]
        assert month["offline_rmse"] == run["metrics.rmse"] and run.name == month["month"]
    ab = mlflow.search_runs(
        experiment_names=[AB_EXPERIMENT], filter_string=f"tags.model_name = '{name}'"
    )
    may = {a["role"]: a for a in shown["months"][1]["served"]}
    assert may["canary"]["rmse"] == ab.iloc[0]["metrics.canary_rmse"]
    assert may["production"]["ci_low"] == ab.iloc[0]["metrics.production_ci_low"]
    assert shown["months"][1]["served_rides"] == 4000


def test_a_kill_a_republished_month_a_twice_published_one_and_a_broken_file(
    weak, mirror_path, mlflow_server, tmp_path
):
    name = with_test_month(weak)
    with alert_sink() as sink:
        # thresholds no month reaches: every verdict is ok, every decision keep; nothing serves
        s = orchestrated(
            tmp_path, mirror_path, mlflow_server, sink, "off", rmse_ratio=10, drift_share=1
        )
        mirror = Path(s.paths.tlc_url.removeprefix("file://"))
        life.start(s, name)
        try:
            # killed -9 in the middle of 2021-04: on restart, retried and decided once
            publish(mirror_path, mirror, "2021-04")
            started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
            with life.instance(s) as inst:
                assert until(lambda: inst.get_runs(started), 60)
            time.sleep(3)
            for d in life.daemons(s):
                os.killpg(d.pid(), signal.SIGKILL)
            # a process killed -9 closes its sockets as it exits, a moment after it is gone
            assert until(lambda: not left_running(s) and not listening(s), 30), left_running(s)
            life.start(s, name)
            assert until(lambda: recorded(name, "2021-04") is not None, 300), life.status(s)
            assert len(runs_of(CYCLE_EXPERIMENT, name, "2021-04")) == 1
            mine = mlflow.search_runs(
                search_all_experiments=True, filter_string="tags.orchestrator_run_id LIKE '%'"
            )
            assert not mine.empty and "RUNNING" not in set(mine["status"])

            # re-published with other data (the same rides, shuffled): an alert, a fresh
            # monitoring run naming both digests; the verdict is the same, so the decision stands
            rides = pd.read_parquet(mirror / "trip-data" / trip_file("green", "2021-04"))
            shuffled = rides.sample(frac=1.0, random_state=0)
            shuffled.to_parquet(tmp_path / "shuffled.parquet", index=False)
            publish(mirror_path, mirror, "2021-04", (tmp_path / "shuffled.parquet").read_bytes())
            assert sink.wait_for(lambda m: any(x["event"] == "republished" for x in m), 120)
            assert until(lambda: len(runs_of(MONITOR_EXPERIMENT, name, "2021-04")) == 2, 120)
            monitoring = runs_of(MONITOR_EXPERIMENT, name, "2021-04")
            again = monitoring[monitoring["tags.previous_digest"].notna()]
            assert (
                len(again) == 1
                and again.iloc[0]["tags.data_digest"] != again.iloc[0]["tags.previous_digest"]
            )
            assert len(runs_of(CYCLE_EXPERIMENT, name, "2021-04")) == 1  # it stands

            # the same file published again (a new mtime, the same bytes): no new run
            with life.instance(s) as inst:
                before = len(inst.get_runs())
            publish(mirror_path, mirror, "2021-04", (tmp_path / "shuffled.parquet").read_bytes())
            time.sleep(5)
            with life.instance(s) as inst:
                assert len(inst.get_runs()) == before

            # a broken file: the run fails, is retried once, and one alert says why
            publish(mirror_path, mirror, "2021-05", b"not a parquet file" * 100)
            assert sink.wait_for(lambda m: any(x["event"] == "run_failed" for x in m), 240)
            time.sleep(3)
            (failed,) = [m for m in sink.messages if m["event"] == "run_failed"]
            assert failed["month"] == "2021-05" and "not a readable parquet file" in failed["cause"]
        finally:
            life.stop(s)
        assert left_running(s) == []
        assert [m["event"] for m in sink.messages].count("republished") == 1


def test_an_unreachable_address_is_a_skip_with_its_reason(weak, mlflow_server, tmp_path):
    """The sensor's tick itself, against a dead address: a skip that says why, no run."""
    name = with_test_month(weak)
    dead = f"http://127.0.0.1:{free_port()}"
    env = {
        "DURATION_HOME": str(tmp_path),
        "DURATION_TLC_URL": dead,
        "MLFLOW_TRACKING_URI": mlflow_server,
        MODEL_ENV: name,
    }
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with dg.instance_for_test() as inst:
            tick = sensors.next_take(dg.build_sensor_context(instance=inst))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert isinstance(tick, dg.SkipReason)
    assert dead in tick.skip_message and "did not answer" in tick.skip_message
