"""The orchestrator's code location (`duration automate start` points Dagster at it): the
month partitions from the first training month on, the assets, the job, the sensor, the
fallback schedule and the failure alert. Built when Dagster loads it, from the settings."""

from __future__ import annotations

import os

import dagster as dg

from duration.automate import assets, sensors
from duration.core.schema import COURSE
from duration.settings import Settings

FIRST_MONTH_ENV = "DURATION_AUTOMATE_FIRST_MONTH"  # set by `automate start`: Production's


@dg.definitions
def defs() -> dg.Definitions:
    """Everything the orchestrator runs."""
    settings = Settings.from_env()
    partitions = assets.months(os.environ.get(FIRST_MONTH_ENV) or COURSE.train)
    job = sensors.job(partitions)
    return dg.Definitions(
        assets=assets.assets(partitions),
        jobs=[job],
        sensors=[
            sensors.month_sensor(job, settings.automate.poll_s),
            sensors.failure_alert(job),
        ],
        schedules=[sensors.monthly_fallback(job)],
    )
