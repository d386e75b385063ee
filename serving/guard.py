"""Request guard: every bad request to an API route is answered 4xx here, before it reaches BentoML.

For ``POST`` to a route with a request model (``/score``, ``/tier``) the guard

* answers **413** when the body exceeds 1 MiB (by ``Content-Length``, or while reading a chunked body)
  or a list field is longer than its limit (1000 customers, 20,000 history rows);
* answers **415** for a content type other than JSON;
* answers **400** for malformed JSON (BentoML 1.4 answers 500 to it on a root input) and for any
  schema violation, listing every bad field with its dotted path (``rows.0.btyd_x``);
* otherwise hands the untouched body on to the app.

Error bodies never echo input values (they may be personal data) and never carry a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from serving.auth import ASGIApp, Receive, Scope, Send, send_json
from serving.schemas import LIMITED_FIELDS, MAX_BODY_BYTES, REQUEST_MODELS, field_errors

logger = logging.getLogger("siyu.serving.guard")


class _TooLarge(Exception):
    pass


class RequestGuardMiddleware:
    """ASGI middleware validating API request bodies (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        models: Mapping[str, type[BaseModel]] | None = None,
        max_body: int = MAX_BODY_BYTES,
        limits: Mapping[str, int] | None = None,
    ):
        self.app = app
        self.models = dict(models if models is not None else REQUEST_MODELS)
        self.max_body = max_body
        self.limits = dict(limits if limits is not None else LIMITED_FIELDS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = self.models.get(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        ctype = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if ctype not in (b"application/json", b""):
            await _reject(send, 415, "the body must be JSON (Content-Type: application/json)")
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _reject(send, 413, f"request body larger than {self.max_body} bytes")
            return
        try:
            body = await self._read(receive)
        except _TooLarge:
            await _reject(send, 413, f"request body larger than {self.max_body} bytes")
            return
        problem = self._check(body, model)
        if problem is not None:
            status, message, errors = problem
            logger.info("rejected %s %s: %d %s", scope.get("method"), scope.get("path"), status, message)
            await send_json(send, status, {"error": message, "errors": errors})
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _check(self, body: bytes, model: type[BaseModel]) -> tuple[int, str, list[dict[str, str]]] | None:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            where = (
                f"line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else "bytes"
            )
            return 400, "malformed JSON", [{"field": "<body>", "message": f"not valid JSON ({where})"}]
        if not isinstance(data, dict):
            return 400, "invalid request", [{"field": "<body>", "message": "the body must be a JSON object"}]
        too_long = [
            {"field": k, "message": f"{len(data[k])} items; at most {limit} per request"}
            for k, limit in self.limits.items()
            if isinstance(data.get(k), list) and len(data[k]) > limit
        ]
        if too_long:
            return 413, "too many items", too_long
        try:
            model.model_validate_json(body)
        except ValidationError as err:
            return 400, "invalid request", [e.model_dump() for e in field_errors(err)]
        return None


async def _reject(send: Send, status: int, message: str) -> None:
    await send_json(send, status, {"error": message, "errors": []})


def _replay(body: bytes, upstream: Receive) -> Receive:
    """A ``receive`` that yields the already-read body once, then passes on the server's own messages."""
    sent = False

    async def receive() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await upstream()

    return receive
