"""`siyu data ...` and `siyu features ...`: the data and feature stages.

Heavy modules are imported inside each command so that `siyu --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

data_app = typer.Typer(
    help="Generate, ingest and validate unified customer histories (the data contract).",
    no_args_is_help=True,
)
features_app = typer.Typer(
    help="Point-in-time feature snapshots and training sets (DuckDB by default, Spark at scale).",
    no_args_is_help=True,
)


@data_app.command("validate")
def validate(
    data: Path = typer.Argument(..., help="Data directory holding the contract tables (*.parquet)."),
) -> None:
    """Validate every contract table in DATA and print a readable summary of all failures.

    Exits with code 1 when any table breaks the contract, listing every bad row at once.
    """
    from features.quality import validate_data_dir

    reports, missing = validate_data_dir(data)
    for name in missing:
        typer.echo(f"{name}: MISSING ({data / (name + '.parquet')})")
    for report in reports:
        typer.echo(report.summary())
    if missing or not all(r.ok for r in reports):
        raise typer.Exit(code=1)
    typer.echo(f"all {len(reports)} tables pass the data contract")


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Data directory to write (tables + truth/)."),
    customers: int = typer.Option(20_000, "--customers", min=1, help="Number of distinct persons."),
    seed: int = typer.Option(7, "--seed", min=0, help="Random seed; same seed and key => same bytes."),
    start: str = typer.Option("2023-01-01", "--start", help="First day of the period (YYYY-MM-DD)."),
    end: str = typer.Option("2024-12-31", "--end", help="Last observed day, inclusive (YYYY-MM-DD)."),
    no_covariates: bool = typer.Option(
        False, "--no-covariates", help="Draw λ and p with no covariate shifts (BG/NBD recovery checks)."
    ),
) -> None:
    """Generate a synthetic private-domain world with its latent truth.

    Persons follow a BG/NBD purchase process with 618 / Double-11 peaks and a Spring Festival dip,
    spend per Gamma-Gamma, buy across channels, leave interaction events, receive randomised outreach
    campaigns with a true heterogeneous effect and appear under several identity fragments.
    Writes OUT/{customers,orders,events,touches,identities}.parquet (validated) and OUT/truth/.
    Identifiers are hashed with SIYU_PII_KEY if set, else a demo key derived from the seed.
    """
    import time
    from datetime import date

    from tqdm import tqdm

    from features.synthetic import STEPS, SynthConfig, generate_world, summarize, write_world

    try:
        cfg = SynthConfig(
            customers=customers,
            seed=seed,
            start=date.fromisoformat(start),
            end=date.fromisoformat(end),
            covariates=not no_covariates,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    t0 = time.perf_counter()
    with tqdm(total=len(STEPS) + 1, desc="synth", unit="step") as bar:

        def advance(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        world = generate_world(cfg, progress=advance)
        bar.set_postfix_str("write + validate")
        write_world(world, out)
        bar.update(1)
    s = summarize(world)
    typer.echo(
        f"customers {s['customers']:,} | orders {s['orders']:,} (paid {s['paid_orders']:,}) | "
        f"events {s['events']:,} | touches {s['touches']:,} | identities {s['identities']:,}"
    )
    typer.echo(
        f"repeat buyers {s['repeat_buyers']:,} ({s['repeat_buyers'] / s['customers']:.1%}) | "
        f"alive at end {s['share_alive_at_end']:.1%} | paid net revenue ¥{s['paid_net_revenue']:,.0f}"
    )
    typer.echo(f"wrote {out} in {time.perf_counter() - t0:.1f}s")


@data_app.command("ingest")
def ingest(
    orders: Path = typer.Option(..., "--orders", help="Transaction export (CSV or parquet)."),
    mapping: str = typer.Option(
        ..., "--mapping", help="YAML mapping file, or the name of a bundled one (e.g. online_retail)."
    ),
    out: Path = typer.Option(..., "--out", help="Data directory to write orders, customers and the report."),
) -> None:
    """Map a real transaction export onto the orders contract and derive the customers table.

    Every input row is counted under one rule in OUT/ingest_report.json (duplicates, missing customer
    ids, non-product lines, returns netted against their orders, ...). Exits with code 1 and one
    message naming the columns when the file cannot be ingested at all.
    """
    from features.ingest import IngestError, ingest_file, resolve_mapping, write_ingest
    from features.schema import ContractError

    try:
        result = ingest_file(orders, resolve_mapping(mapping))
        paths = write_ingest(result, out)
    except (IngestError, ContractError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    r = result.report
    dropped = {k: v for k, v in r.rules.items() if v and k not in ("sale_line", "return_netted")}
    typer.echo(
        f"{r.input_rows:,} rows → {r.orders:,} orders ({r.orders_by_status['refunded']:,} refunded, "
        f"{r.orders_by_status['cancelled']:,} cancelled) of {r.customers:,} customers; "
        f"{r.rules['sale_line']:,} sale lines, {r.rules['return_netted']:,} returns netted"
    )
    typer.echo("set aside: " + (", ".join(f"{k} {v:,}" for k, v in dropped.items()) or "nothing"))
    typer.echo(f"wrote {paths['orders'].parent} (report: {paths['report'].name})")


@data_app.command("oneid")
def oneid(
    data: Path = typer.Option(..., "--data", help="Data directory holding identities.parquet."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default DATA/oneid)."),
    config: Path | None = typer.Option(None, "--config", help="OneID YAML: block-list, size limits."),
    previous: Path | None = typer.Option(
        None, "--previous", help="An earlier OneID identities.parquet whose ids are carried forward."
    ),
) -> None:
    """Resolve identity fragments into one stable customer id per person (OneID).

    Writes OUT/identities.parquet (customer_id resolved) and OUT/oneid_report.json (components,
    sizes, keys blocked, components split). Needs SIYU_PII_KEY for the keyed ids. When DATA holds a
    synthetic world's truth, pairwise precision and recall against it are reported too.
    """
    import pandas as pd

    from features.identity import OneIDError, load_oneid_config, resolve, score_against_truth, write_oneid
    from features.io import read_table
    from features.pii import MissingPIIKeyError
    from features.schema import ContractError

    target = out or data / "oneid"
    try:
        cfg = load_oneid_config(config)
        prev = pd.read_parquet(previous) if previous else None
        result = resolve(read_table(data, "identities"), cfg, previous=prev)
        truth_file = data / "truth" / "identity_truth.parquet"
        if truth_file.exists():
            scores = score_against_truth(result.identities, pd.read_parquet(truth_file))
            result.report.against_truth = scores
        paths = write_oneid(result, target)
    except (OneIDError, ContractError, MissingPIIKeyError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    r = result.report
    typer.echo(
        f"{r.fragments:,} fragments → {r.persons:,} customers ({r.singletons:,} single-account); "
        f"largest {r.largest_components[:3]}"
    )
    typer.echo(
        "keys not used: " + ", ".join(f"{k} {v:,}" for k, v in r.keys_blocked.items())
        + f"; components split {r.components_split:,}"
    )
    if r.ids_carried_forward is not None:
        typer.echo(
            f"ids carried forward {r.ids_carried_forward:,}, new {r.ids_new:,}, retired {r.ids_retired:,}"
        )
    if r.against_truth:
        t = r.against_truth
        typer.echo(
            f"against the synthetic truth: pairwise precision {t['precision']:.4f}, recall {t['recall']:.4f}"
        )
    typer.echo(f"wrote {paths['identities']} and {paths['report'].name}")


def _engine_option(engine: str) -> str:
    from features.engine import ENGINES

    if engine not in ENGINES:
        raise typer.BadParameter(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return engine


_ENGINE_HELP = (
    "Execution engine: duckdb (embedded, default) or spark (an active SparkSession if there is one, "
    "else local mode; the same feature definitions run on both)."
)


@features_app.command("build")
def build(
    data: Path = typer.Option(..., "--data", help="Data directory with the contract tables."),
    cutoff: str = typer.Option(..., "--cutoff", help="Cutoff date YYYY-MM-DD (midnight, business timezone)."),
    out: Path | None = typer.Option(
        None, "--out", help="Output parquet (default DATA/snapshots/CUTOFF.parquet)."
    ),
    engine: str = typer.Option("duckdb", "--engine", help=_ENGINE_HELP, callback=_engine_option),
) -> None:
    """Build the point-in-time feature snapshot at CUTOFF (only records before it are used)."""
    from features.io import atomic_write_parquet
    from features.snapshot import build_snapshot, write_snapshot

    _check_date(cutoff, "--cutoff")
    try:
        snap = build_snapshot(data, cutoff, engine=engine)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    path = atomic_write_parquet(snap, out) if out else write_snapshot(snap, data, cutoff)
    typer.echo(
        f"snapshot at {cutoff} ({engine}): {len(snap):,} customers × {snap.shape[1] - 2} features → {path}"
    )


def _check_date(value: str, option: str) -> None:
    import datetime as dt

    try:
        dt.date.fromisoformat(value)
    except ValueError as err:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=option) from err


@features_app.command("training-set")
def training_set(
    data: Path = typer.Option(..., "--data", help="Data directory with the contract tables."),
    cutoffs: str = typer.Option(
        ..., "--cutoffs", help="Comma-separated cutoff dates, e.g. 2024-01-01,2024-02-01."
    ),
    out: Path = typer.Option(..., "--out", help="Output parquet; a manifest JSON is written beside it."),
    churn_horizon: int = typer.Option(90, "--churn-horizon", min=1, help="Churn label horizon in days."),
    engine: str = typer.Option("duckdb", "--engine", help=_ENGINE_HELP, callback=_engine_option),
) -> None:
    """Stack snapshots × labels over CUTOFFS into one training set with a manifest."""
    from features.labels import LabelWindowError
    from features.training_set import build_training_set, write_training_set

    days = [c.strip() for c in cutoffs.split(",") if c.strip()]
    for day in days:
        _check_date(day, "--cutoffs")
    try:
        df = build_training_set(data, days, churn_horizon, engine=engine)
    except (LabelWindowError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    path = write_training_set(df, out, data, churn_horizon, engine=engine)
    typer.echo(f"training set: {len(df):,} rows → {path} (manifest beside it)")
