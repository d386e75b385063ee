"""Data quality: contract validation of a data directory, snapshot checks and drift (PSI).

* :func:`validate_data_dir` — every contract table against its schema (every bad row at once), read
  in batches (:func:`validate_parquet`) so that no table is ever whole in pandas.
* :func:`validate_snapshot` — a feature snapshot against :data:`SNAPSHOT_SCHEMA` (pandera): every column
  present with its dtype, counts non-negative, shares and rates in [0, 1], scores in 0–5, categories
  from their closed sets, one row per customer and one cutoff, and the BTYD summary consistent.
* :func:`compare_snapshots` — row count and per-feature null rates against the previous snapshot.
* :func:`snapshot_psi` — PSI of every feature between a reference snapshot and the current one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow.parquet as pq
from pandera.errors import SchemaErrors

from features.behavioral import EVENT_GROUPS, EVENT_WINDOWS
from features.io import table_path
from features.lifecycle import LIFECYCLE_NAMES
from features.rfm import ORDER_WINDOWS
from features.schema import (
    CITY_TIERS,
    MEMBER_LEVELS,
    ORDER_CHANNELS,
    SCHEMAS,
    TABLES,
    ValidationReport,
)
from features.snapshot import CALENDAR_COLUMNS, KEYS, SNAPSHOT_DTYPES

#: Rows of a table held in pandas at once while it is validated (about 60 MB for the widest table).
VALIDATE_BATCH_ROWS = 100_000
_FAILURE_COLUMNS = ["schema_context", "column", "check", "check_number", "failure_case", "index"]


def validate_data_dir(
    data_dir: str | Path, batch_rows: int = VALIDATE_BATCH_ROWS
) -> tuple[list[ValidationReport], list[str]]:
    """Validate every contract table in ``data_dir``, ``batch_rows`` rows at a time.

    Returns the per-table reports (each with every failing row) and the names of missing tables.
    """
    reports: list[ValidationReport] = []
    missing: list[str] = []
    for name in TABLES:
        path = table_path(data_dir, name)
        if not path.exists():
            missing.append(name)
            continue
        reports.append(validate_parquet(name, path, batch_rows))
    return reports, missing


def validate_parquet(name: str, path: str | Path, batch_rows: int = VALIDATE_BATCH_ROWS) -> ValidationReport:
    """Validate contract table ``name`` stored at ``path`` without loading it whole into pandas.

    The report is the one :func:`features.schema.validate_table` gives on the whole table, failing rows
    numbered by their position in the file: the row and column checks run on one batch of
    ``batch_rows`` rows at a time, and the uniqueness checks, which span batches, run in DuckDB over
    the key columns only. Table-level failures (a missing column, a wrong dtype) are reported once.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    schema = SCHEMAS[name]
    row_schema = _without_uniqueness(schema)
    file = pq.ParquetFile(path)
    parts: list[pd.DataFrame] = []
    rows = 0
    for batch in file.iter_batches(batch_size=batch_rows):
        frame = batch.to_pandas()
        frame.index = pd.RangeIndex(rows, rows + len(frame))
        rows += len(frame)
        parts.append(_failures(row_schema, frame))
        del frame  # before the next batch is read, not after
    if rows == 0:  # the column and dtype checks still apply to an empty table
        parts.append(_failures(row_schema, file.schema_arrow.empty_table().to_pandas()))
    parts.append(_duplicates(schema, Path(path), set(file.schema_arrow.names)))
    found = [p for p in parts if not p.empty]
    if not found:
        return ValidationReport(name, rows, pd.DataFrame(columns=["column", "check", "index"]))
    cases = pd.concat(found, ignore_index=True)
    # A table-level failure (no row index) is found again in every batch.
    key = cases[["schema_context", "column", "check", "failure_case"]].astype(str).agg("|".join, axis=1)
    repeated = cases["index"].isna() & key.duplicated()
    return ValidationReport(name, rows, cases[~repeated].reset_index(drop=True))


def _without_uniqueness(schema: pa.DataFrameSchema) -> pa.DataFrameSchema:
    """``schema`` without its uniqueness checks (a batch cannot see duplicates in other batches)."""
    out = copy.deepcopy(schema)
    for column in out.columns.values():
        column.unique = False
    out.unique = None
    return out


def _failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """Every failure of ``frame`` against ``schema`` (the checks do not modify it, so no copy is made)."""
    try:
        schema.validate(frame, lazy=True, inplace=True)
    except SchemaErrors as err:
        return err.failure_cases
    return pd.DataFrame(columns=_FAILURE_COLUMNS)


def _duplicates(schema: pa.DataFrameSchema, path: Path, present: set[str]) -> pd.DataFrame:
    """The uniqueness failures of the table at ``path``, as pandera reports them, computed in DuckDB.

    A unique column flags every row whose non-missing value occurs more than once; a unique set of
    columns flags every row whose combination (missing values equal to each other, as in pandas)
    occurs more than once, one failure per non-missing field.
    """
    literal = str(path).replace("'", "''")
    source = f"read_parquet('{literal}', file_row_number = true)"
    frames = []
    with duckdb.connect() as con:
        for col, column in schema.columns.items():
            if not column.unique or col not in present:
                continue
            q = _quote(col)
            dups = con.sql(
                f"SELECT file_row_number AS idx, {q} AS value FROM {source} WHERE {q} IN "
                f"(SELECT {q} FROM {source} WHERE {q} IS NOT NULL GROUP BY 1 HAVING count(*) > 1) "
                "ORDER BY idx"
            ).df()
            frames.append(_uniqueness_cases("Column", col, "field_uniqueness", dups))
        subset = [c for c in _unique_sets(schema) if c in present]
        if subset:
            cols = ", ".join(_quote(c) for c in subset)
            on = " AND ".join(f"t.{_quote(c)} IS NOT DISTINCT FROM d.{_quote(c)}" for c in subset)
            dups = con.sql(
                f"SELECT t.file_row_number AS idx, {', '.join(f't.{_quote(c)}' for c in subset)} "
                f"FROM {source} t JOIN (SELECT {cols} FROM {source} GROUP BY ALL HAVING count(*) > 1) d "
                f"ON {on} ORDER BY idx"
            ).df()
            for c in subset:
                found = dups[["idx", c]].rename(columns={c: "value"}).dropna(subset=["value"])
                frames.append(_uniqueness_cases("DataFrameSchema", c, "multiple_fields_uniqueness", found))
    found = [f for f in frames if not f.empty]
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=_FAILURE_COLUMNS)


def _unique_sets(schema: pa.DataFrameSchema) -> list[str]:
    unique = schema.unique
    if not unique:
        return []
    return [unique] if isinstance(unique, str) else list(unique)


def _uniqueness_cases(context: str, column: str, check: str, dups: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "schema_context": context,
            "column": column,
            "check": check,
            "check_number": None,
            "failure_case": dups["value"].astype(object).to_numpy(),
            "index": dups["idx"].astype(object).to_numpy(),
        },
        index=pd.RangeIndex(len(dups)),
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------------ drift (PSI)

#: Share given to an empty bin so that PSI stays finite (a common convention; 1e-4 ≈ "one in ten thousand").
PSI_EPS = 1e-4
#: Label of the bin holding missing values.
MISSING_BIN = "<missing>"


@dataclass(frozen=True)
class PSIResult:
    """Population stability index of one column, with the bins it was computed on."""

    value: float
    bins: list[str]
    reference_share: list[float]
    current_share: list[float]
    n_reference: int
    n_current: int


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s))


def psi(reference: pd.Series, current: pd.Series, bins: int = 10, eps: float = PSI_EPS) -> PSIResult:
    """PSI = Σ (q − p) · ln(q / p) over bins, p the reference share and q the current share.

    Numeric columns are cut at the reference's quantiles (``bins`` equal-count bins; tied quantiles
    merge, so a column that is 70% zeros gets one bin for them); categorical columns use one bin per
    category seen on either side. Missing values form their own bin on both kinds, so a rise in nulls
    shows as drift. Shares are floored at ``eps`` so an empty bin adds a large but finite term.
    Rules of thumb: < 0.1 stable, 0.1–0.2 moderate shift, > 0.2 significant shift.
    """
    if len(reference) == 0 or len(current) == 0:
        raise ValueError(f"PSI needs data on both sides; got {len(reference)} and {len(current)} rows")
    if _is_categorical(reference) or _is_categorical(current):
        ref = reference.astype(object).where(reference.notna(), MISSING_BIN).astype(str)
        cur = current.astype(object).where(current.notna(), MISSING_BIN).astype(str)
        labels = sorted(set(ref) | set(cur))
        p = ref.value_counts().reindex(labels, fill_value=0).to_numpy(float)
        q = cur.value_counts().reindex(labels, fill_value=0).to_numpy(float)
    else:
        ref_v, cur_v = reference.to_numpy(float), current.to_numpy(float)
        finite = ref_v[~np.isnan(ref_v)]
        edges = np.unique(np.quantile(finite, np.arange(1, bins) / bins)) if finite.size else np.array([])
        labels = _interval_labels(edges) + [MISSING_BIN]
        p, q = _numeric_counts(ref_v, edges), _numeric_counts(cur_v, edges)
    p_share, q_share = p / p.sum(), q / q.sum()
    pf, qf = np.maximum(p_share, eps), np.maximum(q_share, eps)
    value = float(np.sum((qf - pf) * np.log(qf / pf)))
    return PSIResult(value, labels, p_share.tolist(), q_share.tolist(), len(reference), len(current))


def _numeric_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per right-closed bin (−∞, e1], (e1, e2], …, (ek, ∞) followed by the missing count."""
    missing = np.isnan(x)
    idx = np.searchsorted(edges, x[~missing], side="left")
    return np.append(np.bincount(idx, minlength=len(edges) + 1), missing.sum()).astype(float)


def _interval_labels(edges: np.ndarray) -> list[str]:
    bounds = [-np.inf, *edges.tolist(), np.inf]
    return [f"({lo:.6g}, {hi:.6g}]" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _psi_level(value: float) -> str:
    return "stable" if value < 0.1 else "moderate" if value < 0.2 else "significant"


# --------------------------------------------------------------------------- snapshot validation

VALUE_TIERS: tuple[str, ...] = ("high", "mid", "low", "none")
_COUNTS = (
    "n_orders",
    *(f"orders_{w}d" for w in ORDER_WINDOWS),
    "n_channels",
    "btyd_x",
    *(f"ev_{et}_{w}d" for et in EVENT_GROUPS for w in EVENT_WINDOWS),
    "touches_90d",
)
_NON_NEGATIVE = ("tenure_days", "btyd_t_x_days", "btyd_T_days", "purchases_per_year", "touches_90d")
_NULLABLE_NON_NEGATIVE = ("recency_days", "first_purchase_days", "gap_mean_days", "days_since_last_event")
_UNIT_INTERVAL = (*(f"share_{ch}" for ch in ORDER_CHANNELS), "online_share")
_NULLABLE_RATES = ("touch_response_rate_7d",)
_FLAGS = ("wecom_added", "omni", "top20_value")
_SCORES = ("rfm_r_score", "rfm_f_score", "rfm_m_score")
_CATEGORIES: dict[str, tuple] = {
    "acquisition_channel": ORDER_CHANNELS,
    "member_level": MEMBER_LEVELS,
    "city_tier": CITY_TIERS,
    "preferred_channel": (*ORDER_CHANNELS, "none"),
    "lifecycle_stage": tuple(LIFECYCLE_NAMES),
    "value_tier": VALUE_TIERS,
}


def _checks(col: str) -> tuple[list[pa.Check], bool]:
    """Checks of one snapshot column and whether it may be missing."""
    if col in _COUNTS:
        return [pa.Check.ge(0), pa.Check(lambda s: s % 1 == 0, name="whole number")], False
    if col in _NON_NEGATIVE:
        return [pa.Check.ge(0)], False
    # Redemptions can outnumber the claims seen in the history (coupons claimed elsewhere), so the
    # redeem rate is only non-negative.
    if col in _NULLABLE_NON_NEGATIVE or col in ("days_since_last_touch", "coupon_redeem_rate"):
        return [pa.Check.ge(0)], True
    if col in _UNIT_INTERVAL:
        return [pa.Check.in_range(0.0, 1.0)], False
    if col in _NULLABLE_RATES:
        return [pa.Check.in_range(0.0, 1.0)], True
    if col in _FLAGS:
        return [pa.Check.isin((0, 1))], False
    if col in _SCORES:
        return [pa.Check.in_range(0, 5)], False
    if col in _CATEGORIES:
        return [pa.Check.isin(_CATEGORIES[col])], False
    return [], col in ("aov",)


def _btyd_consistent(df: pd.DataFrame) -> pd.Series:
    # Repeat purchase days cannot exceed purchases - 1, and the last purchase day is no later than T.
    return (df["btyd_x"] <= (df["n_orders"] - 1).clip(lower=0)) & (df["btyd_t_x_days"] <= df["btyd_T_days"])


def _utc_timestamps(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.DatetimeTZDtype) and str(s.dtype.tz) == "UTC"


def _one_cutoff(df: pd.DataFrame) -> bool:
    return df["cutoff"].nunique() <= 1


def _build_snapshot_schema() -> pa.DataFrameSchema:
    columns = {}
    for col, dtype in SNAPSHOT_DTYPES.items():
        if col == "customer_id":
            columns[col] = pa.Column(str, pa.Check.str_length(min_value=1), unique=True)
        elif col == "cutoff":
            # Any resolution (parquet round trips change it), but timezone-aware UTC.
            columns[col] = pa.Column(
                None, pa.Check(_utc_timestamps, element_wise=False, name="UTC timestamps")
            )
        else:
            checks, nullable = _checks(col)
            columns[col] = pa.Column(str if dtype is object else dtype, checks, nullable=nullable)
    return pa.DataFrameSchema(
        columns,
        checks=[
            pa.Check(
                _btyd_consistent,
                name="btyd_x <= n_orders - 1 and t_x <= T",
                error="BTYD summary: btyd_x <= n_orders - 1 and btyd_t_x_days <= btyd_T_days",
            ),
            pa.Check(_one_cutoff, name="one cutoff per snapshot", error="one cutoff per snapshot"),
        ],
        name="snapshot",
        strict=True,
        ordered=True,
    )


#: The pandera schema of a feature snapshot (built from :data:`features.snapshot.SNAPSHOT_DTYPES`).
SNAPSHOT_SCHEMA = _build_snapshot_schema()


def validate_snapshot(df: pd.DataFrame) -> ValidationReport:
    """Validate a snapshot against :data:`SNAPSHOT_SCHEMA`, collecting every failure in one pass."""
    try:
        SNAPSHOT_SCHEMA.validate(df, lazy=True)
    except SchemaErrors as err:
        return ValidationReport("snapshot", len(df), err.failure_cases.reset_index(drop=True))
    return ValidationReport("snapshot", len(df), pd.DataFrame(columns=["column", "check", "index"]))


# ------------------------------------------------------------------- snapshot against the previous one


@dataclass(frozen=True)
class SnapshotCheck:
    """One check of the current snapshot against the previous one."""

    name: str
    column: str | None
    previous: float
    current: float
    limit: float
    ok: bool

    def message(self) -> str:
        what = f"{self.name}" + (f" of {self.column}" if self.column else "")
        verdict = "ok" if self.ok else "FAILED"
        return f"{what}: {self.previous:.4g} → {self.current:.4g} (limit {self.limit:.4g}) {verdict}"


@dataclass(frozen=True)
class SnapshotComparison:
    """Every check of :func:`compare_snapshots`."""

    checks: tuple[SnapshotCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[SnapshotCheck, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def summary(self) -> str:
        if self.ok:
            return f"snapshot checks: all {len(self.checks)} passed"
        lines = [f"snapshot checks: {len(self.failures)} of {len(self.checks)} failed"]
        lines += [f"  - {c.message()}" for c in self.failures]
        return "\n".join(lines)


def compare_snapshots(
    previous: pd.DataFrame,
    current: pd.DataFrame,
    max_row_change: float = 0.2,
    max_null_rate_increase: float = 0.05,
) -> SnapshotComparison:
    """Row count and per-feature null rates of ``current`` against ``previous``.

    Fails the row count when it moved by more than ``max_row_change`` (relative, either way; a customer
    base does not halve overnight), and a feature whose share of missing values rose by more than
    ``max_null_rate_increase`` (absolute). A feature missing from ``current`` counts as all-null.
    """
    n_prev, n_cur = len(previous), len(current)
    change = abs(n_cur - n_prev) / max(n_prev, 1)
    checks = [
        SnapshotCheck(
            "row count", None, float(n_prev), float(n_cur), max_row_change, change <= max_row_change
        )
    ]
    for col in _feature_columns(previous):
        before = float(previous[col].isna().mean()) if n_prev else 0.0
        after = float(current[col].isna().mean()) if col in current and n_cur else 1.0
        ok = after - before <= max_null_rate_increase
        checks.append(SnapshotCheck("null rate", col, before, after, before + max_null_rate_increase, ok))
    return SnapshotComparison(tuple(checks))


def _feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in KEYS and not c.startswith("label_")]


# --------------------------------------------------------------------------------- snapshot drift


@dataclass(frozen=True)
class DriftReport:
    """PSI of every feature between a reference and a current snapshot."""

    results: dict[str, PSIResult]

    def table(self) -> pd.DataFrame:
        """One row per feature, largest PSI first, with the rule-of-thumb level."""
        rows = [
            {"feature": name, "psi": r.value, "level": _psi_level(r.value), "bins": len(r.bins)}
            for name, r in self.results.items()
        ]
        return pd.DataFrame(rows).sort_values(["psi", "feature"], ascending=[False, True], ignore_index=True)

    def drifted(self, threshold: float = 0.2) -> list[str]:
        """Features whose PSI exceeds ``threshold`` (0.2: significant shift)."""
        return sorted(name for name, r in self.results.items() if r.value > threshold)


def snapshot_psi(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    bins: int = 10,
    eps: float = PSI_EPS,
    exclude: tuple[str, ...] = CALENDAR_COLUMNS,
) -> DriftReport:
    """PSI per feature (:func:`psi`) between two snapshots; keys, labels and ``exclude`` are left out.

    Numeric features use quantile bins of the reference, categorical ones category shares; empty bins
    are floored at ``eps``. The calendar columns are excluded by default: they are constant within a
    snapshot, so they "drift" whenever the cutoffs differ. Raises ``ValueError`` naming any feature
    present on one side only.
    """
    ref_cols = [c for c in _feature_columns(reference) if c not in exclude]
    cur_cols = [c for c in _feature_columns(current) if c not in exclude]
    missing = sorted(set(ref_cols) ^ set(cur_cols))
    if missing:
        raise ValueError(f"the snapshots do not hold the same features; on one side only: {missing}")
    return DriftReport({col: psi(reference[col], current[col], bins, eps) for col in ref_cols})
