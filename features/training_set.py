"""Training sets: feature snapshots × labels stacked over rolling cutoffs, keyed (customer_id, cutoff).

Training and batch scoring share one retrieval path (:func:`features.snapshot.compute_snapshot`);
they differ only in the cutoff. A label whose window runs past the data at some cutoff is left NaN
for that cutoff and named in the manifest (``labels_unavailable``), never filled from the future.
Every cutoff runs on one engine (DuckDB by default, or Spark), opened once for the whole set.

Validation is by time (:func:`time_split`): the validation cutoff's label window must start after every
training label window has ended, otherwise the training labels would have seen the validation period.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from features.as_of import cutoff_ts
from features.engine import Engine, EngineConfig, Source, open_engine
from features.io import atomic_write_parquet, data_fingerprint
from features.labels import LABELS, LabelWindowError, compute_labels, data_end, horizons
from features.schema import BUSINESS_TZ
from features.snapshot import CATEGORICAL, SNAPSHOT_DTYPES, compute_snapshot

FEATURE_KEYS: tuple[str, str] = ("customer_id", "cutoff")


def feature_columns(df: pd.DataFrame) -> list[str]:
    """Every column except the keys and the labels."""
    return [c for c in df.columns if c not in FEATURE_KEYS and not c.startswith("label_")]


def categorical_columns(df: pd.DataFrame) -> list[str]:
    """Feature columns holding categories (strings)."""
    return [c for c in feature_columns(df) if c in CATEGORICAL or df[c].dtype == object]


def monthly_cutoffs(start: dt.date | str, end: dt.date | str, every_months: int = 1) -> list[dt.date]:
    """Cutoffs on the first of every ``every_months`` months from ``start`` to ``end`` inclusive."""
    days = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=f"{every_months}MS")
    return [d.date() for d in days]


def check_split(train_cutoffs: list[dt.date], valid_cutoff: dt.date, horizon_days: int) -> None:
    """Refuse a validation cutoff whose label window starts before every training label window ended."""
    if not train_cutoffs:
        raise ValueError("give at least one training cutoff")
    last_end = max(pd.Timestamp(c) for c in train_cutoffs) + pd.Timedelta(days=horizon_days)
    if pd.Timestamp(valid_cutoff) < last_end:
        raise LabelWindowError(
            f"validation cutoff {valid_cutoff} overlaps the training label window ending {last_end.date()}: "
            f"with a {horizon_days}-day horizon validate on {last_end.date()} or later"
        )


def time_split(
    df: pd.DataFrame, valid_cutoff: dt.date | str, horizon_days: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a training set into the rows of earlier cutoffs (train) and those of ``valid_cutoff``.

    Raises :class:`LabelWindowError` when a training label window reaches into the validation window,
    and ``ValueError`` when the training set holds no row at ``valid_cutoff`` or none before it.
    """
    days = pd.Series(_business_dates(df["cutoff"]), index=df.index)
    valid_day = pd.Timestamp(valid_cutoff).date()
    train_days = sorted({d for d in days.unique() if d < valid_day})
    if valid_day not in set(days):
        raise ValueError(f"the training set has no rows at the validation cutoff {valid_day}")
    if not train_days:
        raise ValueError(f"the training set has no cutoff before the validation cutoff {valid_day}")
    check_split(train_days, valid_day, horizon_days)
    return df[days < valid_day], df[days == valid_day]


def _business_dates(cutoffs: pd.Series) -> list[dt.date]:
    ts = pd.to_datetime(cutoffs)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert(BUSINESS_TZ)
    return [t.date() for t in ts]


def build_training_set(
    data_dir: str | Path,
    cutoffs: list[dt.date] | list[str],
    churn_horizon_days: int = 90,
    progress: bool = True,
    engine: str | Engine | EngineConfig = "duckdb",
    cache: SnapshotCache | None = None,
) -> pd.DataFrame:
    """Snapshots × labels for each cutoff, stacked (see module docstring); the engine reads the files."""
    return stack_training_set(Path(data_dir), cutoffs, churn_horizon_days, progress, engine, cache)


def stack_training_set(
    source: Source,
    cutoffs: list[dt.date] | list[str],
    churn_horizon_days: int = 90,
    progress: bool = True,
    engine: str | Engine | EngineConfig = "duckdb",
    cache: SnapshotCache | None = None,
) -> pd.DataFrame:
    """Snapshots × labels for each cutoff of a data directory or of in-memory contract tables."""
    parts = iter_training_set(source, cutoffs, churn_horizon_days, progress, engine, cache)
    return pd.concat(list(parts), ignore_index=True)


@dataclass(frozen=True)
class SnapshotCache:
    """Labelled snapshots kept as parquet for the cutoffs that more than one model of a run needs.

    ``siyu train all`` builds the churn, repurchase and CLV frames one after the other; a cutoff they
    share is computed once, written here, and read back by the next model (a read costs a fraction of
    the engine's work at a million customers).
    """

    directory: Path
    shared: frozenset[dt.date]

    def path(self, cutoff: dt.date, churn_horizon_days: int) -> Path:
        """Where the labelled snapshot of ``cutoff`` (with this churn horizon) is kept."""
        return self.directory / f"{cutoff.isoformat()}_h{churn_horizon_days}.parquet"

    def load(self, cutoff: dt.date, churn_horizon_days: int) -> pd.DataFrame | None:
        """The kept snapshot, or None."""
        path = self.path(cutoff, churn_horizon_days)
        if not path.exists():
            return None
        frame = pd.read_parquet(path)
        # Parquet has no second-resolution timestamps: back to the snapshot contract's types.
        return frame.astype({c: d for c, d in SNAPSHOT_DTYPES.items() if c in frame.columns})

    def keep(self, frame: pd.DataFrame, cutoff: dt.date, churn_horizon_days: int) -> None:
        """Write ``frame`` if another model will need ``cutoff``."""
        if cutoff in self.shared:
            atomic_write_parquet(frame, self.path(cutoff, churn_horizon_days))


def iter_training_set(
    source: Source,
    cutoffs: list[dt.date] | list[str],
    churn_horizon_days: int = 90,
    progress: bool = True,
    engine: str | Engine | EngineConfig = "duckdb",
    cache: SnapshotCache | None = None,
) -> Iterator[pd.DataFrame]:
    """The labelled snapshot of each distinct cutoff in date order, one at a time.

    A consumer that reduces each cutoff (e.g. to one model's labelled rows) never holds the whole stack.
    The next cutoff is computed in a background thread while the consumer works on the current one: the
    engine runs outside the GIL, and the consumer's work (model fits in pandas/numpy) overlaps it.
    """
    if not cutoffs:
        raise ValueError("give at least one cutoff")
    eng, owned = open_engine(engine)
    try:
        end = data_end(source, eng)
        days = sorted({pd.Timestamp(c).date() for c in cutoffs})
        with ThreadPoolExecutor(1, thread_name_prefix="siyu-cutoff") as pool:
            # Only this one worker thread touches the engine from here on, one query at a time.
            args = (source, churn_horizon_days, end, eng, cache)
            pending = pool.submit(_cached_labelled_snapshot, days[0], *args)
            for i in tqdm(range(len(days)), desc="cutoffs", disable=not progress):
                snap = pending.result()
                if i + 1 < len(days):
                    pending = pool.submit(_cached_labelled_snapshot, days[i + 1], *args)
                yield snap
                del snap
    finally:
        if owned:
            eng.close()


def _cached_labelled_snapshot(
    cutoff: dt.date,
    source: Source,
    churn_horizon_days: int,
    end: pd.Timestamp,
    eng: Engine,
    cache: SnapshotCache | None,
) -> pd.DataFrame:
    kept = cache.load(cutoff, churn_horizon_days) if cache is not None else None
    if kept is not None:
        return kept
    snap = _labelled_snapshot(source, cutoff, churn_horizon_days, end, eng)
    if cache is not None:
        cache.keep(snap, cutoff, churn_horizon_days)
    return snap


def _labelled_snapshot(
    source: Source, cutoff: dt.date, churn_horizon_days: int, end: pd.Timestamp, eng: Engine
) -> pd.DataFrame:
    snap = compute_snapshot(source, cutoff, engine=eng)
    c = cutoff_ts(cutoff)
    available = tuple(n for n in LABELS if c + pd.Timedelta(days=horizons(churn_horizon_days)[n]) <= end)
    if not available:
        raise LabelWindowError(
            f"cutoff {cutoff}: every label window runs past the end of the data "
            f"({end.tz_convert(BUSINESS_TZ).date()})"
        )
    labels = compute_labels(
        source,
        cutoff,
        pd.Index(snap["customer_id"]),
        churn_horizon_days,
        available,
        eng,
        feature_cutoff=cutoff,
        end=end,
    )
    for name in LABELS:
        snap[name] = labels[name].to_numpy() if name in labels else float("nan")
    return snap


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_training_set(
    df: pd.DataFrame, out: str | Path, data_dir: str | Path, churn_horizon_days: int, engine: str = "duckdb"
) -> Path:
    """Write the training set and its manifest (``<out>.manifest.json``)."""
    out = Path(out)
    atomic_write_parquet(df, out)
    day = pd.Series(_business_dates(df["cutoff"]), index=df.index).astype(str)
    # Grouped on the label columns alone: a group of the whole frame would copy every feature.
    missing = df[list(LABELS)].isna().groupby(day).all()
    unavailable = {name: sorted(missing.index[missing[name]]) for name in LABELS}
    manifest = {
        "cutoffs": sorted(day.unique()),
        "features": feature_columns(df),
        "labels": list(LABELS),
        "horizons_days": horizons(churn_horizon_days),
        "labels_unavailable": unavailable,
        "rows": len(df),
        "data_fingerprint": data_fingerprint(data_dir),
        "engine": engine,
        "code_version": _code_version(),
    }
    out.with_suffix(".manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
