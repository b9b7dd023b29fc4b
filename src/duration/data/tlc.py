"""TLC monthly files: where they are published, downloaded into data/raw atomically and
verified (the parquet footer, and the TLC's published row count), and the zone table.

The base address is `paths.tlc_url` (DURATION_TLC_URL): https, or file:// for a mirror.
Transient network errors are retried with exponential backoff (tenacity).
"""

from __future__ import annotations

import csv
import hashlib
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tenacity import (
    RetryError,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from duration.core.schema import Color, check_month
from duration.errors import DurationError, NotPublished
from duration.infra.files import atomic_path
from duration.settings import Settings

ZONES_FILE = "taxi_zone_lookup.csv"
CHUNK = 1 << 20
ATTEMPTS = 4  # tries of one download before it is refused in one line


def trip_file(color: Color | str, month: str) -> str:
    """The TLC's file name for one color and month."""
    return f"{Color(color).value}_tripdata_{check_month(month)}.parquet"


def trip_url(settings: Settings, color: Color | str, month: str) -> str:
    """Where the TLC publishes a monthly file."""
    return f"{settings.paths.tlc_url}/trip-data/{trip_file(color, month)}"


def raw_path(settings: Settings, color: Color | str, month: str) -> Path:
    """Where a downloaded monthly file is cached."""
    return settings.paths.raw / trip_file(color, month)


class Transient(Exception):
    """A network error worth another try (a timeout, a reset, HTTP 429 or 5xx)."""


def _open(url: str | urllib.request.Request, timeout: float = 60.0) -> Any:
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) and file only
    except urllib.error.HTTPError as e:
        if e.code in (403, 404):
            raise FileNotFoundError(url) from e
        if e.code in (408, 429) or e.code >= 500:
            raise Transient(f"HTTP {e.code}") from e
        raise DurationError(f"{e.url} answered HTTP {e.code}: check DURATION_TLC_URL") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, FileNotFoundError | IsADirectoryError):
            raise FileNotFoundError(url) from e
        if isinstance(e.reason, OSError | socket.timeout | str):
            raise Transient(str(e.reason)) from e
        raise
    except (TimeoutError, ConnectionError) as e:
        raise Transient(str(e)) from e


def _stream(url: str, dest: Path, progress: bool) -> None:
    """Stream `url` into `dest` (a temporary path), with a progress bar for network URLs."""
    with _open(url) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = None
        if progress and not url.startswith("file:"):
            from tqdm import tqdm  # deferred: only a network download shows a bar

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=Path(dest).name, leave=False)
        try:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        except (TimeoutError, ConnectionError, OSError) as e:
            raise Transient(str(e)) from e
        finally:
            if bar is not None:
                bar.close()


_retrying = retry(
    retry=retry_if_exception_type(Transient),
    stop=stop_after_attempt(ATTEMPTS),
    wait=wait_exponential(multiplier=1, max=8),
)


def fetch(url: str, dest: Path, progress: bool = False) -> None:
    """Download `url` into `dest`, retrying transient errors; one line if they persist."""
    try:
        _retrying(_stream)(url, dest, progress)
    except RetryError as e:
        raise DurationError(
            f"download {url}: still failing after {ATTEMPTS} tries "
            f"({e.last_attempt.exception()}); check the network or DURATION_TLC_URL and run "
            "the command again"
        ) from e


def _metadata(settings: Settings, color: Color | str, year: str) -> list[dict[str, str]]:
    """The TLC's published metadata of one color and year (cached in data/raw), if any."""
    cache = settings.paths.raw / "metadata" / f"{Color(color).value}_tripmetadata_{year}.csv"
    if not cache.exists():
        url = f"{settings.paths.tlc_url}/metadata/{cache.name}"
        try:
            with atomic_path(cache) as tmp:
                fetch(url, tmp)
        except FileNotFoundError:
            return []
    with open(cache, newline="") as f:
        return list(csv.DictReader(f))


def published_counts(settings: Settings, color: Color | str, year: str) -> dict[str, int]:
    """The TLC's published row count per file for one color and year, where the base has it."""
    return {
        row["file_name"]: int(row["file_num_rows"])
        for row in _metadata(settings, color, year)
        if row.get("file_num_rows", "").isdigit()
    }


def published_size(settings: Settings, color: Color | str, month: str) -> int | None:
    """The TLC's published size in bytes of one monthly file, where its metadata has it."""
    for row in _metadata(settings, color, month[:4]):
        if row.get("file_name") == trip_file(color, month):
            size = row.get("file_size_bytes", "")
            return int(size) if size.isdigit() else None
    return None


@dataclass(frozen=True, kw_only=True)
class Seen:
    """A monthly file as the base address shows it now."""

    month: str
    size: int
    digest: str  # sha256 of a file:// copy; over https, the ETag and size


def look(settings: Settings, color: Color | str, month: str) -> Seen | None:
    """The monthly file at the base address, or None when it is not there; `Transient`
    when the address does not answer."""
    url = trip_url(settings, color, month)
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(url.removeprefix("file://")))
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise Transient(str(e)) from e
        return Seen(month=month, size=size, digest=digest)
    request = urllib.request.Request(url, method="HEAD")
    try:
        with _open(request, timeout=30.0) as r:
            size = int(r.headers.get("Content-Length") or 0)
            tag = (r.headers.get("ETag") or r.headers.get("Last-Modified") or "").strip('"')
    except FileNotFoundError:
        return None
    return Seen(month=month, size=size, digest=f"{tag}-{size}")


def short(e: Exception) -> str:
    """An exception's first line, briefly."""
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def verify_parquet(path: Path, expected_rows: int | None = None) -> int:
    """Check that the parquet footer reads (and the row count matches); return the row count."""
    try:
        rows = int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError) as e:
        raise DurationError(
            f"{path} is not a readable parquet file ({short(e)}): delete it and download again"
        ) from e
    if expected_rows is not None and rows != expected_rows:
        raise DurationError(
            f"{path} has {rows} rows but the TLC publishes {expected_rows}: "
            "the copy is incomplete, delete it and download again"
        )
    return rows


def download(
    settings: Settings, color: Color | str, month: str, progress: bool = True, fresh: bool = False
) -> Path:
    """Fetch one monthly file into data/raw atomically and verify it; skip a complete copy
    (unless `fresh`: the TLC published the month again)."""
    color = Color(color)
    dest = raw_path(settings, color, month)
    expected = None if fresh else published_counts(settings, color, month[:4]).get(dest.name)
    if dest.exists() and not fresh:
        try:
            verify_parquet(dest, expected)
            return dest
        except DurationError:
            dest.unlink()  # an incomplete or corrupt cached copy: fetch it again
    url = trip_url(settings, color, month)
    tmp = None
    try:
        with atomic_path(dest) as tmp:
            fetch(url, tmp, progress)
            verify_parquet(tmp, expected)
    except FileNotFoundError as e:
        raise NotPublished(
            f"{color.value} {month} is not available at {settings.paths.tlc_url} ({url} not "
            "found): pick a published month or check DURATION_TLC_URL"
        ) from e
    except DurationError as e:
        raise DurationError(str(e).replace(str(tmp), url)) from e
    return dest


def download_zones(settings: Settings) -> Path:
    """Fetch the TLC zone table into data/raw (atomically; skipped when cached)."""
    dest = settings.paths.raw / ZONES_FILE
    if dest.exists() and dest.stat().st_size > 0:
        return dest
    url = f"{settings.paths.tlc_url}/misc/{ZONES_FILE}"
    try:
        with atomic_path(dest) as tmp:
            fetch(url, tmp)
            read_zones(tmp)
    except FileNotFoundError as e:
        raise DurationError(f"{url} not found: check DURATION_TLC_URL") from e
    return dest


def read_zones(path: Path) -> pd.DataFrame:
    """Read the zone table (LocationID, Borough, Zone, service_zone)."""
    try:
        zones = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise DurationError(f"{path} is not a readable zone table ({short(e)})") from e
    missing = {"LocationID", "Borough", "service_zone"} - set(zones.columns)
    if missing:
        raise DurationError(f"{path} lacks columns {sorted(missing)}: download it again")
    return zones


def zone_map(zones: pd.DataFrame, column: str = "Borough") -> dict[int, str]:
    """LocationID -> a zone-table column (Borough or service_zone)."""
    values = zones[column].fillna("Unknown").astype(str)
    return {int(k): v for k, v in zip(zones["LocationID"], values, strict=True)}


def boroughs(settings: Settings) -> dict[int, str]:
    """Zone ID -> borough, from the zone table (downloaded if needed)."""
    return zone_map(read_zones(download_zones(settings)))
