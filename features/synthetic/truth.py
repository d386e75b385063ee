"""The latent truth of a synthetic world, its on-disk form and the oracles computed from it.

Oracles take explicit cutoffs (dates = midnight in the business timezone) and whole-day horizons.
Because the world's hourly profile integrates to 1 over every business day, the integrated purchase
intensity over ``[c, c+h)`` is exactly ``Σ season(day)`` over those days, so

- ``oracle_p_alive``: 1.0 if the person had not dropped out by ``c`` (latent truth), else 0.0;
- ``oracle_p_purchase``: ``1{alive}·(1 − exp(−λ·Σ season))`` — exact under the BG/NBD process (death
  only follows a purchase, so the first purchase in the window happens iff the Poisson clock ticks).
  It does not model campaign effects inside the window (treated customers buy a little more, or
  sleeping dogs a little less); compare against worlds without campaigns or outside campaign windows;
- ``oracle_uplift``: the campaign effect model of :mod:`features.synthetic.campaigns` for a
  hypothetical touch at ``c`` on ``channel``, per customer acquired before ``c``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.io import atomic_write_parquet
from features.schema import BUSINESS_TZ
from features.synthetic.calendar import business_midnight, season_daily
from features.synthetic.campaigns import effect_probs
from features.synthetic.config import CHANNEL_COSTS, CHANNEL_KAPPA, SynthConfig
from features.synthetic.population import PERSONAS

TRUTH_TABLES: tuple[str, ...] = ("persons", "campaigns", "campaign_effects", "identity_truth", "purchases")


@dataclass(frozen=True)
class Truth:
    """Everything the generator knows and the data does not show directly.

    - ``persons``: customer_id, lam (per day), p, dropout_ts (NaT if alive at the end), persona,
      mean_spend (true mean net spend per paid order), covariates, persuasion strength, holdout;
    - ``campaigns``: campaign_id, channel, start_ts, window_days, cost_per_contact, audience, sizes;
    - ``campaign_effects``: one row per assigned customer with base_p, treated_p, true_uplift,
      uplift_value, segment, and the realised ``converted`` flag;
    - ``identity_truth``: source, source_user_id → person_id (plus which fragments carry shared keys);
    - ``purchases``: every paid order with its kind (first / repeat / campaign-induced).
    """

    config: SynthConfig
    persons: pd.DataFrame
    campaigns: pd.DataFrame
    campaign_effects: pd.DataFrame
    identity_truth: pd.DataFrame
    purchases: pd.DataFrame


def truth_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "truth"


def write_truth(truth: Truth, data_dir: str | Path) -> None:
    """Write ``DIR/truth/<table>.parquet`` and ``DIR/truth/config.json``."""
    folder = truth_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in TRUTH_TABLES:
        atomic_write_parquet(getattr(truth, name), folder / f"{name}.parquet")
    text = json.dumps(truth.config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    tmp = folder / ".config.json.tmp"
    tmp.write_text(text)
    tmp.replace(folder / "config.json")


def load_truth(data_dir: str | Path) -> Truth:
    """Read the truth written by :func:`features.synthetic.write_world`."""
    folder = truth_dir(data_dir)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no synthetic truth in {folder} (expected config.json and *.parquet)")
    cfg = SynthConfig.model_validate_json((folder / "config.json").read_text())
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in TRUTH_TABLES}
    return Truth(config=cfg, **tables)


def _cutoff(truth: Truth, cutoff: date | str | pd.Timestamp) -> pd.Timestamp:
    c = business_midnight(cutoff)
    limit = business_midnight(truth.config.end + timedelta(days=1))
    if c > limit:
        raise ValueError(f"cutoff {cutoff} is after the observed period (ends {truth.config.end}); "
                         "the latent state is only known inside it")
    return c


def _season_sum(truth: Truth, c: pd.Timestamp, days: int) -> float:
    if days <= 0:
        raise ValueError(f"horizon must be a positive number of days, got {days}")
    if not truth.config.season:
        return float(days)
    first = np.datetime64(c.tz_convert(BUSINESS_TZ).date().isoformat(), "D").astype(np.int64)
    return float(season_daily(np.arange(first, first + days)).sum())


def _acquired(truth: Truth, c: pd.Timestamp) -> pd.DataFrame:
    persons = truth.persons
    return persons[persons["acquisition_ts"] < c]


def _alive(persons: pd.DataFrame, c: pd.Timestamp) -> np.ndarray:
    drop = persons["dropout_ts"]
    return (drop.isna() | (drop >= c)).to_numpy()


def oracle_p_alive(truth: Truth, cutoff: date | str | pd.Timestamp) -> pd.Series:
    """Latent alive state (1.0/0.0) at ``cutoff`` for every customer acquired before it."""
    c = _cutoff(truth, cutoff)
    persons = _acquired(truth, c)
    index = pd.Index(persons["customer_id"], name="customer_id")
    return pd.Series(_alive(persons, c).astype(float), index=index, name="p_alive")


def oracle_p_purchase(truth: Truth, cutoff: date | str | pd.Timestamp, horizon_days: int) -> pd.Series:
    """Exact P(≥1 paid purchase in [cutoff, cutoff + horizon_days)) given λ, alive state and season."""
    c = _cutoff(truth, cutoff)
    persons = _acquired(truth, c)
    s = _season_sum(truth, c, horizon_days)
    p = np.where(_alive(persons, c), 1.0 - np.exp(-persons["lam"].to_numpy() * s), 0.0)
    return pd.Series(p, index=pd.Index(persons["customer_id"], name="customer_id"), name="p_purchase")


def oracle_uplift(
    truth: Truth, cutoff: date | str | pd.Timestamp, channel: str, window_days: int
) -> pd.DataFrame:
    """True effect of touching each customer on ``channel`` at ``cutoff`` over ``window_days``.

    Columns: alive, segment, base_p, treated_p, uplift_p (= treated − base), uplift_value (expected
    incremental net revenue = uplift_p × true mean spend), cost (per contact).
    """
    if channel not in CHANNEL_KAPPA:
        raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(sorted(CHANNEL_KAPPA))}")
    c = _cutoff(truth, cutoff)
    persons = _acquired(truth, c)
    s = _season_sum(truth, c, window_days)
    buys = truth.purchases
    last = buys[buys["ts"] < c].groupby("customer_id")["ts"].max()
    last_ts = persons["customer_id"].map(last)
    since = ((c - last_ts).dt.total_seconds() / 86400.0).to_numpy()
    wecom = (persons["wecom_added_ts"] < c).fillna(False).to_numpy(dtype=bool)
    persona = persons["persona"].map({name: i for i, name in enumerate(PERSONAS)}).to_numpy()
    alive = _alive(persons, c)
    probs = effect_probs(channel, persons["lam"].to_numpy(), alive, np.full(len(persons), s), persona,
                         persons["persuasion"].to_numpy(), since, wecom)
    uplift = probs["treated_p"] - probs["base_p"]
    return pd.DataFrame(
        {"alive": alive, "segment": probs["segment"], "base_p": probs["base_p"],
         "treated_p": probs["treated_p"], "uplift_p": uplift,
         "uplift_value": uplift * persons["mean_spend"].to_numpy(), "cost": CHANNEL_COSTS[channel]},
        index=pd.Index(persons["customer_id"], name="customer_id"),
    )
