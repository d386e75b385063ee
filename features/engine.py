"""Execution engines: every feature is one ibis expression, run on DuckDB (default) or PySpark.

The feature families (:mod:`features.rfm`, :mod:`features.behavioral`, :mod:`features.channel`,
:mod:`features.lifecycle`) and the labels are written once against ibis tables; an :class:`Engine`
binds those tables to a backend and executes the expressions. DuckDB runs embedded on one machine;
PySpark runs the same expressions in local mode (tests) or on a cluster.

What the engine boundary does, and why:

* **Time becomes UTC epoch microseconds** (``ts`` → ``ts_us``, ``first_seen_ts`` → ``first_seen_us``,
  ``wecom_added_ts`` → ``wecom_added_us``). Spark hands timestamps back naive in the session timezone,
  ibis 12 does not know DuckDB 2.0's ``TIMESTAMPTZ_NS`` (what pandas writes to parquet), and Spark
  refuses nanosecond parquet timestamps unless told to read them as longs. Integers sidestep all three,
  and cutting at a cutoff becomes integer comparison (:mod:`features.as_of`).
* **Parquet is read by the engine itself**, never through pandas: DuckDB through a view over
  ``read_parquet`` written in plain SQL (ibis 12 types the pandas-written ``ts`` column as unknown, so it
  cannot express the conversion; its ``create_table`` also emits a ``DROP VIEW IF EXISTS`` that duckdb
  2.0's parser rejects), Spark through ``spark.read.parquet``. Only the columns the features use are
  read, and DuckDB applies the cutoff filter inside the parquet scan.
* **Each query is compiled once** per engine and shape (:meth:`Engine.execute_at`), and on DuckDB the
  shared sub-queries are planned by :func:`plan_ctes`.
* **Money is summed exactly**, as whole micro-units held in doubles (:func:`money_micro`, :func:`money`).
  Adding whole numbers below 2^53 never rounds, so a sum does not depend on the order in which threads
  or executors meet the rows: DuckDB runs on every core and a snapshot is still byte-identical between
  runs, and Spark agrees with DuckDB to the last unit. (Doubles rather than 64-bit integers because both
  engines widen integer sums to 128 bits, which is slower; the bound, 9·10⁹ currency units per customer
  and feature, is far above any shopper.)

In-memory frames (tests, notebooks) are registered with the backend under the same columns.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa
import sqlglot
from sqlglot.optimizer.eliminate_subqueries import eliminate_subqueries

from features.as_of import EngineCutoff, bind_cutoff
from features.io import table_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

EngineName = Literal["duckdb", "spark"]
ENGINES: tuple[str, ...] = ("duckdb", "spark")

#: Columns each history table exposes inside an engine (time as UTC epoch microseconds).
HISTORY_COLUMNS: dict[str, dict[str, str]] = {
    "customers": {
        "customer_id": "string",
        "first_seen_us": "int64",
        "wecom_added_us": "int64",
        "acquisition_channel": "string",
        "member_level": "string",
        "city_tier": "int64",
    },
    "orders": {
        "customer_id": "string",
        "ts_us": "int64",
        "channel": "string",
        "status": "string",
        "net_amount": "float64",
    },
    "events": {"customer_id": "string", "ts_us": "int64", "event_type": "string"},
    "touches": {"customer_id": "string", "ts_us": "int64", "arm": "string"},
}
#: Engine time column → contract timestamp column it comes from.
TIME_SOURCES: dict[str, str] = {
    "ts_us": "ts",
    "first_seen_us": "first_seen_ts",
    "wecom_added_us": "wecom_added_ts",
}
#: Tables a snapshot can do without (their features are then zero or missing).
OPTIONAL_TABLES: tuple[str, ...] = ("events", "touches")

MICRO = 1_000_000

Source = str | Path | Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class EngineConfig:
    """How an engine runs. DuckDB uses every core by default; Spark defaults suit local mode."""

    name: EngineName = "duckdb"
    threads: int | None = None
    memory_limit: str | None = None
    spark_master: str = "local[2]"
    spark_shuffle_partitions: int = 4
    spark_driver_memory: str = "2g"
    spark_conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Histories:
    """The history tables of one data source, bound to an engine (see :data:`HISTORY_COLUMNS`)."""

    customers: ir.Table
    orders: ir.Table
    events: ir.Table
    touches: ir.Table


# ----------------------------------------------------------------------- portable expression helpers


def money_micro(amount: ir.FloatingValue) -> ir.FloatingValue:
    """A money amount as whole micro-units (exact and order-independent when summed, see above)."""
    return (amount * MICRO).round().cast("float64")


def money(micro_sum: ir.NumericValue) -> ir.FloatingValue:
    """Back from (summed) micro-units to a float amount."""
    return micro_sum.cast("float64") / MICRO


def us_to_days(us: ir.NumericValue) -> ir.FloatingValue:
    """Microseconds as fractional days."""
    return us.cast("float64") / 86_400_000_000


# ------------------------------------------------------------------------------------------- engine

_names = itertools.count()
#: Compiled DuckDB queries by key, shared by all DuckDB engines of the process: each DuckDB connection
#: has its own catalog, so the views carry the same names everywhere and a query compiled once (about a
#: second of ibis work) serves every engine. Spark engines share a session catalog, so theirs are per
#: engine.
_DUCKDB_TEMPLATES: dict[Hashable, str] = {}


class Engine:
    """An ibis backend (DuckDB or PySpark) plus the conventions above. Use as a context manager."""

    def __init__(self, config: EngineConfig | None = None, spark: SparkSession | None = None) -> None:
        self.config = config or EngineConfig()
        if self.config.name not in ENGINES:
            raise ValueError(f"unknown engine {self.config.name!r}; choose one of {', '.join(ENGINES)}")
        self._owns_spark = False
        self._spark = None
        duck = self.config.name == "duckdb"
        self._serial = "duckdb" if duck else f"{os.getpid()}_{next(_names)}"
        self._templates: dict[Hashable, str] = _DUCKDB_TEMPLATES if duck else {}
        if self.config.name == "duckdb":
            self.backend = ibis.duckdb.connect()
            self._duckdb_settings()
        else:
            self._spark = spark or self._start_spark()
            prepare_spark_session(self._spark)
            self.backend = ibis.pyspark.connect(self._spark)

    @property
    def name(self) -> str:
        return self.config.name

    def _duckdb_settings(self) -> None:
        self.backend.raw_sql("SET TimeZone = 'UTC'")
        if self.config.threads:
            self.backend.raw_sql(f"SET threads = {int(self.config.threads)}")
        if self.config.memory_limit:
            self.backend.raw_sql(f"SET memory_limit = '{self.config.memory_limit}'")

    def _start_spark(self) -> SparkSession:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        self._owns_spark = True
        return local_spark_session(self.config)

    # ------------------------------------------------------------------------------ binding tables

    def histories(self, source: Source) -> Histories:
        """Bind the history tables of a data directory or of in-memory contract frames.

        The tables are bound under this engine's fixed view names, so binding a new source replaces the
        previous one (and queries compiled for one source serve the next, see :meth:`execute_at`).
        """
        tables = {name: self._table(source, name) for name in HISTORY_COLUMNS}
        return Histories(**tables)

    def _table(self, source: Source, name: str) -> ir.Table:
        view = f"siyu_{name}_{self._serial}"
        if isinstance(source, Mapping):
            if name not in source and name not in OPTIONAL_TABLES:
                raise KeyError(f"history table {name!r} is missing")
            frame = normalise_frame(name, source[name]) if name in source else empty_frame(name)
            self._register_frame(view, name, frame)
            return self.backend.table(view)
        path = table_path(source, name)
        if not path.exists():
            if name not in OPTIONAL_TABLES:
                raise FileNotFoundError(f"table {name!r} not found: expected {path}")
            self._register_frame(view, name, empty_frame(name))
        elif self.name == "duckdb":
            self._duckdb_view(view, name, path)
        else:
            self._spark_view(view, name, path)
        return self.backend.table(view)

    def _register_frame(self, view: str, name: str, frame: pd.DataFrame) -> None:
        # Typed through an explicit schema: an empty object column would otherwise have no type at all.
        arrow = pa.Table.from_pandas(frame, schema=_arrow_schema(name), preserve_index=False)
        if self.name == "duckdb":
            # A view over the registered data, so that rebinding (file or frame) is CREATE OR REPLACE.
            self.backend.con.register(f"{view}_data", arrow)
            self.backend.raw_sql(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {view}_data")
        else:
            self._spark.createDataFrame(arrow).createOrReplaceTempView(view)

    def _duckdb_view(self, view: str, name: str, path: Path) -> None:
        cols = []
        for col in HISTORY_COLUMNS[name]:
            src = TIME_SOURCES.get(col)
            cols.append(f'epoch_us(CAST("{src}" AS TIMESTAMPTZ)) AS "{col}"' if src else f'"{col}"')
        literal = str(path).replace("'", "''")
        self.backend.raw_sql(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {', '.join(cols)} FROM read_parquet('{literal}')"
        )

    def _spark_view(self, view: str, name: str, path: Path) -> None:
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        df = self._spark.read.parquet(local_file_uri(path))
        cols = []
        for col, dtype in HISTORY_COLUMNS[name].items():
            src = TIME_SOURCES.get(col)
            if src is None:
                cols.append(F.col(col).cast(_SPARK_TYPES[dtype]).alias(col))
            elif isinstance(df.schema[src].dataType, T.LongType):
                # Nanosecond parquet timestamps arrive as longs (spark.sql.legacy.parquet.nanosAsLong).
                ns = F.col(src)
                cols.append(((ns - F.pmod(ns, F.lit(1000))) / 1000).cast("long").alias(col))
            else:
                cols.append(F.unix_micros(F.col(src).cast("timestamp")).alias(col))
        df.select(*cols).createOrReplaceTempView(view)

    # ------------------------------------------------------------------------------------ running

    def execute(self, expr: ir.Table) -> pd.DataFrame:
        """Run ``expr`` and return a pandas frame."""
        return self._run(self.sql(expr))

    def execute_at(
        self, key: Hashable, build: Callable[[EngineCutoff], ir.Table], cutoff: dt.date | str | pd.Timestamp
    ) -> pd.DataFrame:
        """Run the query ``build`` makes for ``cutoff``, compiling it once per ``key`` and engine.

        ``build`` receives an :class:`~features.as_of.EngineCutoff` and must not branch on its value; the
        compiled SQL is kept under ``key`` (which must name everything else the query depends on) and
        each later cutoff only replaces the two cutoff literals. Compiling a snapshot costs about a
        second; a training set over many cutoffs, or many small histories, pays it once.
        """
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = self.sql(build(EngineCutoff.placeholder()))
        return self._run(bind_cutoff(template, cutoff))

    def _run(self, sql: str) -> pd.DataFrame:
        if self.name == "duckdb":
            # Through Arrow: about half the cost of DuckDB's own pandas conversion on wide results.
            df = self.backend.con.sql(sql).to_arrow_table().to_pandas()
        else:
            df = self._spark.sql(sql).toPandas()
        for col in df.columns:
            # Spark returns timestamps naive in its session timezone, which siyu pins to UTC.
            if pd.api.types.is_datetime64_dtype(df[col]) and getattr(df[col].dt, "tz", None) is None:
                df[col] = df[col].dt.tz_localize("UTC")
        return df

    def sql(self, expr: ir.Expr) -> str:
        """The SQL this engine runs for ``expr`` (see :func:`plan_ctes` for DuckDB)."""
        query = self.backend.compiler.to_sqlglot(expr)
        if self.name == "duckdb":
            query = plan_ctes(query)
        return query.sql(dialect=self.backend.dialect)

    def scalar(self, expr: ir.Scalar) -> Any:
        """Run a scalar expression."""
        return self.execute(expr.name("value").as_table())["value"].iloc[0]

    def close(self) -> None:
        """Release the backend (and the SparkSession if this engine started it)."""
        if self.name == "duckdb":
            self.backend.disconnect()
        elif self._owns_spark and self._spark is not None:
            self._spark.stop()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PANDAS_DTYPES = {"string": object, "int64": "Int64", "float64": "float64"}
_SPARK_TYPES = {"string": "string", "int64": "long", "float64": "double"}  # for casts


def _arrow_schema(name: str) -> pa.Schema:
    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    return pa.schema([(c, types[t]) for c, t in HISTORY_COLUMNS[name].items()])


def empty_frame(name: str) -> pd.DataFrame:
    """A history table without rows (for optional tables that are absent)."""
    return pd.DataFrame({c: pd.Series(dtype=_PANDAS_DTYPES[t]) for c, t in HISTORY_COLUMNS[name].items()})


def plan_ctes(query: sqlglot.exp.Expression) -> sqlglot.exp.Expression:
    """Decide, for DuckDB, which sub-queries are computed once and which are recomputed at each use.

    ibis writes a sub-query used twice (say the per-customer table that the ranks are computed on and
    joined back to) out twice; sqlglot's ``eliminate_subqueries`` turns every sub-query into a common table
    expression and merges identical ones. A CTE used more than once is then ``MATERIALIZED`` when it is
    derived (it aggregates, or reads other CTEs: one row per customer, costly to recompute) and ``NOT
    MATERIALIZED`` when it only scans and filters a history table: buffering tens of millions of cut
    purchases costs more than reading the parquet columns again with the cutoff filter pushed down.
    """
    query = eliminate_subqueries(query)
    ctes = {cte.alias: cte for cte in query.find_all(sqlglot.exp.CTE)}
    uses = Counter(t.name for t in query.find_all(sqlglot.exp.Table) if t.name in ctes)
    for name, cte in ctes.items():
        derived = cte.this.find(sqlglot.exp.Group) is not None or any(
            t.name in ctes for t in cte.this.find_all(sqlglot.exp.Table)
        )
        cte.set("materialized", uses[name] > 1 and derived)
    return query


def epoch_us(ts: pd.Series) -> pd.Series:
    """Tz-aware timestamps as nullable UTC epoch microseconds; naive timestamps are refused."""
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError(
            f"column {ts.name!r} must hold timezone-aware timestamps (UTC by the data contract), "
            f"got {ts.dtype}"
        )
    naive = ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("us")
    values = naive.to_numpy().view("int64")
    return pd.Series(pd.arrays.IntegerArray(values, ts.isna().to_numpy()), index=ts.index, name=ts.name)


def normalise_frame(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """The engine columns of contract table ``name`` from an in-memory frame."""
    out = {}
    for col, dtype in HISTORY_COLUMNS[name].items():
        src = TIME_SOURCES.get(col)
        if src is not None:
            out[col] = epoch_us(df[src]).array
        else:
            out[col] = df[col].to_numpy()
            if dtype == "float64":
                out[col] = out[col].astype("float64")
            elif dtype == "int64":
                out[col] = out[col].astype("int64")
    return pd.DataFrame(out)


def local_file_uri(path: str | Path) -> str:
    """``path`` as an absolute ``file://`` URI for Spark.

    A path without a scheme is resolved against the cluster's ``fs.defaultFS`` (HDFS on most YARN
    clusters), not against the local file system the driver checked, so siyu names the scheme. Not
    percent-encoded: Hadoop encodes the path itself.
    """
    return "file://" + Path(path).resolve().as_posix()


def local_spark_session(config: EngineConfig | None = None) -> SparkSession:
    """A local SparkSession tuned for small jobs (quiet, no UI, few shuffle partitions).

    When a session is already active (``spark-submit``, a notebook on a cluster), that session is
    returned with only :func:`prepare_spark_session` applied: the local-mode settings here (shuffle
    partitions, log level) would otherwise overwrite the cluster's own.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        prepare_spark_session(active)
        return active
    config = config or EngineConfig(name="spark")
    builder = (
        SparkSession.builder.master(config.spark_master)
        .appName("siyu-features")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(config.spark_shuffle_partitions))
        .config("spark.default.parallelism", str(config.spark_shuffle_partitions))
        .config("spark.driver.memory", config.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
    )
    for key, value in config.spark_conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def prepare_spark_session(session: SparkSession) -> None:
    """The SQL settings siyu relies on, applied to any session (local or a cluster's)."""
    session.conf.set("spark.sql.session.timeZone", "UTC")
    session.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    session.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")


def open_engine(engine: str | Engine | EngineConfig = "duckdb") -> tuple[Engine, bool]:
    """An engine for ``engine`` (a name, a config or an open engine) and whether the caller must close it."""
    if isinstance(engine, Engine):
        return engine, False
    config = engine if isinstance(engine, EngineConfig) else EngineConfig(name=engine)  # type: ignore[arg-type]
    return Engine(config), True
