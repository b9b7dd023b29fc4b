"""What starts the orchestrator's runs, and what it says when one fails.

- `tlc_months`, a sensor: every DURATION_AUTOMATE_POLL_S it looks at DURATION_TLC_URL and
  requests a run for the next month to decide (`duration.automate.months`), one at a time;
  an unreachable address is a skip with its reason, not a failed run.
- `monthly_fallback`, a schedule (off unless turned on in the UI): on the 5th of each month,
  the month before last, if it is published and not decided yet.
- `alert_on_failure`: a run that failed and will not be retried is an alert, with its
  one-line cause.

`duration automate pause` makes the first two skip until `resume`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from duration.alerts.channel import Alert, Event, Value, send
from duration.automate import months
from duration.automate.assets import DIGEST_TAG, PREVIOUS_TAG, connected
from duration.core.schema import Color, previous_month
from duration.data import tlc
from duration.errors import DurationError, one_line
from duration.ops.decision import recorded
from duration.settings import Settings

JOB = "decide_month"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def paused_marker(settings: Settings) -> Path:
    return settings.paths.automate_state / "paused"


def job(partitions: dg.PartitionsDefinition[str]) -> dg.UnresolvedAssetJobDefinition:
    """The month's four assets in one run, in one process; retried once if it fails (a run
    killed with the orchestrator is marked failed at its next start, then retried)."""
    return dg.define_asset_job(
        JOB,
        selection=dg.AssetSelection.groups("monthly"),
        partitions_def=partitions,
        executor_def=dg.in_process_executor,
        tags={"dagster/max_retries": "1", "dagster/retry_strategy": "FROM_FAILURE"},
    )


def _model() -> tuple[Settings, str, Color, str | None]:
    """The settings, the model, its color and Production's test month (None: no Production)."""
    settings, name, production = connected()
    if production is None:
        return settings, name, Color.green, None
    color = Color(production.tags.get("color", "green"))
    return settings, name, color, production.tags.get("test_month")


def _request(take: months.Take) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=take.run_key,
        partition_key=take.month,
        tags={DIGEST_TAG: take.digest, PREVIOUS_TAG: take.previous_digest or ""},
    )


def next_take(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """The sensor's tick: the next month to decide, or why there is none."""
    settings, name, color, test_month = _model()
    if paused_marker(settings).exists():
        return dg.SkipReason("paused: `duration automate resume` goes on")
    busy = context.instance.get_runs(filters=dg.RunsFilter(job_name=JOB, statuses=IN_FLIGHT))
    if busy:
        return dg.SkipReason(f"{busy[0].tags.get('dagster/partition')} is being decided")
    if context.cursor:
        cursor = months.Cursor.from_json(context.cursor)
    elif test_month:  # a first start: the months up to Production's test month are decided
        cursor = months.Cursor(taken=test_month)
    else:
        return dg.SkipReason(f"{name} has no Production version with a test month: make pipeline")
    now = datetime.now(UTC).strftime("%Y-%m")
    url = settings.paths.tlc_url
    try:
        seen = {m: tlc.look(settings, color, m) for m in months.to_look_at(cursor, now)}
        sizes = {m: tlc.published_size(settings, color, m) for m, s in seen.items() if s}
    except (tlc.Transient, DurationError) as e:
        return dg.SkipReason(f"{url} did not answer ({one_line(e)}): tried again next poll")
    take = months.tick(cursor, seen, sizes)
    context.update_cursor(cursor.to_json())
    if take is None:
        waiting = f"; waiting for {', '.join(sorted(cursor.pending))}" if cursor.pending else ""
        return dg.SkipReason(f"no new {color.value} month after {cursor.taken} at {url}{waiting}")
    return _request(take)


def month_sensor(target: dg.UnresolvedAssetJobDefinition, poll_s: float) -> dg.SensorDefinition:
    @dg.sensor(
        name="tlc_months",
        job=target,
        minimum_interval_seconds=max(1, int(poll_s)),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A run for each TLC month as it is published (DURATION_TLC_URL)",
    )
    def tlc_months(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return next_take(context)

    return tlc_months


def monthly_fallback(target: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="monthly_fallback",
        cron_schedule="0 6 5 * *",
        job=target,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="The fallback of tlc_months: the month before last, if not decided",
    )
    def monthly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        settings, name, color, _ = _model()
        if paused_marker(settings).exists():
            return dg.SkipReason("paused: `duration automate resume` goes on")
        when = context.scheduled_execution_time or datetime.now(UTC)
        month = previous_month(previous_month(when.strftime("%Y-%m")))
        seen = tlc.look(settings, color, month)
        if seen is None:
            return dg.SkipReason(f"{month} is not published at {settings.paths.tlc_url}")
        if recorded(name, month) is not None:
            return dg.SkipReason(f"{month} is decided")
        return _request(months.Take(month=month, digest=seen.digest))

    return monthly


def failure_alert(target: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="alert_on_failure",
        minimum_interval_seconds=5,  # a failed run is told within seconds (default: 30)
        monitored_jobs=[target],
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def alert_on_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        tries, done = (
            int(run.tags.get(f"dagster/{t}", 0)) for t in ("max_retries", "retry_number")
        )
        if done < tries:
            return  # the queue retries it: the alert is for the last try
        steps = context.get_step_failure_events()
        data = steps[0].step_failure_data if steps else None
        error = data.error if data is not None else None
        while error is not None and (error.cls_name or "").startswith("Dagster") and error.cause:
            error = error.cause  # Dagster wraps the step's own error, which says why
        said = error.message if error is not None else context.failure_event.message
        cause = one_line(said or "no cause given")
        month = run.tags.get("dagster/partition", "")
        text = f"the orchestrator's run for {month} failed: {cause}"
        fields: dict[str, Value] = {"run_id": run.run_id, "month": month, "cause": cause}
        alert = Alert(event=Event.run_failed, text=text, fields=fields, key=run.run_id)
        send(Settings.from_env(), alert)

    return alert_on_failure
