"""`duration download`, `prepare` and `vectorize`: the data stages."""

from __future__ import annotations

import typer

from duration.cli import options
from duration.cli.runtime import settings
from duration.core.schema import COURSE, Color, FeatureSet


def download(
    ctx: typer.Context,
    color: Color = options.ColorOpt,
    month: str = options.month(COURSE.train, "--month", "Month, YYYY-MM."),
) -> None:
    """Download one monthly TLC file (and the zone table) into data/raw."""
    from duration.data import tlc  # deferred: pandas and pyarrow load only to do the work

    s = settings(ctx)
    path = tlc.download(s, color, month)
    tlc.download_zones(s)
    typer.echo(f"{path} ({tlc.verify_parquet(path)} rides)")


def prepare(
    ctx: typer.Context,
    color: Color = options.ColorOpt,
    month: str = options.month(COURSE.train, "--month", "Month, YYYY-MM."),
) -> None:
    """Download if needed, then normalise and filter one month into data/processed."""
    from duration.data import prepare as prep  # deferred: pandas and pyarrow load to work
    from duration.data import tlc

    path = prep.prepare(settings(ctx), color, month)
    typer.echo(f"{path} ({tlc.verify_parquet(path)} rides of 1-60 min)")


def vectorize(
    ctx: typer.Context,
    color: Color = options.ColorOpt,
    features: FeatureSet = options.FeaturesOpt,
    train: str = options.month(
        COURSE.train, "--train", "Training month (the DictVectorizer fits here)."
    ),
    val: str = options.month(COURSE.val, "--val", "Validation month."),
    test: str = options.month(None, "--test", "Test month (optional)."),
) -> None:
    """Fit the DictVectorizer on the training month and transform the other months."""
    from duration.data import matrices  # deferred: pandas and scipy load only to do the work

    months = [m for m in (val, test) if m]
    out = matrices.vectorize(settings(ctx), color, features, train, months)
    typer.echo(f"{out}: {', '.join(sorted(p.name for p in out.glob('X_*.npz')))}")
