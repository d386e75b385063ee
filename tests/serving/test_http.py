"""The BentoML service driven in-process: the batch job's values over HTTP, and every bad input a 4xx.

The bad-input suite covers malformed JSON, wrong types, extra fields, empty lists, 1001 ids, a 2 MiB body,
impossible feature rows, bad history rows, and missing or wrong tokens: each answer is 400/401/413/415 with
the offending field's path, and no request of this file ever gets a 5xx or a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from experiments.assignment import global_holdout_mask
from features.io import snapshot_dir
from serving.batch import BatchConfig, run_batch
from serving.schemas import ScoreItem, ScoreResponse
from tests.serving.served_world import ServedWorld, tracking_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving")]

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCORE_FIELDS = [f for f in ScoreItem.model_fields if f not in ("customer_id", "status", "reasons")]


@contextmanager
def _start(world: ServedWorld, **env: str) -> Iterator[TestClient]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", world.store_uri)
        mp.setenv("MLFLOW_REGISTRY_URI", world.store_uri)
        mp.setenv("SIYU_DATA_DIR", str(world.data))
        mp.setenv("SIYU_API_TOKEN", TOKEN)
        mp.delenv("SIYU_AUTH_DISABLED", raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        from serving.service import SiyuService

        with TestClient(SiyuService.to_asgi(), raise_server_exceptions=False) as client:
            yield client


def _wait_ready(client: TestClient, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "service not ready in time"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def batch_table(served_world: ServedWorld, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("http") / "scores.parquet"
    with tracking_env(served_world.store_uri):
        run_batch(
            BatchConfig(served_world.data, served_world.cutoff, out), progress=False, echo=lambda _: None
        )
    return pd.read_parquet(out)


@pytest.fixture(scope="module")
def client(served_world: ServedWorld, batch_table: pd.DataFrame) -> Iterator[TestClient]:
    with _start(served_world) as c:
        _wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def snapshot(served_world: ServedWorld) -> pd.DataFrame:
    return pd.read_parquet(snapshot_dir(served_world.data) / f"{served_world.cutoff}.parquet")


def _post(client: TestClient, path: str, body: object, headers: dict[str, str] | None = None):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    r = client.post(
        path, content=data, headers={"content-type": "application/json", **AUTH, **(headers or {})}
    )
    assert r.status_code < 500, r.text
    assert "Traceback" not in r.text
    return r


def _row(snapshot: pd.DataFrame, i: int) -> dict[str, object]:
    rec = snapshot.drop(columns=["cutoff"]).iloc[i].to_dict()
    return {
        k: (None if isinstance(v, float) and v != v else v.item() if hasattr(v, "item") else v)
        for k, v in rec.items()
    }


# --------------------------------------------------------------------------------------- good requests


def test_score_by_id_returns_the_batch_values_exactly(client, batch_table):
    picks = batch_table.iloc[::97]
    ids = picks["customer_id"].tolist()
    r = _post(client, "/score", {"customer_ids": ids + ["no-such-customer"], "explain": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    # The body is built as plain JSON; it must be exactly what the published schema describes.
    assert ScoreResponse.model_validate(body).model_dump(mode="json") == body
    assert body["results"].pop() == {
        "customer_id": "no-such-customer", "status": "not_found", **dict.fromkeys(SCORE_FIELDS), "reasons": []
    }
    first = batch_table.iloc[0]
    assert body["cutoff"] == str(first["cutoff"])
    assert body["model_versions"] == {
        "churn": first["churn_model_version"],
        "repurchase_7d": first["repurchase_7d_model_version"],
        "clv": first["clv_model_version"],
    }
    for item, (_, row) in zip(body["results"], picks.iterrows(), strict=True):
        assert item["customer_id"] == row["customer_id"] and item["status"] == "ok"
        for f in SCORE_FIELDS:
            expected = row[f]
            assert item[f] == (None if pd.isna(expected) else expected), f
        # The batch explains only contacted customers; where it did, the reasons agree.
        if row["shap_reason_1"] is not None:
            assert [(x["feature"], x["shap"]) for x in item["reasons"]] == [
                (row[f"shap_reason_{i}"], row[f"shap_reason_{i}_value"])
                for i in (1, 2, 3)
                if row[f"shap_reason_{i}"] is not None
            ]


def test_reasons_are_opt_in(client, batch_table):
    inside = batch_table.loc[batch_table["p_churn"].notna(), "customer_id"].iloc[:5].tolist()
    plain = _post(client, "/score", {"customer_ids": inside}).json()["results"]
    explained = _post(client, "/score", {"customer_ids": inside, "explain": True}).json()["results"]
    assert all(i["reasons"] == [] for i in plain) and all(i["reasons"] for i in explained)
    strip = [{k: v for k, v in i.items() if k != "reasons"} for i in explained]
    assert strip == [{k: v for k, v in i.items() if k != "reasons"} for i in plain]


def test_score_without_reasons_joins_items_encoded_at_start_that_equal_the_built_ones(client, batch_table):
    # By id without reasons the body is joined from items encoded once at start; with reasons it is
    # built per request. Apart from the reasons the two must agree, for every kind of row.
    ids = batch_table["customer_id"].iloc[::41].tolist()
    ids = [*ids[:10], "nobody-1", *ids[10:], "nobody-2"]
    fast = _post(client, "/score", {"customer_ids": ids})
    body = fast.json()
    assert ScoreResponse.model_validate(body).model_dump(mode="json") == body
    assert fast.content == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    built = _post(client, "/score", {"customer_ids": ids, "explain": True}).json()
    for item in built["results"]:
        item["reasons"] = []
    assert body == built
    assert [i["customer_id"] for i in body["results"]] == ids
    assert sum(i["status"] == "not_found" for i in body["results"]) == 2
    assert len({i["lifecycle_stage"] for i in body["results"] if i["status"] == "ok"}) >= 3


def test_inline_rows_score_like_the_same_customers_by_id(client, snapshot):
    ids = snapshot["customer_id"].iloc[[3, 50, 400]].tolist()
    rows = [_row(snapshot, i) for i in (3, 50, 400)]
    by_id = _post(client, "/score", {"customer_ids": ids, "explain": True}).json()
    inline = _post(client, "/score", {"rows": rows, "explain": True}).json()
    assert inline == by_id


def test_unknown_ids_are_per_item_not_found(client, batch_table):
    known = batch_table["customer_id"].iloc[5]
    r = _post(client, "/score", {"customer_ids": ["nobody-1", known, "nobody-2"], "explain": False})
    assert r.status_code == 200
    items = r.json()["results"]
    assert [i["status"] for i in items] == ["not_found", "ok", "not_found"]
    assert items[0]["p_churn"] is None and items[1]["customer_id"] == known and items[1]["reasons"] == []
    assert _post(client, "/score", {"customer_ids": ["nobody"]}).json()["results"][0]["status"] == "not_found"


def test_tier_applies_the_policy_with_the_posted_history(client, batch_table, served_world):
    contacted = batch_table[batch_table["channel"].notna()]["customer_id"].iloc[:20].tolist()
    held = batch_table["customer_id"][global_holdout_mask(batch_table["customer_id"])].iloc[:5].tolist()
    ids = contacted + held + ["nobody"]
    yesterday = f"{served_world.cutoff.isoformat()}T09:00:00+08:00"  # the planned day itself, local time
    history = [{"customer_id": contacted[0], "ts": yesterday, "channel": "sms", "arm": "treatment"}]
    r = _post(client, "/tier", {"customer_ids": ids, "history": history})
    assert r.status_code == 200
    body = r.json()
    assert body["as_of"] == served_world.cutoff.isoformat() and set(body["model_versions"]) == {
        "churn",
        "repurchase_7d",
        "clv",
    }
    items = {i["customer_id"]: i for i in body["results"]}
    assert items["nobody"]["status"] == "not_found"
    assert items[contacted[0]]["action"] == "none" and "quiet period" in items[contacted[0]]["reason"]
    for cid in held:
        assert items[cid]["action"] == "none" and items[cid]["reason"] == "global holdout"
    for i in body["results"]:
        if i["status"] == "ok" and i["channel"] is not None:
            assert i["expected_value"] > 0 and i["cost"] > 0


def test_probes_and_metrics(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


# ------------------------------------------------------------------------------------ bad-input suite


def _ids(n: int) -> list[str]:
    return [f"C{i:07d}" for i in range(n)]


BAD_REQUESTS = [
    # (name, path, body, extra headers, status, a field path the answer must name)
    ("malformed JSON", "/score", '{"customer_ids": ["a",', {}, 400, "<body>"),
    ("truncated JSON", "/tier", "{", {}, 400, "<body>"),
    ("not UTF-8", "/score", b'{"customer_ids": ["\xff"]}', {}, 400, "<body>"),
    ("JSON array body", "/score", "[1, 2]", {}, 400, "<body>"),
    ("JSON string body", "/score", '"customer_ids"', {}, 400, "<body>"),
    ("wrong type: id number", "/score", {"customer_ids": ["a", 7]}, {}, 400, "customer_ids.1"),
    ("wrong type: ids string", "/score", {"customer_ids": "C0000001"}, {}, 400, "customer_ids"),
    ("wrong type: explain string", "/score", {"customer_ids": ["a"], "explain": "yes"}, {}, 400, "explain"),
    ("extra top-level field", "/score", {"customer_ids": ["a"], "limit": 3}, {}, 400, "limit"),
    ("extra field in a row", "/score", "ROW+extra", {}, 400, "rows.0.favourite_colour"),
    ("empty id list", "/score", {"customer_ids": []}, {}, 400, "customer_ids"),
    ("empty row list", "/score", {"rows": []}, {}, 400, "rows"),
    ("empty id", "/score", {"customer_ids": [""]}, {}, 400, "customer_ids.0"),
    ("null id", "/score", {"customer_ids": [None]}, {}, 400, "customer_ids.0"),
    ("duplicate ids", "/score", {"customer_ids": ["a", "a"]}, {}, 400, "customer_ids"),
    ("neither ids nor rows", "/score", {}, {}, 400, "<body>"),
    ("both ids and rows", "/score", "ROW+ids", {}, 400, "<body>"),
    ("1001 ids", "/score", {"customer_ids": _ids(1001)}, {}, 413, "customer_ids"),
    ("1001 ids on /tier", "/tier", {"customer_ids": _ids(1001)}, {}, 413, "customer_ids"),
    ("2 MiB body", "/score", {"customer_ids": ["x" * 100] * 21_000}, {}, 413, None),
    ("row missing a column", "/score", "ROW-n_orders", {}, 400, "rows.0.n_orders"),
    ("row float for an int", "/score", "ROW:city_tier=2.5", {}, 400, "rows.0.city_tier"),
    ("row number as string", "/score", 'ROW:total_net="12.5"', {}, 400, "rows.0.total_net"),
    ("row unknown lifecycle", "/score", 'ROW:lifecycle_stage="vip"', {}, 400, "rows.0.lifecycle_stage"),
    ("row impossible history", "/score", "ROW:btyd_t_x_days=100000.0", {}, 400, "rows.0"),
    ("row negative spend", "/score", "ROW:btyd_monetary=-5.0", {}, 400, "rows.0"),
    ("history naive timestamp", "/tier", 'TIER:ts="2024-11-30T10:00:00"', {}, 400, "history.0.ts"),
    ("history unknown channel", "/tier", 'TIER:channel="fax"', {}, 400, "history.0.channel"),
    ("history missing arm", "/tier", "TIER-arm", {}, 400, "history.0.arm"),
    ("bad as_of", "/tier", {"customer_ids": ["a"], "as_of": "2024-13-01"}, {}, 400, "as_of"),
    ("wrong content type", "/score", '{"customer_ids": ["a"]}', {"content-type": "text/plain"}, 415, None),
    ("missing token", "/score", {"customer_ids": ["a"]}, {"Authorization": ""}, 401, None),
    ("wrong token", "/score", {"customer_ids": ["a"]}, {"Authorization": "Bearer not-the-token"}, 401, None),
    ("wrong token on /tier", "/tier", {"customer_ids": ["a"]}, {"Authorization": "Token abc"}, 401, None),
]


def _materialise(body: object, snapshot: pd.DataFrame) -> object:
    """Bodies described as edits of a valid snapshot row or history row."""
    if not isinstance(body, str) or not body.startswith(("ROW", "TIER")):
        return body
    if body.startswith("TIER"):
        touch = {"customer_id": "a", "ts": "2024-11-30T10:00:00+08:00", "channel": "sms", "arm": "treatment"}
        if body.startswith("TIER:"):
            key, value = body[5:].split("=", 1)
            touch[key] = json.loads(value)
        else:
            touch.pop(body[5:])
        return {"customer_ids": ["a"], "history": [touch]}
    row = _row(snapshot, 0)
    if body == "ROW+extra":
        row["favourite_colour"] = "red"
    elif body == "ROW+ids":
        return {"rows": [row], "customer_ids": ["a"]}
    elif body.startswith("ROW-"):
        row.pop(body[4:])
    else:
        key, value = body[4:].split("=", 1)
        row[key] = json.loads(value)
    return {"rows": [row]}


@pytest.mark.parametrize(
    "name, path, body, headers, status, field", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_gets_4xx_with_the_field_path(client, snapshot, name, path, body, headers, status, field):
    r = _post(client, path, _materialise(body, snapshot), headers)
    assert r.status_code == status, (name, r.status_code, r.text[:500])
    payload = r.json()
    assert isinstance(payload["error"], str) and payload["error"]
    if field is not None:
        fields = [e["field"] for e in payload["errors"]]
        assert field in fields, (name, fields)


def test_error_bodies_never_echo_input_values(client):
    secret = "13800138000"  # looks like a phone number: must not come back
    r = _post(client, "/score", {"customer_ids": [secret, 5], "phone": secret})
    assert r.status_code == 400 and secret not in r.text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"customer_ids": json_values}),
    st.fixed_dictionaries(
        {"rows": st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=5), max_size=2)}
    ),
    st.fixed_dictionaries(
        {
            "customer_ids": st.lists(st.text(max_size=10), min_size=1, max_size=5),
            "history": json_values,
            "as_of": json_values,
        }
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/score", "/tier"]))
def test_random_json_never_gets_a_5xx(client, body, path):
    r = _post(client, path, body)
    assert r.status_code in (200, 400, 413)


# ------------------------------------------------------------------------------------- readiness


def test_503_while_loading_and_when_the_models_cannot_be_loaded(served_world, tmp_path: Path, monkeypatch):
    # A second app cannot be built in this process (Prometheus metrics are process-wide): use the service
    # class itself; the real server's readiness is exercised by the e2e test.
    from serving.service import SiyuService

    monkeypatch.setenv("SIYU_DATA_DIR", str(served_world.data))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # MLflow exports it; restored afterwards
    svc = SiyuService()
    first = asyncio.run(svc.score(customer_ids=["a"]))
    assert first.status_code == 503 and svc.__is_ready__() is False
    deadline = time.monotonic() + 120
    while json.loads(asyncio.run(svc.score(customer_ids=["a"])).body)["error"] == "models are loading":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    r = asyncio.run(svc.tier(customer_ids=["a"]))
    assert r.status_code == 503 and json.loads(r.body) == {
        "error": "the service failed to load its models",
        "errors": [],
    }
    assert svc.__is_ready__() is False
