"""Request schemas: inline rows are exactly the snapshot's columns; strict types; every error has a path."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import ValidationError

from features.snapshot import compute_snapshot
from features.synthetic import SynthConfig, generate_world
from serving.schemas import FeatureRow, ScoreRequest, TierRequest, feature_columns, field_errors


@pytest.fixture(scope="module")
def snapshot():
    world = generate_world(SynthConfig(customers=300, seed=2))
    tables = {k: v for k, v in world.tables.items() if k in ("customers", "orders", "events", "touches")}
    return compute_snapshot(tables, dt.date(2024, 9, 1))


def _rows(snapshot, n=2):
    recs = json.loads(snapshot.drop(columns=["cutoff"]).head(n).to_json(orient="records"))
    return recs


def test_a_row_has_exactly_the_snapshot_columns_in_order(snapshot):
    assert ["customer_id", "cutoff", *feature_columns()[1:]] == list(snapshot.columns)


def test_snapshot_rows_validate_as_json(snapshot):
    req = ScoreRequest.model_validate_json(json.dumps({"rows": _rows(snapshot, 5)}))
    assert len(req.rows) == 5 and req.explain is False
    assert isinstance(req.rows[0], FeatureRow)


def _errors(body: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        TierRequest.model_validate_json(json.dumps(body))
    return {e.field: e.message for e in field_errors(info.value)}


def test_every_problem_is_reported_at_once_with_its_path(snapshot):
    rows = _rows(snapshot, 3)
    rows[0]["city_tier"] = "1"
    rows[1]["n_orders"] = None if rows[1]["n_orders"] is None else "x"
    rows[2]["extra"] = 1
    del rows[2]["aov"]
    body = {
        "rows": rows,
        "history": [
            {
                "customer_id": "a",
                "ts": "2024-01-01T00:00:00",
                "channel": "sms",
                "arm": "treatment",
                "cost": -1,
            }
        ],
        "as_of": "yesterday",
        "x": 1,
    }
    errs = _errors(body)
    assert {
        "rows.0.city_tier",
        "rows.1.n_orders",
        "rows.2.extra",
        "rows.2.aov",
        "history.0.ts",
        "history.0.cost",
        "as_of",
        "x",
    } <= set(errs)


def test_numbers_are_not_coerced_and_must_be_finite(snapshot):
    row = _rows(snapshot, 1)[0]
    row["tenure_days"] = "12.0"
    assert "rows.0.tenure_days" in _errors({"rows": [row]})
    row["tenure_days"] = 12  # an integer is a valid number
    TierRequest.model_validate_json(json.dumps({"rows": [row]}))
    text = json.dumps({"rows": [row]}).replace('"tenure_days": 12', '"tenure_days": NaN')
    with pytest.raises(ValidationError, match="finite"):
        TierRequest.model_validate_json(text)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"btyd_t_x_days": 10.0, "btyd_T_days": 5.0}, "must not exceed btyd_T_days"),
        ({"btyd_x": 1.5}, "whole number"),
        ({"btyd_x": 0.0, "btyd_t_x_days": 3.0}, "must be 0 when btyd_x is 0"),
        ({"btyd_monetary": -1.0}, "btyd_monetary"),
        ({"recency_days": -2.0}, "recency_days"),
        ({"btyd_T_days": 1e9}, "btyd_T_days"),
    ],
)
def test_impossible_purchase_histories_are_refused(snapshot, edit, message):
    row = {**_rows(snapshot, 1)[0], **edit}
    errs = _errors({"rows": [row]})
    assert any(message in m for m in errs.values()), errs


def test_ids_and_rows_are_exclusive_unique_and_bounded():
    assert "<body>" in _errors({})
    assert "customer_ids" in _errors({"customer_ids": ["a", "b", "a"]})
    assert "customer_ids" in _errors({"customer_ids": []})
    assert "customer_ids" in _errors({"customer_ids": [str(i) for i in range(1001)]})
    assert "customer_ids.0" in _errors({"customer_ids": [1]})
