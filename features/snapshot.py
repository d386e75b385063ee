"""Feature snapshots: one row per customer at an explicit cutoff, composed from the feature families.

Every family is one ibis expression over the engine's history tables (:mod:`features.engine`), cut at
the cutoff by :mod:`features.as_of`, and returns one row per customer first seen before the cutoff:

* attributes and calendar (here) — ``acquisition_channel``, ``member_level``, ``city_tier``,
  ``wecom_added``, ``cutoff_month``, ``days_to_next_sale`` (618 or Double-11);
* :mod:`features.rfm` — RFM, the BTYD summary, RFM scores and the 2080 flag;
* :mod:`features.channel` — channel shares, preferred channel, omni-channel flag;
* :mod:`features.behavioral` — interactions, coupon use, outreach received and the response to it;
* :mod:`features.lifecycle` — lifecycle stage (引入/成长/成熟/休眠/流失) and value tier.

The same expression runs on DuckDB (default) or Spark; the result is sorted by ``customer_id`` and cast
to :data:`SNAPSHOT_DTYPES`, so the same data gives the same bytes on every run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import ibis.expr.types as ir
import pandas as pd

from features import behavioral, channel, lifecycle, rfm
from features.as_of import EngineCutoff, cutoff_ts, is_before
from features.behavioral import EVENT_GROUPS, EVENT_WINDOWS
from features.engine import Engine, EngineConfig, Histories, Source, open_engine
from features.io import atomic_write_parquet, read_table, snapshot_dir
from features.lifecycle import LIFECYCLE_NAMES, LifecycleRules
from features.rfm import Cutoff, attach, paid_before, population
from features.schema import BUSINESS_TZ, ORDER_CHANNELS

__all__ = [
    "CATEGORICAL",
    "EVENT_GROUPS",
    "LIFECYCLE_NAMES",
    "SNAPSHOT_DTYPES",
    "LifecycleRules",
    "build_snapshot",
    "compute_snapshot",
    "latest_snapshot",
    "load_tables",
    "snapshot_expr",
    "write_snapshot",
]

CATEGORICAL: tuple[str, ...] = (
    "acquisition_channel",
    "member_level",
    "preferred_channel",
    "lifecycle_stage",
    "value_tier",
)
KEYS: tuple[str, str] = ("customer_id", "cutoff")


#: Columns computed in the calendar step of :func:`finish_snapshot` rather than by the engine.
CALENDAR_COLUMNS: tuple[str, ...] = ("cutoff_month", "days_to_next_sale")


def _typed(dtype: object, *names: str) -> dict[str, object]:
    return dict.fromkeys(names, dtype)


#: Every snapshot column in order with its dtype. New columns are appended at the end so that models
#: trained on earlier snapshots keep their feature order.
SNAPSHOT_DTYPES: dict[str, object] = {
    **_typed(object, "customer_id"),
    "cutoff": "datetime64[s, UTC]",
    **_typed(object, "acquisition_channel", "member_level"),
    **_typed("int64", "city_tier", "wecom_added"),
    **_typed("float64", "tenure_days", "n_orders", "total_net", "aov", "recency_days", "first_purchase_days"),
    **_typed("float64", "orders_30d", "orders_90d", "orders_365d", "spend_90d", "spend_365d", "n_channels"),
    **_typed("float64", "btyd_x", "btyd_t_x_days", "btyd_T_days", "btyd_monetary"),
    **_typed("float64", *(f"share_{ch}" for ch in ORDER_CHANNELS)),
    **_typed(object, "preferred_channel"),
    **_typed(
        "float64", "purchases_per_year", "gap_mean_days", "btyd_t_x_weeks", "btyd_T_weeks", "online_share"
    ),
    **_typed("int64", "omni"),
    **_typed("float64", *(f"ev_{et}_{w}d" for et in EVENT_GROUPS for w in EVENT_WINDOWS)),
    **_typed("float64", "days_since_last_event", "ev_trend_30d", "coupon_redeem_rate"),
    **_typed("float64", "touches_90d", "days_since_last_touch"),
    **_typed("int64", "rfm_r_score", "rfm_f_score", "rfm_m_score", "top20_value"),
    **_typed(object, "value_tier", "lifecycle_stage"),
    **_typed("int64", "cutoff_month", "days_to_next_sale"),
    **_typed("float64", "touch_response_rate_7d"),
}


ENGINE_COLUMNS: tuple[str, ...] = tuple(c for c in SNAPSHOT_DTYPES if c not in ("cutoff", *CALENDAR_COLUMNS))


def _days_to_next_sale(c: pd.Timestamp) -> int:
    day = c.tz_convert(BUSINESS_TZ).date()
    events = [dt.date(y, m, d) for y in (day.year, day.year + 1) for (m, d) in ((6, 18), (11, 11))]
    return min((e - day).days for e in events if e >= day)


_RANK_INPUTS = ("n_orders", "recency_days", "total_net", "spend_365d")


def attributes(t: ir.Table, cutoff: Cutoff) -> dict[str, ir.Value]:
    """Customer attributes known at the cutoff (the calendar columns are added by :func:`finish_snapshot`)."""
    return {
        "acquisition_channel": t.acquisition_channel,
        "member_level": t.member_level,
        "city_tier": t.city_tier,
        "wecom_added": is_before(t.wecom_added_us, cutoff).fill_null(False).cast("int64"),
    }


def snapshot_expr(
    h: Histories, cutoff: Cutoff | dt.date | str, rules: LifecycleRules | None = None
) -> ir.Table:
    """The snapshot at ``cutoff`` as one engine expression, sorted by customer, without the ``cutoff`` key
    and the calendar columns.

    The families' aggregates are fused: RFM and channel share one aggregation of the cut purchases, and
    every aggregate table is joined once to the population before the families' finishing expressions
    (and then the ranked columns) are evaluated; the standalone ``*_features`` functions build the same
    columns from the same definitions.
    """
    c = EngineCutoff.of(cutoff_ts(cutoff) if isinstance(cutoff, dt.date | str) else cutoff)
    paid = paid_before(h.orders, c)
    purchases = paid.group_by("customer_id").aggregate(
        **rfm.order_aggregates(paid), **channel.order_aggregates(paid)
    )
    t = attach(
        population(h.customers, c),
        purchases,
        rfm.day_aggregates(paid, c),
        *behavioral.aggregates(h.events, h.touches, h.orders, c),
    )
    t = t.select(
        "customer_id", **attributes(t, c), **rfm.finish(t, c), **channel.finish(t), **behavioral.finish(t)
    )
    # Ranks need window functions, which copy every column they carry: rank a narrow projection and join
    # the ranks back (the engine computes the wide table once, see Engine.sql).
    keys = t.select("customer_id", *_RANK_INPUTS)
    ranked = keys.mutate(**rfm.ranks(keys))
    ranked = ranked.mutate(**lifecycle.finish(ranked, rules)).drop(*_RANK_INPUTS)
    return t.join(ranked, "customer_id").select(*ENGINE_COLUMNS).order_by("customer_id")


def finish_snapshot(df: pd.DataFrame, cutoff: dt.date | str) -> pd.DataFrame:
    """Add the cutoff key and calendar columns and cast to :data:`SNAPSHOT_DTYPES` (engine-independent).

    ``df`` (the engine's result) is consumed: under pandas' copy-on-write the new index, the casts and the
    column order share its buffers instead of copying the whole snapshot at each step (three copies at
    the peak), so the caller must not use ``df`` afterwards — a write to the snapshot may reach it.
    """
    c = cutoff_ts(cutoff)
    with pd.option_context("mode.copy_on_write", True):
        df = df.reset_index(drop=True)
        df.insert(1, "cutoff", c)
        df["cutoff_month"] = int(c.tz_convert(BUSINESS_TZ).month)
        df["days_to_next_sale"] = _days_to_next_sale(c)
        casts = {c: t for c, t in SNAPSHOT_DTYPES.items() if df[c].dtype != pd.Series(dtype=t).dtype}
        return df.astype(casts)[list(SNAPSHOT_DTYPES)]


def compute_snapshot(
    source: Source,
    cutoff: dt.date | str,
    rules: LifecycleRules | None = None,
    engine: str | Engine | EngineConfig = "duckdb",
) -> pd.DataFrame:
    """Feature snapshot at ``cutoff`` of a data directory or of in-memory contract tables.

    ``engine`` is ``"duckdb"`` (default), ``"spark"``, an :class:`EngineConfig` or an open :class:`Engine`
    (reuse one across cutoffs: Spark starts once and the query is compiled once).
    """
    rules = rules or LifecycleRules()
    eng, owned = open_engine(engine)
    try:
        h = eng.histories(source)
        df = eng.execute_at(("snapshot", rules), lambda cut: snapshot_expr(h, cut, rules), cutoff)
    finally:
        if owned:
            eng.close()
    return finish_snapshot(df, cutoff)


def load_tables(data_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The contract tables a snapshot needs, in memory (events and touches are optional)."""
    tables = {name: read_table(data_dir, name) for name in ("customers", "orders")}
    for name in ("events", "touches"):
        try:
            tables[name] = read_table(data_dir, name)
        except FileNotFoundError:
            continue
    return tables


def build_snapshot(
    data_dir: str | Path, cutoff: dt.date | str, engine: str | Engine | EngineConfig = "duckdb"
) -> pd.DataFrame:
    """Feature snapshot of the data directory at ``cutoff``; the engine reads the parquet files itself."""
    return compute_snapshot(Path(data_dir), cutoff, engine=engine)


def write_snapshot(df: pd.DataFrame, data_dir: str | Path, cutoff: dt.date | str) -> Path:
    """Write a snapshot atomically to ``DIR/snapshots/YYYY-MM-DD.parquet``."""
    day = pd.Timestamp(cutoff).date().isoformat()
    return atomic_write_parquet(df, snapshot_dir(data_dir) / f"{day}.parquet")


def latest_snapshot(data_dir: str | Path) -> tuple[dt.date, pd.DataFrame]:
    """The newest snapshot in ``DIR/snapshots`` with its cutoff date."""
    paths = sorted(snapshot_dir(data_dir).glob("????-??-??.parquet"))
    if not paths:
        raise FileNotFoundError(f"no feature snapshot in {snapshot_dir(data_dir)}; run `siyu features build`")
    return dt.date.fromisoformat(paths[-1].stem), pd.read_parquet(paths[-1])
