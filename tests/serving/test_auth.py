"""Bearer-token middleware and request guard on a bare ASGI app (no models needed)."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.auth import AuthSettings, BearerAuthMiddleware, bearer_token
from serving.guard import RequestGuardMiddleware
from serving.schemas import MAX_BODY_BYTES

TOKEN = "s3cret-token"


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


def _client(settings: AuthSettings) -> TestClient:
    inner = Starlette(
        routes=[Route("/score", _echo, methods=["POST"]), Route("/readyz", _echo), Route("/metrics", _echo)]
    )
    app = BearerAuthMiddleware(RequestGuardMiddleware(inner), settings=settings)
    return TestClient(app)


@pytest.fixture
def client() -> TestClient:
    return _client(AuthSettings(token=TOKEN, disabled=False))


def test_the_right_token_passes_and_the_body_arrives_intact(client):
    body = json.dumps({"customer_ids": ["a", "b"]})
    r = client.post(
        "/score",
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    assert r.status_code == 200 and r.json() == {"bytes": len(body)}
    r = client.post("/score", content=body, headers={"authorization": f"bearer {TOKEN}"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "headers, error",
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong"}, "invalid bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "missing bearer token"),
        ({"Authorization": "Bearer "}, "missing bearer token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid bearer token"),
    ],
)
def test_missing_or_wrong_token_is_401_before_the_body_is_read(client, headers, error):
    r = client.post("/score", json={"customer_ids": ["a"]}, headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": error, "errors": []}
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_probes_and_metrics_stay_open(client):
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_without_a_configured_token_everything_is_refused(caplog):
    with caplog.at_level(logging.ERROR, logger="siyu.serving.auth"):
        c = _client(AuthSettings(token=None, disabled=False))
        r = c.post("/score", json={"customer_ids": ["a"]}, headers={"Authorization": "Bearer anything"})
    assert r.status_code == 401
    assert "SIYU_API_TOKEN is not set" in caplog.text


def test_disabling_auth_is_explicit_and_loud(caplog):
    with caplog.at_level(logging.WARNING, logger="siyu.serving.auth"):
        c = _client(AuthSettings(token=None, disabled=True))
        r = c.post("/score", json={"customer_ids": ["a"]})
    assert r.status_code == 200
    assert "AUTHENTICATION IS DISABLED" in caplog.text


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SIYU_API_TOKEN", "abc")
    monkeypatch.delenv("SIYU_AUTH_DISABLED", raising=False)
    assert AuthSettings.from_env() == AuthSettings(token="abc", disabled=False)
    monkeypatch.setenv("SIYU_AUTH_DISABLED", "1")
    monkeypatch.delenv("SIYU_API_TOKEN")
    assert AuthSettings.from_env() == AuthSettings(token=None, disabled=True)
    assert bearer_token([(b"Authorization", b"Bearer  t0k ")]) == "t0k"


def test_guard_limits_body_size_and_list_lengths(client):
    auth = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    r = client.post("/score", content=b" " * (MAX_BODY_BYTES + 1), headers=auth)
    assert r.status_code == 413

    def chunks():  # no Content-Length: the guard counts while reading
        for _ in range(3):
            yield b" " * (MAX_BODY_BYTES // 2)

    r = client.post("/score", content=chunks(), headers=auth)
    assert r.status_code == 413
    r = client.post("/score", json={"customer_ids": [str(i) for i in range(1001)]}, headers=auth)
    assert r.status_code == 413 and r.json()["errors"][0]["field"] == "customer_ids"
    r = client.post("/score", content="{", headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "malformed JSON"
    r = client.post("/score", content="{}", headers={**auth, "content-type": "text/plain"})
    assert r.status_code == 415
