"""The siyu scoring service: BentoML 1.4, the champion models and the latest feature snapshot.

    siyu serve --data DIR --port 3000
    SIYU_DATA_DIR=DIR bentoml serve serving.service:SiyuService --port 3000

Settings come from the environment (:class:`ServiceSettings`): ``SIYU_DATA_DIR`` (the data directory
whose newest ``snapshots/*.parquet`` is served), ``MLFLOW_TRACKING_URI`` (the registry), and optionally
``SIYU_MODEL_ALIAS`` (default ``champion``) and ``SIYU_POLICY`` (a policy YAML; default the packaged one).
Authentication: :mod:`serving.auth` (``SIYU_API_TOKEN``); request validation: :mod:`serving.guard`.

At start a background thread loads the three models by alias (artifact checksums verified), fits the
classifiers' BTYD features on the snapshot and encodes every snapshot row once; ``/readyz`` answers 503
until that is done and the API answers 503 meanwhile. Then

* ``POST /score`` — ``{"customer_ids": [...]}`` or ``{"rows": [...]}`` (+ ``"explain": true`` for the
  top-3 SHAP reasons, which cost far more than the scores) → scores per customer, in request order;
  an unknown id is a ``not_found`` item;
* ``POST /tier`` — the same plus ``"history": [touches]`` and optional ``"as_of"`` → the policy's action
  per customer (:func:`serving.tiering.plan_actions`);
* BentoML's ``/livez``, ``/readyz`` and ``/metrics``.

Every response names the cutoff and the model versions. Scores are computed by the same
:class:`serving.scoring.Scorer` as the nightly batch, so they are the batch job's values exactly.
Nothing about a customer is logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import bentoml
import numpy as np
import pandas as pd
from starlette.responses import JSONResponse, Response

from serving.auth import BearerAuthMiddleware
from serving.batch import POLICY_EXTRAS, decide, empty_history
from serving.guard import RequestGuardMiddleware
from serving.schemas import (
    ActionItem,
    ModelVersions,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    TierRequest,
    TierResponse,
    feature_columns,
)
from serving.scoring import EncodedRows, Scorer, ScoringConfig, load_champions

logger = logging.getLogger("siyu.serving.service")

DATA_ENV, ALIAS_ENV, POLICY_ENV = "SIYU_DATA_DIR", "SIYU_MODEL_ALIAS", "SIYU_POLICY"
TREES_ENV = "SIYU_TREES"
#: /score requests by id with reasons for at most this many ids are answered on the event loop.
INLINE_MAX_CUSTOMERS = 8
_SCORE_FIELDS = tuple(f for f in ScoreItem.model_fields if f not in ("customer_id", "status", "reasons"))


@dataclass(frozen=True)
class ServiceSettings:
    """Where the service finds its data, models and policy."""

    data_dir: Path
    alias: str = "champion"
    policy_path: Path | None = None
    #: native: the boosters compiled at start (training.trees; same values, faster); lightgbm: LightGBM's.
    trees: Literal["native", "lightgbm"] = "native"

    @classmethod
    def from_env(cls) -> ServiceSettings:
        """Read ``SIYU_DATA_DIR`` (required), ``SIYU_MODEL_ALIAS``, ``SIYU_POLICY`` and ``SIYU_TREES``."""
        data = os.environ.get(DATA_ENV)
        if not data:
            raise ValueError(f"{DATA_ENV} is not set: the service needs a data directory with snapshots/")
        policy = os.environ.get(POLICY_ENV)
        trees = os.environ.get(TREES_ENV) or "native"
        if trees not in ("native", "lightgbm"):
            raise ValueError(f"{TREES_ENV} must be native or lightgbm, not {trees!r}")
        alias = os.environ.get(ALIAS_ENV) or "champion"
        return cls(Path(data), alias, Path(policy) if policy else None, trees)  # type: ignore[arg-type]


@dataclass
class ServingState:
    """Everything loaded once at start: the scorer, the encoded snapshot and its id index, its scores,
    the policy.

    The snapshot's scores are computed once, when the service starts: they are a pure function of the
    snapshot row and the loaded models (:meth:`Scorer.score_encoded` is row-independent), both fixed
    until the next start, so a request by id reads its rows' scores instead of recomputing the same
    bits. Inline rows are scored live, and SHAP reasons (opt-in) are computed per request.
    """

    scorer: Scorer
    encoded: EncodedRows
    positions: dict[str, int]
    extras: pd.DataFrame  # snapshot columns the policy may need (e.g. wecom_added), one row per customer
    policy: Any
    cutoff: dt.date
    scores: dict[str, np.ndarray]  # every snapshot row's scores, without reasons
    items: EncodedItems | None = None  # those scores as /score result items in JSON, built by load()

    def scores_of(self, rows: np.ndarray, explain: bool) -> dict[str, np.ndarray]:
        """Scores of snapshot rows (positions), equal to scoring them now; reasons computed if asked."""
        out = {k: v[rows] for k, v in self.scores.items()}
        if explain:
            self.scorer.add_reasons(self.encoded.take(rows), out)
        return out

    @classmethod
    def load(cls, settings: ServiceSettings) -> ServingState:
        """Load models by alias (checksums verified), the latest snapshot and the policy."""
        from features.snapshot import latest_snapshot
        from serving.tiering import load_policy

        t0 = time.perf_counter()
        models = load_champions(settings.alias)
        cutoff, snapshot = latest_snapshot(settings.data_dir)
        scorer = Scorer.fit(models, snapshot, cutoff, ScoringConfig(lgbm_threads=1, trees=settings.trees))
        scorer.prepare()  # before /readyz says yes: no request pays for a compilation
        uncovered = sorted(set(scorer.required_columns()) - set(feature_columns()))
        if uncovered:
            raise ValueError(f"the models need columns the request schema lacks: {uncovered}")
        encoded = scorer.encode(snapshot)
        positions = {cid: i for i, cid in enumerate(encoded.customer_id)}
        extras = snapshot[["customer_id", *[c for c in POLICY_EXTRAS if c in snapshot.columns]]]
        state = cls(
            scorer,
            encoded,
            positions,
            extras.reset_index(drop=True),
            load_policy(settings.policy_path),
            cutoff,
            scorer.score_encoded(encoded, explain=False),
        )
        state.items = EncodedItems.build(state)
        logger.info(
            "siyu service ready: %d customers at cutoff %s, %s, in %.1f s",
            len(positions),
            cutoff,
            ", ".join(f"{r.name} v{r.version}" for r in models.stamps().values()),
            time.perf_counter() - t0,
        )
        return state

    def versions(self) -> ModelVersions:
        """The model versions behind every response."""
        return ModelVersions(**self.scorer.versions())


# ------------------------------------------------------------------------------------- request logic


def _scored(
    state: ServingState, req: ScoreRequest, explain: bool, with_extras: bool = False
) -> tuple[list[str], dict[str, np.ndarray], np.ndarray, pd.DataFrame]:
    """(requested ids, score columns of the found rows, positions of found ids in the request, extras)."""
    if req.customer_ids is not None:
        ids = list(req.customer_ids)
        pos = [state.positions.get(cid, -1) for cid in ids]
        found = np.array([i for i, p in enumerate(pos) if p >= 0], dtype=np.int64)
        rows = np.array([p for p in pos if p >= 0], dtype=np.int64)
        extras = state.extras.iloc[rows] if with_extras else state.extras.iloc[:0]
        return ids, state.scores_of(rows, explain), found, extras.reset_index(drop=True)
    records = [r.model_dump() for r in req.rows]  # type: ignore[union-attr]
    ids = [r["customer_id"] for r in records]
    found = np.arange(len(ids), dtype=np.int64)
    enc = state.scorer.encode_records(records)
    columns = list(state.extras.columns)
    extras = pd.DataFrame.from_records(records, columns=columns) if with_extras else state.extras.iloc[:0]
    return ids, state.scorer.score_encoded(enc, explain=explain), found, extras


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def _plain(values: np.ndarray) -> list[Any]:
    """A column as Python values with NaN (and any non-finite number) as None, JSON's null here."""
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values.tolist()]


def score_payload(state: ServingState, req: ScoreRequest) -> dict[str, Any]:
    """Answer a /score request as JSON-ready data shaped exactly as :class:`ScoreResponse`.

    The values come from the scorer, not from the client, so the response is built as plain lists and
    dicts and encoded once (:func:`score_body`) instead of through a pydantic object per customer,
    which cost more than the scores themselves at 100 customers a request. Tests validate it against
    the schema.
    """
    ids, cols, found, _ = _scored(state, req, req.explain)
    return {**_response_head(state), "results": result_items(state, ids, cols, found)}


def _response_head(state: ServingState) -> dict[str, Any]:
    return {"cutoff": state.cutoff.isoformat(), "model_versions": state.versions().model_dump()}


def result_items(
    state: ServingState, ids: list[str], cols: dict[str, np.ndarray], found: np.ndarray
) -> list[dict[str, Any]]:
    """One /score result item per requested id: its scores where found (``cols`` row j is the id at
    ``found[j]``), else ``not_found``."""
    k = state.scorer.config.top_k_reasons
    plain = {f: _plain(cols[f]) for f in _SCORE_FIELDS}
    names = [_plain(cols[f"shap_reason_{r}"]) for r in range(1, k + 1)]
    shaps = [_plain(cols[f"shap_reason_{r}_value"]) for r in range(1, k + 1)]
    results = [_not_found_item(cid) for cid in ids]
    for j, i in enumerate(found.tolist()):
        item: dict[str, Any] = {"customer_id": ids[i], "status": "ok"}
        for f in _SCORE_FIELDS:
            item[f] = plain[f][j]
        item["reasons"] = [
            {"feature": n[j], "shap": v[j]} for n, v in zip(names, shaps, strict=True) if n[j] is not None
        ]
        results[i] = item
    return results


def _not_found_item(cid: str) -> dict[str, Any]:
    return {"customer_id": cid, "status": "not_found", **dict.fromkeys(_SCORE_FIELDS), "reasons": []}


def _dumps(value: Any) -> bytes:
    """JSON as the service writes it: compact, UTF-8, no NaN (non-finite values are null already)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class EncodedItems:
    """Every snapshot row's /score result item (its scores, no reasons) encoded as JSON once, at start.

    A request by id then joins the bytes of its rows: the scores are fixed until the next start, and
    building and encoding an item per customer was most of a batch request's time in the service.
    The bytes equal :func:`_dumps` of the items :func:`result_items` builds (tested). They take about
    450 bytes a customer (some 450 MB for a million), in one buffer rather than a Python object each.
    """

    head: bytes  # the response up to the results list: cutoff and model versions
    blob: bytes  # every row's item, back to back
    offsets: np.ndarray  # row i is blob[offsets[i]:offsets[i + 1]]

    #: Rows encoded at a time when building (bounds the memory of the intermediate dicts).
    BLOCK_ROWS = 50_000

    @classmethod
    def build(cls, state: ServingState) -> EncodedItems:
        """Encode the items of every row of ``state``'s snapshot."""
        ids = list(state.encoded.customer_id)
        parts: list[bytes] = []
        for start in range(0, len(ids), cls.BLOCK_ROWS):
            rows = np.arange(start, min(start + cls.BLOCK_ROWS, len(ids)), dtype=np.int64)
            cols = state.scores_of(rows, explain=False)
            block = result_items(state, ids[start : start + len(rows)], cols, np.arange(len(rows)))
            parts.extend(_dumps(item) for item in block)
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        head = _dumps(_response_head(state))[:-1] + b',"results":['
        return cls(head, b"".join(parts), offsets)

    def body(self, state: ServingState, ids: list[str]) -> bytes:
        """The /score response body for ``ids`` (snapshot rows by id, ``not_found`` items for others)."""
        view, offsets = memoryview(self.blob), self.offsets
        chunks: list[bytes | memoryview] = []
        for cid in ids:
            i = state.positions.get(cid, -1)
            chunks.append(view[offsets[i] : offsets[i + 1]] if i >= 0 else _dumps(_not_found_item(cid)))
        return b"".join((self.head, b",".join(chunks), b"]}"))


def score_body(state: ServingState, req: ScoreRequest) -> bytes:
    """The /score response body: joined from :class:`EncodedItems` for ids without reasons, else built."""
    if req.customer_ids is not None and not req.explain and state.items is not None:
        return state.items.body(state, list(req.customer_ids))
    return _dumps(score_payload(state, req))


def json_response(body: bytes) -> Response:
    """A JSON body already encoded (:func:`score_body`)."""
    return Response(body, media_type="application/json")


def _history_frame(req: TierRequest) -> pd.DataFrame:
    if not req.history:
        return empty_history()
    frame = pd.DataFrame(
        [{"customer_id": t.customer_id, "ts": t.ts, "channel": t.channel, "arm": t.arm} for t in req.history]
    )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def tier_request(state: ServingState, req: TierRequest) -> TierResponse:
    """Answer a /tier request: score the customers, then apply the policy to them and their history."""
    ids, cols, found, extras = _scored(state, req, explain=False, with_extras=True)
    as_of = req.as_of or state.cutoff
    items: list[ActionItem | None] = [None] * len(ids)
    if len(found):
        scores = pd.DataFrame(cols, columns=state.scorer.columns())
        plan = decide(scores, extras, _history_frame(req), state.policy, as_of)
        for j, row in enumerate(plan.to_dict("records")):
            items[found[j]] = ActionItem(
                customer_id=row["customer_id"],
                status="ok",
                tier=row["tier"],
                action=row["action"],
                channel=row["channel"],
                expected_value=_number(row["expected_value"]),
                cost=_number(row["cost"]),
                reason=row["reason"],
            )
    results = [it or ActionItem(customer_id=ids[i], status="not_found") for i, it in enumerate(items)]
    return TierResponse(cutoff=state.cutoff, as_of=as_of, model_versions=state.versions(), results=results)


# ------------------------------------------------------------------------------------- the service


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason, "errors": []}, status_code=503)


@bentoml.service(
    name="siyu",
    workers=1,
    traffic={"timeout": 60, "max_concurrency": 256},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
)
class SiyuService:
    """Scores and outreach actions over HTTP (module docstring)."""

    def __init__(self) -> None:
        self._state: ServingState | None = None
        self._error: str | None = None
        self._settings = ServiceSettings.from_env()
        threading.Thread(target=self._load, name="siyu-model-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            self._state = ServingState.load(self._settings)
        except Exception as err:  # noqa: BLE001 - reported through /readyz and the log, never to clients
            self._error = f"{type(err).__name__}: {err}"
            logger.error("siyu service failed to load its models or snapshot: %s", self._error)

    def __is_ready__(self) -> bool:
        """Ready once every model is loaded (checksums verified) and the snapshot encoded."""
        return self._state is not None

    def _ready_state(self) -> ServingState | JSONResponse:
        if self._state is not None:
            return self._state
        return _not_ready("the service failed to load its models" if self._error else "models are loading")

    @bentoml.api(route="/score", input_spec=ScoreRequest)
    async def score(
        self, customer_ids: list[str] | None = None, rows: list[Any] | None = None, explain: bool = False
    ) -> ScoreResponse:
        """Scores for customers of the latest snapshot (by id) or for inline feature rows."""
        state = self._ready_state()
        if isinstance(state, JSONResponse):
            return state  # type: ignore[return-value]
        req = ScoreRequest.model_construct(customer_ids=customer_ids, rows=rows, explain=explain)
        n = len(customer_ids or rows or [])
        if customer_ids is not None and (not explain or n <= INLINE_MAX_CUSTOMERS):
            # By id the items were encoded at start (a thousand ids join in well under a millisecond),
            # and a few customers' reasons are quick: answer on the event loop, sparing the hop to a
            # worker thread that would cost more than the work itself.
            return json_response(score_body(state, req))  # type: ignore[return-value]
        return json_response(await anyio.to_thread.run_sync(score_body, state, req))  # type: ignore[return-value]

    @bentoml.api(route="/tier", input_spec=TierRequest)
    async def tier(
        self,
        customer_ids: list[str] | None = None,
        rows: list[Any] | None = None,
        explain: bool = False,
        history: list[Any] | None = None,
        as_of: dt.date | None = None,
    ) -> TierResponse:
        """The policy's action per customer given their contact history."""
        state = self._ready_state()
        if isinstance(state, JSONResponse):
            return state  # type: ignore[return-value]
        req = TierRequest.model_construct(
            customer_ids=customer_ids, rows=rows, explain=explain, history=history or [], as_of=as_of
        )
        return await anyio.to_thread.run_sync(tier_request, state, req)


SiyuService.add_asgi_middleware(BearerAuthMiddleware)
SiyuService.add_asgi_middleware(RequestGuardMiddleware)
