"""Offline evaluation of targeting strategies on a synthetic world's truth.

At a fixed outreach budget, which customers should be contacted, and on which channel? A *strategy* is
any function ``(scores, budget, costs) → DataFrame[customer_id, channel]``: ``scores`` holds one row per
contactable customer (features and model scores at the cutoff), ``costs`` maps channel → cost per
contact. The simulator scores every strategy by its **true** incremental profit, computed from the
world's latent effect model (:func:`features.synthetic.oracle_uplift`)::

    profit(customer, channel) = margin_rate × uplift_value(customer, channel) − cost(channel)

Strategies compared (all exclude the persistent global holdout and obey the same budget):

* ``random`` — random customers on the baseline channel;
* ``churn_risk`` — highest churn risk first, baseline channel. Risk is a LightGBM classifier trained at
  an earlier cutoff ``c − H`` (label: no paid purchase in ``[c − H, c)``) and applied at ``c``;
* ``clv_x_risk`` — highest ``CLV × churn risk`` first, baseline channel; CLV is BG/NBD + Gamma-Gamma
  (:mod:`training.btyd_baseline`) fitted on the snapshot at ``c``;
* ``uplift`` — a :class:`experiments.uplift.ChannelUpliftModel` trained on every past randomised
  campaign (a pooled X-learner for *who* responds, with μ₀ from every untreated customer; each
  channel's measured, partially pooled effect for *how much*) predicts the uplift in conversion per
  channel; expected profit = margin × uplift × expected spend per order (Gamma-Gamma) − cost;
  customers and channels are chosen by the budgeted allocation below;
* ``feature_oracle`` (reference) — the allocation on the true profit regressed on the same observable
  features, cross-fitted: the ceiling of a model built on these features with noise-free labels;
* ``oracle`` — the same allocation on the true profits (the upper reference, not a strategy).

Every feature comes from :func:`experiments.targeting_features.targeting_features` — the shared
snapshot (:func:`features.snapshot.compute_snapshot`) plus BTYD scores — at the campaign start dates
for training and at the cutoff for scoring.

Budgeted allocation (a multiple-choice knapsack): for a price λ ≥ 0 every customer takes the channel
maximising ``profit − λ·cost`` if positive; λ is the smallest price whose plan fits the budget
(bisection), and the leftover budget is filled greedily by profit per ¥.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from experiments.assignment import global_holdout_mask, hash_uniform
from experiments.readout import ReadoutConfig, campaign_outcomes
from experiments.targeting_features import CALENDAR_COLUMNS, targeting_features
from experiments.uplift import (
    BaselineOutcomeModel,
    ChannelUpliftModel,
    encode_features,
    feature_columns,
    training_frame,
)
from features.as_of import cutoff_ts
from features.schema import BUSINESS_TZ, PURCHASE_STATUSES

Strategy = Callable[[pd.DataFrame, float, Mapping[str, float]], pd.DataFrame]
"""(scores frame with ``customer_id``, budget in ¥, channel → cost) → frame[customer_id, channel]."""


class UpliftConfig(BaseModel):
    """Settings of the channel uplift model fitted on past campaigns (chosen on worlds of other seeds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trees: int = Field(100, gt=0, description="Trees per LightGBM model of ChannelUpliftModel.")
    min_child_samples: int = Field(400, gt=0)
    weighting: Literal["propensity", "arm_size"] = Field(
        "arm_size", description="X-learner weighting of the imputed-effect halves (see XLearner)."
    )
    channel_pooling: Literal["empirical_bayes", "none"] = Field(
        "empirical_bayes", description="Partial pooling of the per-channel effect scales."
    )
    baseline: bool = Field(
        True, description="μ₀ from every untreated customer of past campaigns, not only the control arms."
    )


class SimulationConfig(BaseModel):
    """Settings of one offline targeting comparison (explicit, documented assumptions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: float = Field(gt=0, description="Outreach budget in ¥ for one wave of contacts.")
    cutoff: dt.date | None = Field(
        None, description="Decision date; default: the day after the world's declared observation period."
    )
    window_days: int = Field(14, gt=0, description="Outcome window of the simulated wave.")
    margin_rate: float = Field(0.35, gt=0, le=1, description="Gross margin share of incremental revenue.")
    baseline_channel: str = Field(
        "ai_call", description="Channel of the score-only strategies (best reported return in CHANNELS.md)."
    )
    churn_horizon_days: int = Field(90, gt=0, description="Churn = no paid purchase within this horizon.")
    holdout_share: float = Field(0.05, ge=0, lt=1, description="Persistent global holdout excluded from all.")
    seed: int = 0
    uplift: UpliftConfig = Field(default_factory=UpliftConfig, description="The channel uplift model.")
    feature_oracle: bool = Field(
        True, description="Also report the best a model on these features could do (fit to the truth)."
    )


# ----------------------------------------------------------------------------- point-in-time features


def business_midnight(day: dt.date | str) -> pd.Timestamp:
    """Midnight of ``day`` in the business timezone, as a UTC timestamp (:func:`features.as_of.cutoff_ts`)."""
    return cutoff_ts(day)


@dataclass(frozen=True)
class History:
    """The contract tables a simulation reads (full histories; every use cuts them at a cutoff)."""

    customers: pd.DataFrame
    orders: pd.DataFrame
    events: pd.DataFrame | None
    touches: pd.DataFrame
    _features: dict[dt.date, pd.DataFrame] = field(default_factory=dict, repr=False, compare=False)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables as :func:`features.snapshot.compute_snapshot` takes them."""
        out = {"customers": self.customers, "orders": self.orders, "touches": self.touches}
        if self.events is not None:
            out["events"] = self.events
        return out

    def features(self, cutoff: dt.date) -> pd.DataFrame:
        """Targeting features at ``cutoff`` (:func:`experiments.targeting_features.targeting_features`).

        Computed once per cutoff; callers get a copy.
        """
        if cutoff not in self._features:
            self._features[cutoff] = targeting_features(self.tables(), cutoff)
        return self._features[cutoff].copy()


# ----------------------------------------------------------------------------- model scores


def churn_scores(hist: History, cutoff: dt.date, horizon_days: int, seed: int) -> pd.Series:
    """P(no paid purchase in the next ``horizon_days``) from a LightGBM fit at ``cutoff − horizon``."""
    import lightgbm as lgb

    c0 = cutoff - dt.timedelta(days=horizon_days)
    train = hist.features(c0)
    train = train[train["n_orders"] > 0]
    t0, t1 = business_midnight(c0), business_midnight(cutoff)
    paid = hist.orders[hist.orders["status"].isin(PURCHASE_STATUSES)]
    buyers = set(paid.loc[(paid["ts"] >= t0) & (paid["ts"] < t1), "customer_id"])
    y = (~train["customer_id"].isin(buyers)).astype(int).to_numpy()
    cols = feature_columns(train)
    model = lgb.LGBMClassifier(
        n_estimators=200, learning_rate=0.05, num_leaves=15, min_child_samples=50,
        random_state=seed, n_jobs=1, deterministic=True, force_row_wise=True, verbose=-1,
    )  # fmt: skip
    now = hist.features(cutoff)
    X_train, X_now = encode_features(train, cols, now)
    model.fit(X_train, y)
    risk = model.predict_proba(X_now)[:, 1]
    return pd.Series(risk, index=pd.Index(now["customer_id"], name="customer_id"), name="churn_risk")


def clv_scores(feats: pd.DataFrame) -> pd.Series:
    """12-month discounted CLV (BG/NBD + Gamma-Gamma fitted on the snapshot at the cutoff); 0 if unknown."""
    return pd.Series(
        feats["btyd_clv"].fillna(0.0).clip(lower=0.0).to_numpy(),
        index=pd.Index(feats["customer_id"], name="customer_id"),
        name="clv",
    )


def campaign_windows(data_dir: Path) -> dict[str, float]:
    """Campaign id → outcome window (days) from ``DIR/truth/campaigns.parquet`` when present."""
    path = Path(data_dir) / "truth" / "campaigns.parquet"
    if not path.exists():
        return {}
    camps = pd.read_parquet(path, columns=["campaign_id", "window_days"])
    return dict(zip(camps["campaign_id"].astype(str), camps["window_days"].astype(float), strict=True))


@dataclass(frozen=True)
class PastCampaign:
    """A randomised campaign of the touches log: id, first touch and outcome window."""

    campaign_id: str
    start: pd.Timestamp
    window_days: float

    @property
    def start_day(self) -> dt.date:
        """Business day of the first touch: features are taken at its midnight."""
        return self.start.tz_convert(BUSINESS_TZ).date()


def past_campaigns(
    data_dir: Path,
    hist: History,
    finished_before: dt.date | None = None,
    started_on_or_after: dt.date | None = None,
) -> list[PastCampaign]:
    """Campaigns whose window ended before ``finished_before`` and that started on/after the other date."""
    windows = campaign_windows(data_dir)
    out = []
    for cid, ts0 in sorted(hist.touches.groupby("campaign_id")["ts"].min().items()):
        w = windows.get(str(cid), ReadoutConfig().window_days)
        if finished_before is not None and ts0 + pd.Timedelta(days=w) > business_midnight(finished_before):
            continue
        if started_on_or_after is not None and ts0 < business_midnight(started_on_or_after):
            continue
        out.append(PastCampaign(str(cid), ts0, float(w)))
    if not out:
        raise ValueError(
            f"no randomised campaign in the requested period (finished before {finished_before}, "
            f"started on or after {started_on_or_after})"
        )
    return out


def campaign_training_frame(
    data_dir: Path,
    hist: History,
    finished_before: dt.date | None = None,
    started_on_or_after: dt.date | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Units of past randomised campaigns (treatment/control) with outcomes and point-in-time features.

    Keeps campaigns whose outcome window ended before ``finished_before`` and that started on or after
    ``started_on_or_after``. Each campaign's units get the features at the campaign's start date (the
    business day of its first touch), so a model never sees anything from after the touch; the
    campaign's ``window_days`` is added.
    """
    frames = []
    camps = past_campaigns(data_dir, hist, finished_before, started_on_or_after)
    for camp in tqdm(camps, desc="campaign features", disable=not progress):
        cfg = ReadoutConfig(window_days=camp.window_days)
        out = campaign_outcomes(hist.touches, hist.orders, cfg, campaign_ids=[camp.campaign_id])
        frame = training_frame(out, {camp.campaign_id: hist.features(camp.start_day)})
        frames.append(frame.assign(window_days=camp.window_days))
    return pd.concat(frames, ignore_index=True)


def untreated_frame(
    data_dir: Path, hist: History, finished_before: dt.date, progress: bool = True
) -> pd.DataFrame:
    """Every customer *not* treated by a past campaign, at its start, with the organic outcome.

    Control and holdout arms and everyone outside the campaign's audience: ``converted`` = a paid order
    in ``[first touch, first touch + window)``; features at the campaign's start date, plus
    ``window_days``. The rows :class:`experiments.uplift.BaselineOutcomeModel` learns μ₀ from.
    """
    paid = hist.orders[hist.orders["status"].isin(PURCHASE_STATUSES)]
    frames = []
    for camp in tqdm(past_campaigns(data_dir, hist, finished_before), desc="untreated", disable=not progress):
        t = hist.touches
        treated = t.loc[(t["campaign_id"] == camp.campaign_id) & (t["arm"] == "treatment"), "customer_id"]
        feats = hist.features(camp.start_day)
        feats = feats[~feats["customer_id"].isin(set(treated))]
        end = camp.start + pd.Timedelta(days=camp.window_days)
        buyers = paid.loc[(paid["ts"] >= camp.start) & (paid["ts"] < end), "customer_id"]
        converted = feats["customer_id"].isin(set(buyers)).astype(float)
        frames.append(
            feats.assign(campaign_id=camp.campaign_id, window_days=camp.window_days, converted=converted)
        )
    return pd.concat(frames, ignore_index=True)


def cross_fitted_baseline(
    untreated: pd.DataFrame, units: pd.DataFrame, columns: Sequence[str], folds: int = 3, seed: int = 0
) -> np.ndarray:
    """μ₀ for each campaign unit from a :class:`BaselineOutcomeModel` that never saw that customer.

    Customers are split into ``folds`` by a hash of their id; each fold's units are predicted by a
    model fitted on the other folds' untreated rows (control units would otherwise be in-sample).
    """
    fold_u = (hash_uniform(untreated["customer_id"], "siyu-baseline-folds") * folds).astype(int)
    fold_t = (hash_uniform(units["customer_id"], "siyu-baseline-folds") * folds).astype(int)
    cols = list(columns)
    mu0 = np.full(len(units), np.nan)
    for k in range(folds):
        rows = fold_t == k
        if not rows.any():
            continue
        train = untreated[fold_u != k]
        model = BaselineOutcomeModel(random_state=seed + k).fit(train[cols], train["converted"].to_numpy())
        mu0[rows] = model.predict(units.loc[rows, cols])
    return mu0


def fit_channel_uplift(
    data_dir: Path,
    hist: History,
    cutoff: dt.date,
    config: UpliftConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ChannelUpliftModel:
    """A :class:`ChannelUpliftModel` (conversion) from the randomised campaigns finished before ``cutoff``.

    With ``config.baseline`` μ₀ comes from every untreated customer of those campaigns
    (:func:`untreated_frame`, cross-fitted by customer), else from the control arms alone.
    """
    config = config or UpliftConfig()
    df = campaign_training_frame(data_dir, hist, finished_before=cutoff, progress=progress)
    cols = feature_columns(df)
    baseline = None
    if config.baseline:
        untreated = untreated_frame(data_dir, hist, cutoff, progress)
        base_cols = [*cols, "window_days", *CALENDAR_COLUMNS]
        baseline = cross_fitted_baseline(untreated, df, base_cols, seed=seed)
    model = ChannelUpliftModel(
        n_estimators=config.trees,
        min_child_samples=config.min_child_samples,
        weighting=config.weighting,
        channel_pooling=config.channel_pooling,
        random_state=seed,
    )
    return model.fit(
        df[cols], df["converted"].to_numpy(), df["treatment"].to_numpy(), df["channel"], baseline=baseline
    )


def load_history(data_dir: str | Path, cutoff: dt.date | None = None) -> History:
    """Read the contract tables of ``data_dir``; touches are limited to those before ``cutoff``."""
    from features.io import read_table

    data_dir = Path(data_dir)
    touches = read_table(data_dir, "touches")
    if cutoff is not None:
        touches = touches[touches["ts"] < business_midnight(cutoff)]
    return History(
        customers=read_table(data_dir, "customers"),
        orders=read_table(data_dir, "orders"),
        events=read_table(data_dir, "events") if (data_dir / "events.parquet").exists() else None,
        touches=touches,
    )


def expected_order_value(feats: pd.DataFrame) -> pd.Series:
    """Expected spend per order: the Gamma-Gamma posterior mean given all the customer's orders.

    Falls back to the population mean order value where the fit failed.
    """
    n = feats["n_orders"].to_numpy(float)
    pop = float(feats["total_net"].sum() / max(n.sum(), 1.0))
    value = feats["expected_spend"].fillna(pop).to_numpy(float)
    return pd.Series(value, index=pd.Index(feats["customer_id"], name="customer_id"), name="order_value")


# ----------------------------------------------------------------------------- allocation & strategies


def allocate(value: pd.DataFrame, costs: Mapping[str, float], budget: float) -> pd.DataFrame:
    """Choose (customer, channel) pairs maximising Σ value under Σ cost ≤ budget (Lagrangian + greedy fill).

    ``value`` is indexed by customer_id with one column per channel (expected profit net of cost).
    """
    channels = list(value.columns)
    V = value.to_numpy(float)
    c = np.array([float(costs[ch]) for ch in channels])
    if (c <= 0).any():
        raise ValueError(f"every channel needs a positive cost, got {dict(zip(channels, c, strict=True))}")
    rows = np.arange(len(V))

    def plan(lam: float) -> tuple[np.ndarray, np.ndarray, float]:
        adj = V - lam * c
        j = adj.argmax(axis=1)
        take = adj[rows, j] > 0
        return j, take, float(c[j[take]].sum())

    j, take, spend = plan(0.0)
    if spend > budget:
        lo, hi = 0.0, float(np.max(V / c)) + 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if plan(mid)[2] > budget:
                lo = mid
            else:
                hi = mid
        j, take, spend = plan(hi)
        # Fill the leftover budget with the best remaining value per ¥.
        ratio = np.where(V > 0, V / c, -np.inf)
        jr = ratio.argmax(axis=1)
        cand = np.flatnonzero(~take & (ratio[rows, jr] > 0))
        for i in cand[np.argsort(-ratio[cand, jr[cand]], kind="stable")]:
            if spend + c[jr[i]] <= budget + 1e-9:
                take[i], j[i] = True, jr[i]
                spend += c[jr[i]]
    chosen = np.flatnonzero(take)
    return pd.DataFrame(
        {
            "customer_id": value.index.to_numpy()[chosen],
            "channel": np.array(channels, dtype=object)[j[chosen]],
        }
    )


def _top_k(order: np.ndarray, scores: pd.DataFrame, channel: str, budget: float, costs: Mapping[str, float]):
    k = int(budget // float(costs[channel]))
    ids = scores["customer_id"].to_numpy()[order[:k]]
    return pd.DataFrame({"customer_id": ids, "channel": channel})


def random_strategy(channel: str, seed: int = 0) -> Strategy:
    """Contact random customers on ``channel`` until the budget is spent."""

    def strategy(scores: pd.DataFrame, budget: float, costs: Mapping[str, float]) -> pd.DataFrame:
        order = np.random.default_rng(seed).permutation(len(scores))
        return _top_k(order, scores, channel, budget, costs)

    return strategy


def ranked_strategy(score_column: str, channel: str) -> Strategy:
    """Contact the customers with the highest ``score_column`` on ``channel`` until the budget is spent."""

    def strategy(scores: pd.DataFrame, budget: float, costs: Mapping[str, float]) -> pd.DataFrame:
        order = np.argsort(-scores[score_column].to_numpy(float), kind="stable")
        return _top_k(order, scores, channel, budget, costs)

    return strategy


def profit_strategy(prefix: str, channels: Sequence[str]) -> Strategy:
    """Budgeted allocation on per-channel expected profit columns ``{prefix}{channel}``."""

    def strategy(scores: pd.DataFrame, budget: float, costs: Mapping[str, float]) -> pd.DataFrame:
        value = scores.set_index("customer_id")[[f"{prefix}{ch}" for ch in channels]]
        value.columns = list(channels)
        return allocate(value, costs, budget)

    return strategy


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    n_contacted: int
    spend: float
    incremental_conversions: float
    incremental_revenue: float
    incremental_profit: float
    share_of_oracle: float


def evaluate_choice(
    choice: pd.DataFrame, truth_uplift: Mapping[str, pd.DataFrame], costs: Mapping[str, float], budget: float,
    margin_rate: float, name: str,
) -> StrategyResult:  # fmt: skip
    """True incremental outcome of contacting ``choice``.

    The choice is validated first: known customers and channels, one row per customer, within budget.
    """
    problems = []
    if not {"customer_id", "channel"} <= set(choice.columns):
        raise ValueError(f"strategy {name!r} must return customer_id and channel columns")
    dup = choice["customer_id"].duplicated()
    if dup.any():
        problems.append(f"{int(dup.sum())} customers chosen twice")
    unknown = sorted(set(choice["channel"]) - set(truth_uplift))
    if unknown:
        problems.append(f"unknown channels {unknown}")
    spend = float(choice["channel"].map(costs).sum()) if not unknown else float("nan")
    if spend > budget * (1 + 1e-9):
        problems.append(f"spend ¥{spend:,.2f} exceeds the budget ¥{budget:,.2f}")
    if problems:
        raise ValueError(f"strategy {name!r}: " + "; ".join(problems))
    conv = rev = 0.0
    for ch, grp in choice.groupby("channel"):
        t = truth_uplift[str(ch)].reindex(grp["customer_id"])
        if t["uplift_p"].isna().any():
            raise ValueError(f"strategy {name!r} chose {int(t['uplift_p'].isna().sum())} unknown customers")
        conv += float(t["uplift_p"].sum())
        rev += float(t["uplift_value"].sum())
    return StrategyResult(name, len(choice), spend, conv, rev, margin_rate * rev - spend, float("nan"))


def compare_strategies(
    scores: pd.DataFrame,
    strategies: Mapping[str, Strategy],
    truth_uplift: Mapping[str, pd.DataFrame],
    costs: Mapping[str, float],
    budget: float,
    margin_rate: float,
    reference: str = "oracle",
) -> pd.DataFrame:
    """Run every strategy on the same scores and budget; table of true outcomes and share of ``reference``."""
    results = [
        evaluate_choice(fn(scores, budget, costs), truth_uplift, costs, budget, margin_rate, name)
        for name, fn in strategies.items()
    ]
    table = pd.DataFrame([asdict(r) for r in results])
    if reference in set(table["strategy"]):
        ref = float(table.loc[table["strategy"] == reference, "incremental_profit"].iat[0])
        table["share_of_oracle"] = table["incremental_profit"] / ref if ref > 0 else float("nan")
    return table


# ----------------------------------------------------------------------------- end to end


@dataclass
class Scenario:
    """Scores and truth at one cutoff: everything needed to evaluate strategies at any budget."""

    config: SimulationConfig
    cutoff: dt.date
    channels: list[str]
    costs: dict[str, float]
    scores: pd.DataFrame
    truth_uplift: dict[str, pd.DataFrame]

    def strategies(self) -> dict[str, Strategy]:
        """The standard strategies (plus the feature-oracle ceiling and the oracle)."""
        base = self.config.baseline_channel
        out: dict[str, Strategy] = {
            "random": random_strategy(base, self.config.seed),
            "churn_risk": ranked_strategy("churn_risk", base),
            "clv_x_risk": ranked_strategy("clv_x_risk", base),
            "uplift": profit_strategy("exp_profit_", self.channels),
        }
        if self.config.feature_oracle:
            out["feature_oracle"] = profit_strategy("feature_oracle_", self.channels)
        out["oracle"] = profit_strategy("true_profit_", self.channels)
        return out

    def compare(self, budget: float, extra: Mapping[str, Strategy] | None = None) -> pd.DataFrame:
        """Strategy table at ``budget``; ``extra`` strategies (e.g. the serving policy) are added."""
        strategies = {**self.strategies(), **(extra or {})}
        return compare_strategies(
            self.scores, strategies, self.truth_uplift, self.costs, budget, self.config.margin_rate
        )


@dataclass
class Simulation:
    """Everything one run of the simulator produced."""

    config: SimulationConfig
    cutoff: dt.date
    channels: list[str]
    table: pd.DataFrame
    scores: pd.DataFrame

    def summary_json(self) -> dict[str, object]:
        t = self.table.set_index("strategy")
        return {
            "cutoff": self.cutoff.isoformat(),
            "budget": self.config.budget,
            "margin_rate": self.config.margin_rate,
            "channels": self.channels,
            "incremental_profit": {k: round(float(v), 2) for k, v in t["incremental_profit"].items()},
            "share_of_oracle": {k: round(float(v), 4) for k, v in t["share_of_oracle"].items()},
        }


def prepare_scenario(data_dir: str | Path, config: SimulationConfig, progress: bool = True) -> Scenario:
    """Fit the churn, CLV and channel-uplift models before the cutoff; score every contactable customer.

    Also attaches the truth: per channel the oracle uplift and ``true_profit_{channel}`` columns.
    """
    from features.synthetic import CHANNEL_COSTS, load_truth, oracle_uplift

    data_dir = Path(data_dir)
    truth = load_truth(data_dir)
    cutoff = config.cutoff or (truth.config.end + dt.timedelta(days=1))
    hist = load_history(data_dir, cutoff)
    feats = hist.features(cutoff)
    feats = feats[~global_holdout_mask(feats["customer_id"], config.holdout_share)].reset_index(drop=True)
    model = fit_channel_uplift(data_dir, hist, cutoff, config.uplift, config.seed, progress)
    channels = model.channels_
    costs = {ch: float(CHANNEL_COSTS[ch]) for ch in channels}
    if config.baseline_channel not in costs:
        raise ValueError(f"baseline channel {config.baseline_channel!r} has no past campaigns ({channels})")

    scores = feats.copy()
    scores["churn_risk"] = scores["customer_id"].map(
        churn_scores(hist, cutoff, config.churn_horizon_days, config.seed)
    )
    scores["clv"] = scores["customer_id"].map(clv_scores(feats))
    scores["clv_x_risk"] = scores["clv"] * scores["churn_risk"]
    order_value = expected_order_value(feats).reindex(scores["customer_id"]).to_numpy()
    truth_uplift: dict[str, pd.DataFrame] = {}
    for ch in channels:
        up = model.predict(scores[model.feature_names_], ch)
        scores[f"uplift_{ch}"] = up
        scores[f"exp_profit_{ch}"] = config.margin_rate * up * order_value - costs[ch]
        tu = oracle_uplift(truth, cutoff, ch, config.window_days)
        truth_uplift[ch] = tu
        true_value = tu["uplift_value"].reindex(scores["customer_id"]).fillna(0.0).to_numpy()
        scores[f"true_profit_{ch}"] = config.margin_rate * true_value - costs[ch]
    if config.feature_oracle:
        add_feature_oracle(scores, channels, model.feature_names_, config.seed)
    return Scenario(config, cutoff, channels, costs, scores, truth_uplift)


def simulate(data_dir: str | Path, config: SimulationConfig, progress: bool = True) -> Simulation:
    """Score at the cutoff, run the strategies at ``config.budget`` and evaluate them on the truth."""
    scenario = prepare_scenario(data_dir, config, progress)
    table = scenario.compare(config.budget)
    return Simulation(config, scenario.cutoff, scenario.channels, table, scenario.scores)


def add_feature_oracle(
    scores: pd.DataFrame, channels: Sequence[str], features: Sequence[str], seed: int, folds: int = 5
) -> None:
    """Add ``feature_oracle_{channel}``: the true profit as well as these features can predict it.

    A LightGBM regression of the *true* profit on the observable features, cross-fitted: each
    customer is scored by a model fitted on the other ``folds − 1`` folds (an in-sample fit would
    memorise the latent state of the very customers it scores). It is a reference, not a strategy —
    a model trained on noise-free labels: the gap between it and the oracle is what no model on these
    features can recover (latent persona, persuasion strength, alive state), the gap between
    ``uplift`` and it is the cost of learning from finite, noisy campaigns.
    """
    import lightgbm as lgb

    (X,) = encode_features(scores, features)
    fold = (hash_uniform(scores["customer_id"], "siyu-feature-oracle") * folds).astype(int)
    for ch in channels:
        y = scores[f"true_profit_{ch}"].to_numpy(float)
        pred = np.zeros(len(y))
        for k in range(folds):
            model = lgb.LGBMRegressor(
                n_estimators=300, learning_rate=0.05, num_leaves=31, min_child_samples=50,
                random_state=seed + k, n_jobs=1, deterministic=True, force_row_wise=True, verbose=-1,
            )  # fmt: skip
            model.fit(X[fold != k], y[fold != k])
            pred[fold == k] = model.predict(X[fold == k])
        scores[f"feature_oracle_{ch}"] = pred


def format_table(table: pd.DataFrame) -> str:
    """The strategy table as aligned text."""
    fmt = table.copy()
    for col in ("spend", "incremental_revenue", "incremental_profit"):
        fmt[col] = fmt[col].map(lambda v: f"¥{v:,.0f}")
    fmt["incremental_conversions"] = fmt["incremental_conversions"].map(lambda v: f"{v:,.1f}")
    fmt["share_of_oracle"] = fmt["share_of_oracle"].map(lambda v: f"{v:.1%}")
    return fmt.to_string(index=False)


def summary_line(sim: Simulation) -> str:
    """The last line of ``siyu experiment simulate``: one JSON object."""
    return json.dumps(sim.summary_json(), ensure_ascii=False)
