"""Bearer-token authentication for the scoring service, as plain ASGI middleware.

The token is read from the environment variable ``SIYU_API_TOKEN`` when the app is built; requests must
send ``Authorization: Bearer <token>``, compared in constant time (:func:`hmac.compare_digest`). A missing
or wrong token gets 401 with a ``WWW-Authenticate`` header and a JSON body, before the request body is
read. Health probes and metrics (``/livez``, ``/readyz``, ``/healthz``, ``/metrics``) stay open so that
an orchestrator can watch the service.

For local use only, ``SIYU_AUTH_DISABLED=1`` (``siyu serve --no-auth``) turns the check off, with a loud
warning in the log. Without a token and without that flag every request is refused (fail closed).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("siyu.serving.auth")

TOKEN_ENV = "SIYU_API_TOKEN"
DISABLE_ENV = "SIYU_AUTH_DISABLED"
OPEN_PATHS: frozenset[str] = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class AuthSettings:
    """Where the token comes from and whether the check is switched off."""

    token: str | None
    disabled: bool

    @classmethod
    def from_env(cls) -> AuthSettings:
        """``SIYU_API_TOKEN`` and ``SIYU_AUTH_DISABLED`` (1/true/yes) from the environment."""
        token = os.environ.get(TOKEN_ENV) or None
        disabled = os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes")
        return cls(token=token, disabled=disabled)


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if any (scheme case-insensitive)."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with a small JSON body (used by siyu's middlewares)."""
    data = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class BearerAuthMiddleware:
    """ASGI middleware: 401 unless the request carries the service's bearer token (module docstring)."""

    def __init__(self, app: ASGIApp, settings: AuthSettings | None = None):
        self.app = app
        self.settings = settings or AuthSettings.from_env()
        self._token = self.settings.token.encode("utf-8") if self.settings.token else None
        if self.settings.disabled:
            logger.warning("!" * 78)
            logger.warning(
                "!!  AUTHENTICATION IS DISABLED (%s): anyone who can reach this port can  !!", DISABLE_ENV
            )
            logger.warning("!!  score customers. Use this only on a developer machine.                  !!")
            logger.warning("!" * 78)
        elif self._token is None:
            logger.error("%s is not set: every request will be refused with 401", TOKEN_ENV)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.settings.disabled or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = bearer_token(scope.get("headers", []))
        if given is None:
            await send_json(
                send,
                401,
                {"error": "missing bearer token", "errors": []},
                [(b"www-authenticate", b'Bearer realm="siyu"')],
            )
            return
        if self._token is None or not hmac.compare_digest(given.encode("utf-8"), self._token):
            await send_json(
                send,
                401,
                {"error": "invalid bearer token", "errors": []},
                [(b"www-authenticate", b'Bearer realm="siyu", error="invalid_token"')],
            )
            return
        await self.app(scope, receive, send)
