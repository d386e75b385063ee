"""Deterministic hash assignment of customers to experiment arms, and the persistent global holdout.

Every customer gets a number ``u`` in ``[0, 1)`` from SHA-256 of ``salt + ":" + customer_id``; the
arm is where ``u`` falls on the cumulative arm weights. The arm therefore depends only on the
experiment's salt and the customer's own id: re-running an assignment, or running it again after
new customers arrived, never moves an existing customer.

A small share of all customers (default 5 %) is a *global holdout*: selected by the same hash with a
fixed salt, it is never contacted by any campaign, so the brand can always measure what the whole
outreach programme adds compared with doing nothing. Campaign assignment labels these customers
``holdout`` and never puts one in a treatment arm.

Stratified assignment (e.g. by serving tier) balances arm counts exactly within each stratum by
complete randomisation (hash order × a fixed list of arm labels). To stay stable when new
customers arrive it takes the previous assignment: existing customers keep their arm and the
newcomers fill each stratum's remaining quota.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.schema import text_lengths

GLOBAL_HOLDOUT_SALT = "siyu-global-holdout"
GLOBAL_HOLDOUT_SHARE = 0.05
#: Arm label of global-holdout customers inside a campaign assignment (matches the touches contract).
HOLDOUT_ARM = "holdout"
CONTROL_ARM = "control"
#: siyu's standard campaign design: 70 % contacted, 30 % control among non-holdout customers.
DEFAULT_WEIGHTS: dict[str, float] = {"treatment": 0.7, CONTROL_ARM: 0.3}

_TWO_64 = float(2**64)

ASSIGNMENT_LOG_COLUMNS: tuple[str, ...] = (
    "logged_at",
    "experiment_id",
    "salt",
    "weights",
    "stratify_by",
    "global_holdout_share",
    "global_holdout_salt",
    "n_customers",
    "counts",
    "assignment_sha256",
)


def _as_id_array(customer_ids: pd.Series | Sequence[str]) -> np.ndarray:
    """Customer ids as an object array of str; rejects missing or empty ids, listing all of them."""
    ids = pd.Series(customer_ids, dtype=object).reset_index(drop=True)
    lengths = text_lengths(ids)
    if lengths is not None and (lengths > 0).all():  # the common case, checked in Arrow
        return ids.to_numpy(dtype=object)
    bad = ids.isna() | (ids.astype(str).str.len() == 0)
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())[:50].tolist()
        raise ValueError(f"{int(bad.sum())} customer ids are missing or empty (rows {rows})")
    non_str = ~ids.map(lambda v: isinstance(v, str))
    if non_str.any():
        rows = np.flatnonzero(non_str.to_numpy())[:50].tolist()
        raise TypeError(f"{int(non_str.sum())} customer ids are not strings (rows {rows})")
    return ids.to_numpy(dtype=object)


def hash_uniform(customer_ids: pd.Series | Sequence[str], salt: str) -> np.ndarray:
    """Map each ``(salt, customer_id)`` to a uniform number in ``[0, 1)`` via SHA-256.

    The first 8 bytes of the digest of the UTF-8 text ``salt:customer_id``, read as an unsigned
    big-endian integer, divided by 2**64 (:func:`hash_uniform_reference` spells it out in Python; DuckDB
    hashes a million ids in a fraction of the time, to the same bits).
    """
    import duckdb
    import pyarrow as pa

    if not salt:
        raise ValueError("salt must be a non-empty string")
    ids = pa.table({"id": pa.array(_as_id_array(customer_ids), type=pa.string())})
    with duckdb.connect() as con:
        con.register("ids", ids)
        top = con.execute(
            "SELECT ('0x' || left(sha256(? || id), 16))::UBIGINT AS h FROM ids", [f"{salt}:"]
        ).fetchnumpy()["h"]
    return np.asarray(top, dtype=np.uint64).astype(np.float64) / _TWO_64


def hash_uniform_reference(customer_ids: Sequence[str], salt: str) -> np.ndarray:
    """:func:`hash_uniform` one id at a time with :mod:`hashlib` (the definition, for tests)."""
    prefix = f"{salt}:".encode()
    out = np.empty(len(customer_ids), dtype=np.float64)
    for i, cid in enumerate(customer_ids):
        digest = hashlib.sha256(prefix + cid.encode("utf-8")).digest()
        out[i] = int.from_bytes(digest[:8], "big") / _TWO_64
    return out


def global_holdout_mask(
    customer_ids: pd.Series | Sequence[str],
    share: float = GLOBAL_HOLDOUT_SHARE,
    salt: str = GLOBAL_HOLDOUT_SALT,
) -> np.ndarray:
    """Boolean mask of customers in the persistent global holdout (never contacted by any campaign).

    Membership depends only on the customer id, ``salt`` and ``share``: stable across runs and
    unchanged for existing customers when new ones arrive.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"global holdout share must be in [0, 1), got {share}")
    return hash_uniform(customer_ids, salt) < share


class ExperimentDesign(BaseModel):
    """A campaign's randomisation design: arms and their weights, salt, holdout and stratification."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_id: str = Field(min_length=1)
    salt: str = Field(default="", description="Hash salt; defaults to the experiment id.")
    weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="Arm → weight among non-holdout customers (normalised to sum 1).",
    )
    global_holdout_share: float = Field(default=GLOBAL_HOLDOUT_SHARE, ge=0.0, lt=1.0)
    global_holdout_salt: str = Field(default=GLOBAL_HOLDOUT_SALT, min_length=1)
    stratify_by: str | None = None

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, w: dict[str, float]) -> dict[str, float]:
        problems = []
        if len(w) < 2:
            problems.append(f"need at least two arms, got {list(w)}")
        if HOLDOUT_ARM in w:
            problems.append(f"arm name {HOLDOUT_ARM!r} is reserved for the global holdout")
        problems += [f"arm {k!r} has weight {v} (must be > 0)" for k, v in w.items() if not v > 0]
        problems += [f"arm name {k!r} is empty" for k in w if not k]
        if problems:
            raise ValueError("; ".join(problems))
        total = float(sum(w.values()))
        return {k: float(v) / total for k, v in w.items()}

    @model_validator(mode="after")
    def _default_salt(self) -> ExperimentDesign:
        if not self.salt:
            object.__setattr__(self, "salt", self.experiment_id)
        return self

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(self.weights)

    @property
    def treatment_arms(self) -> tuple[str, ...]:
        """Every arm that is contacted: all arms except ``control``."""
        return tuple(a for a in self.weights if a != CONTROL_ARM)


def arm_from_uniform(u: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
    """Arm label for each uniform ``u`` by the cumulative ``weights`` (in the mapping's order)."""
    names = np.array(list(weights), dtype=object)
    cum = np.cumsum(np.asarray(list(weights.values()), dtype=float))
    cum /= cum[-1]
    idx = np.searchsorted(cum, u, side="right")
    return names[np.minimum(idx, len(names) - 1)]


def _quota(n: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``n`` by ``weights`` (ties go to the earlier arm)."""
    raw = {k: n * w for k, w in weights.items()}
    base = {k: int(np.floor(v)) for k, v in raw.items()}
    left = n - sum(base.values())
    order = sorted(weights, key=lambda k: (-(raw[k] - base[k]), list(weights).index(k)))
    for k in order[:left]:
        base[k] += 1
    return base


def _fill_stratum(
    new_ids: np.ndarray, existing_counts: Mapping[str, int], design: ExperimentDesign, stratum: str
) -> np.ndarray:
    """Arms for the newcomers of one stratum so the stratum's totals match its quota."""
    n_total = len(new_ids) + sum(existing_counts.values())
    target = _quota(n_total, design.weights)
    deficit = {a: max(target[a] - existing_counts.get(a, 0), 0) for a in design.arms}
    # Existing over-quota arms make the deficits exceed the newcomers; trim from the largest deficits.
    while sum(deficit.values()) > len(new_ids):
        biggest = max(deficit, key=lambda a: deficit[a])
        deficit[biggest] -= 1
    while sum(deficit.values()) < len(new_ids):  # pragma: no cover - quotas always cover n_total
        deficit[design.arms[0]] += 1
    labels = np.concatenate([np.repeat(np.array([a], dtype=object), deficit[a]) for a in design.arms])
    order = np.argsort(hash_uniform(new_ids, f"{design.salt}|stratum={stratum}"), kind="stable")
    arms = np.empty(len(new_ids), dtype=object)
    arms[order] = labels
    return arms


def assign(
    customers: pd.DataFrame | pd.Series | Sequence[str],
    design: ExperimentDesign,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Assign every customer to an arm of ``design``.

    Returns a frame ``customer_id, arm, u, global_holdout`` (plus the stratum column when the design
    stratifies) in the input order. Global-holdout customers get arm ``holdout``. Without
    stratification the arm depends only on the id and the salt. With ``stratify_by`` the input must be
    a frame holding that column; ``previous`` (an earlier output of this function) pins the arms of
    customers already assigned.
    """
    if isinstance(customers, pd.DataFrame):
        if "customer_id" not in customers.columns:
            raise ValueError("customers frame needs a 'customer_id' column")
        frame = customers.reset_index(drop=True)
    else:
        frame = pd.DataFrame({"customer_id": pd.Series(customers, dtype=object)})
    ids = _as_id_array(frame["customer_id"])
    dup = pd.Series(ids).duplicated()
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())[:20].tolist()
        raise ValueError(f"{int(dup.sum())} duplicate customer ids, e.g. rows {rows}")

    u = hash_uniform(ids, design.salt)
    holdout = global_holdout_mask(ids, design.global_holdout_share, design.global_holdout_salt)
    out = pd.DataFrame({"customer_id": ids, "u": u, "global_holdout": holdout})

    if design.stratify_by is None:
        arms = arm_from_uniform(u, design.weights)
    else:
        col = design.stratify_by
        if col not in frame.columns:
            raise ValueError(f"design stratifies by {col!r} but the customers frame has no such column")
        if frame[col].isna().any():
            rows = np.flatnonzero(frame[col].isna().to_numpy())[:50].tolist()
            raise ValueError(f"stratum column {col!r} is missing for rows {rows}")
        out[col] = frame[col].to_numpy()
        arms = _stratified_arms(out, design, previous)
    out.insert(1, "arm", np.where(holdout, HOLDOUT_ARM, arms))
    return out


def _stratified_arms(
    out: pd.DataFrame, design: ExperimentDesign, previous: pd.DataFrame | None
) -> np.ndarray:
    col = design.stratify_by
    assert col is not None
    prev_arm = pd.Series(dtype=object)
    if previous is not None:
        prev = previous[previous["arm"] != HOLDOUT_ARM]
        unknown = sorted(set(prev["arm"]) - set(design.arms))
        if unknown:
            raise ValueError(f"previous assignment has arms {unknown} not in the design {list(design.arms)}")
        prev_arm = prev.set_index("customer_id")["arm"]
    arms = out["customer_id"].map(prev_arm).to_numpy(dtype=object)
    eligible = ~out["global_holdout"].to_numpy()
    for stratum, idx in out.groupby(col, sort=True).indices.items():
        idx = idx[eligible[idx]]
        known = idx[pd.notna(arms[idx])]
        new = idx[pd.isna(arms[idx])]
        if len(new) == 0:
            continue
        counts = pd.Series(arms[known]).value_counts().to_dict()
        arms[new] = _fill_stratum(out["customer_id"].to_numpy()[new], counts, design, str(stratum))
    # Global-holdout rows are overwritten by the caller; give them a placeholder of the right type.
    arms[~eligible] = HOLDOUT_ARM
    return arms


def arm_counts(assignment: pd.DataFrame) -> dict[str, int]:
    """Number of customers per arm (holdout included), in a stable order."""
    return {str(k): int(v) for k, v in assignment["arm"].value_counts().sort_index().items()}


def _assignment_digest(assignment: pd.DataFrame) -> str:
    rows = assignment.sort_values("customer_id")[["customer_id", "arm"]].itertuples(index=False)
    h = hashlib.sha256()
    for cid, arm in rows:
        h.update(f"{cid}\t{arm}\n".encode())
    return h.hexdigest()


def log_assignment(
    assignment: pd.DataFrame,
    design: ExperimentDesign,
    log_path: str | Path,
    logged_at: dt.datetime | None = None,
) -> dict[str, str]:
    """Append one row describing this assignment to a CSV log and return that row.

    The log records the experiment id, salt, weights, holdout settings, per-arm counts and a SHA-256
    of the sorted (customer_id, arm) pairs — enough to prove later which design produced which arms
    without storing customer ids in the log.
    """
    when = logged_at or dt.datetime.now(dt.UTC)
    row = {
        "logged_at": when.isoformat(),
        "experiment_id": design.experiment_id,
        "salt": design.salt,
        "weights": json.dumps(design.weights, sort_keys=True),
        "stratify_by": design.stratify_by or "",
        "global_holdout_share": repr(design.global_holdout_share),
        "global_holdout_salt": design.global_holdout_salt,
        "n_customers": str(len(assignment)),
        "counts": json.dumps(arm_counts(assignment), sort_keys=True),
        "assignment_sha256": _assignment_digest(assignment),
    }
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ASSIGNMENT_LOG_COLUMNS))
        if new_file:
            writer.writeheader()
        writer.writerow(row)
    return row


def read_assignment_log(log_path: str | Path) -> pd.DataFrame:
    """Read the assignment log written by :func:`log_assignment`."""
    return pd.read_csv(log_path, dtype=str, keep_default_na=False)


def design_weights_from_log(log_path: str | Path, experiment_id: str) -> dict[str, float] | None:
    """Weights of the latest logged design of ``experiment_id``, or None when it was never logged."""
    path = Path(log_path)
    if not path.exists():
        return None
    log = read_assignment_log(path)
    rows = log[log["experiment_id"] == experiment_id]
    if rows.empty:
        return None
    return {k: float(v) for k, v in json.loads(rows.iloc[-1]["weights"]).items()}
