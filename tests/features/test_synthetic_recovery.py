"""With covariates off, lifetimes' BG/NBD fitted to the generated paid orders recovers r, α, a, b."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter

from features.schema import BUSINESS_TZ
from features.synthetic import SynthConfig, generate_world


def test_bgnbd_recovers_generating_parameters() -> None:
    # 50k persons over 4 years: standard errors of a, b ≈ 2–3%, so 10% is a real check.
    cfg = SynthConfig(customers=50_000, seed=21, start=date(2021, 1, 1), end=date(2024, 12, 31),
                      covariates=False, campaigns=False, events=False)
    orders = generate_world(cfg).tables["orders"]
    paid = orders[orders["status"] == "paid"]
    # Same-day purchases merged; time in business days.
    day = (paid["ts"].dt.tz_convert(BUSINESS_TZ).dt.tz_localize(None).dt.normalize()
           - pd.Timestamp(cfg.start)).dt.days
    days = pd.DataFrame({"c": paid["customer_id"], "day": day}).drop_duplicates()
    g = days.groupby("c")["day"].agg(["min", "max", "count"])
    rfm = pd.DataFrame({"x": g["count"] - 1, "t_x": g["max"] - g["min"], "T": cfg.n_days - g["min"]})
    rows = rfm.value_counts().reset_index(name="w")
    bg = BetaGeoFitter().fit(rows["x"], rows["t_x"], rows["T"], weights=rows["w"])
    truth = {"r": cfg.r, "alpha": cfg.alpha, "a": cfg.a, "b": cfg.b}
    rel = {k: bg.params_[k] / v - 1 for k, v in truth.items()}
    assert all(abs(v) < 0.10 for v in rel.values()), rel
    assert np.isfinite(bg.summary["se(coef)"]).all()
