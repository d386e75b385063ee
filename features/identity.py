"""OneID: resolve identity fragments into one stable customer id per person.

A *fragment* is one account of a person on one source — a row ``(source, source_user_id)`` of the
``identities`` table (a Tmall nick, a Douyin openid, a WeCom external user id, an app login, a store
membership card). Fragments are linked by the keys they carry: ``phone_hash``, ``unionid`` and
``member_id``. OneID puts fragments and keys into one bipartite graph and takes its connected
components (union-find; computed with :func:`scipy.sparse.csgraph.connected_components`): one
component is one person. The ``customer_id`` column of the input is ignored — it is what OneID
writes (in a synthetic world it holds the true person, which OneID must not see).

Over-merging guard. One shared key glues strangers together, and a single bad key can chain
thousands of people into one "customer". Three defences, each reported:

1. a **block-list** (:class:`OneIDConfig`): stored key values, raw phone numbers / unionids (hashed
   with ``SIYU_PII_KEY`` like the stored ones) and regular expressions for placeholders (all zeros,
   ``null``, ``unknown``…) that are never used as links;
2. **shared within a source**: a personal phone / unionid / member id binds one account per platform,
   so a key carried by more than ``max_accounts_per_source`` fragments of one source is a shared key
   (a store's front-desk phone typed in for every walk-in, a broken integration's placeholder unionid)
   and is not used;
3. a **maximum component size**: a component with more fragments than ``max_component_size`` is split
   by dropping its highest-degree key (the key carried by most of its fragments; ties broken by key),
   again and again until every part fits.

Stable ids. Each fragment gets a keyed digest ``HMAC-SHA256(SIYU_PII_KEY, source + "\\x1f" +
source_user_id)``; a component's id is ``"U"`` + the first 20 hex digits of the *smallest* digest
among its fragments. So the id depends only on the component's own members: it is deterministic
(whatever the row order), unchanged when unrelated records arrive, and when two persons merge the
merged person keeps one of their ids. The digest is keyed so an id reveals nothing about a member
card or app account number. Passing the ``previous`` mapping additionally carries ids forward when a
person *gains* an account (which may bring a smaller digest): each new component keeps the previous id
held by most of its fragments; a previous id claimed by several components (a split) stays with the
one holding most of its fragments.

Public API: :class:`OneIDConfig`, :func:`resolve`, :class:`OneIDResult`, :class:`OneIDReport`,
:func:`pairwise_precision_recall`, :func:`score_against_truth`, :func:`load_oneid_config`,
:func:`write_oneid`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.metrics.cluster import pair_confusion_matrix

from features.io import write_table
from features.pii import hash_identifier, pii_key
from features.schema import check_table

LINK_KEYS: tuple[str, ...] = ("phone_hash", "unionid", "member_id")
HASHED_KEYS: frozenset[str] = frozenset({"phone_hash", "unionid"})
#: Placeholders that real systems write into id fields: all zeros (with an optional prefix), empty words.
DEFAULT_BLOCKED_PATTERNS: tuple[str, ...] = (
    r"^\D*0+$",
    r"^(?:null|none|nan|unknown|n/?a|-+|test|default|anonymous|guest)$",
)
REPORT_FILE = "oneid_report.json"
_SEP = "\x1f"
_REF_CHARS = 12
_LISTED = 100


class OneIDError(ValueError):
    """The identities or the OneID configuration cannot be used."""


class OneIDConfig(BaseModel):
    """Guards against over-merging, and the id format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blocked_values: dict[str, list[str]] = Field(
        default_factory=dict, description="Key kind → stored values never used as links."
    )
    blocked_raw_values: dict[str, list[str]] = Field(
        default_factory=dict,
        description="phone_hash / unionid → raw values (e.g. a front-desk phone), hashed with the PII key.",
    )
    blocked_patterns: tuple[str, ...] = Field(
        DEFAULT_BLOCKED_PATTERNS, description="Regexes (any case) on stored values of every key kind."
    )
    max_accounts_per_source: int | None = Field(
        1, ge=1, description="A key on more fragments of one source is shared; None disables the rule."
    )
    max_component_size: int = Field(50, ge=2, description="Fragments per person before splitting.")
    id_prefix: str = "U"
    id_hex_chars: int = Field(20, ge=12, le=64)

    @field_validator("blocked_values", "blocked_raw_values")
    @classmethod
    def _kinds(cls, v: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        allowed = HASHED_KEYS if info.field_name == "blocked_raw_values" else frozenset(LINK_KEYS)
        unknown = sorted(set(v) - allowed)
        if unknown:
            raise ValueError(f"unknown key kind(s) {unknown}; expected one of {sorted(allowed)}")
        return v

    @field_validator("blocked_patterns")
    @classmethod
    def _compiles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                re.compile(p)
            except re.error as err:
                raise ValueError(f"bad regular expression {p!r}: {err}") from err
        return v


def load_oneid_config(path: str | Path | None) -> OneIDConfig:
    """The config from a YAML file (defaults when ``path`` is None); OneIDError with every problem."""
    if path is None:
        return OneIDConfig()
    path = Path(path)
    try:
        return OneIDConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except FileNotFoundError as err:
        raise OneIDError(f"OneID config not found: {path}") from err
    except (yaml.YAMLError, ValidationError) as err:
        raise OneIDError(f"OneID config {path} is invalid: {err}") from err


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


class BlockedKey(BaseModel):
    kind: str
    ref: str = Field(description="First 12 hex of HMAC(key, kind:value): names the key, reveals nothing.")
    reason: str
    fragments: int
    sources: int


class Split(BaseModel):
    size_before: int
    keys_dropped: list[BlockedKey]
    sizes_after: list[int]


class OneIDReport(BaseModel):
    """What OneID merged, what it refused to merge, and why."""

    fragments: int
    persons: int
    singletons: int
    component_sizes: dict[str, int] = Field(description="Component size → number of components.")
    largest_components: list[int]
    links: dict[str, int] = Field(description="Links used per key kind (fragment carrying a usable key).")
    keys_blocked: dict[str, int] = Field(description="Distinct keys not used, per reason.")
    fragments_touched_by_blocked_keys: int
    blocked: list[BlockedKey] = Field(description=f"Up to {_LISTED} blocked keys, most fragments first.")
    components_split: int
    splits: list[Split]
    ids_carried_forward: int | None = None
    ids_new: int | None = None
    ids_retired: int | None = None
    against_truth: dict[str, float] | None = None


@dataclass(frozen=True)
class OneIDResult:
    """``identities`` with ``customer_id`` resolved (sorted by source, source_user_id) and the report."""

    identities: pd.DataFrame
    report: OneIDReport


# ---------------------------------------------------------------------------------------------
# Graph
# ---------------------------------------------------------------------------------------------


def _digest(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _fragment_digests(frags: pd.DataFrame, key: bytes) -> np.ndarray:
    names = (frags["source"].astype(str) + _SEP + frags["source_user_id"].astype(str)).tolist()
    return np.array([_digest(key, n) for n in names], dtype=object)


def _links(frags: pd.DataFrame) -> pd.DataFrame:
    """Long table of (fragment index, key kind, key value, source), one row per carried key."""
    parts = []
    for kind in LINK_KEYS:
        v = frags[kind]
        present = v.notna() & (v.astype(str).str.strip() != "")
        idx = np.flatnonzero(present.to_numpy())
        parts.append(
            pd.DataFrame(
                {
                    "frag": idx,
                    "kind": kind,
                    "value": v.to_numpy()[idx].astype(str),
                    "source": frags["source"].to_numpy()[idx],
                }
            )
        )
    links = pd.concat(parts, ignore_index=True)
    links["key"] = links["kind"] + _SEP + links["value"]
    return links


def _blocked_by_config(links: pd.DataFrame, cfg: OneIDConfig, key: bytes) -> pd.Series:
    listed: set[str] = set()
    for kind, values in cfg.blocked_values.items():
        listed |= {kind + _SEP + v for v in values}
    for kind, values in cfg.blocked_raw_values.items():  # hashed exactly as the stored values were
        listed |= {kind + _SEP + hash_identifier(v, key) for v in values}
    blocked = links["key"].isin(listed)
    for pattern in cfg.blocked_patterns:
        blocked |= links["value"].str.contains(pattern, flags=re.IGNORECASE, regex=True)
    return blocked


def _shared_within_source(links: pd.DataFrame, limit: int | None) -> pd.Series:
    if limit is None:
        return pd.Series(False, index=links.index)
    per_source = links.groupby(["key", "source"])["frag"].transform("size")
    shared_keys = links.loc[per_source > limit, "key"].unique()
    return links["key"].isin(shared_keys)


def _components(n_frags: int, frag: np.ndarray, key_code: np.ndarray, n_keys: int) -> np.ndarray:
    """Component label of each fragment in the fragment–key bipartite graph."""
    n = n_frags + n_keys
    graph = sparse.coo_matrix((np.ones(len(frag), dtype=np.int8), (frag, n_frags + key_code)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels[:n_frags]


def _canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel components 0..k-1 in order of their first fragment (deterministic)."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    _, inverse = np.unique(labels, return_inverse=True)
    return order[inverse]


def _split_component(
    members: np.ndarray, links: pd.DataFrame, max_size: int
) -> tuple[np.ndarray, list[str], list[int]]:
    """Drop the highest-degree key until every part has ≤ max_size fragments.

    Returns the part label of each member, the dropped keys and their degrees.
    """
    sub = links[links["frag"].isin(members)]
    local = pd.Series(np.arange(len(members)), index=members)
    dropped: list[str] = []
    degrees: list[int] = []
    while True:
        live = sub[~sub["key"].isin(dropped)]
        codes, uniques = pd.factorize(live["key"], sort=True)
        parts = _components(len(members), local[live["frag"]].to_numpy(), codes, len(uniques))
        sizes = np.bincount(parts)
        if sizes.max() <= max_size:
            return _canonical_labels(parts), dropped, degrees
        big = np.flatnonzero(sizes > max_size)
        in_big = np.isin(parts[local[live["frag"]].to_numpy()], big)
        degree = live.loc[in_big].groupby("key")["frag"].nunique()
        top = degree[degree == degree.max()].index.min()  # ties: smallest key, for determinism
        dropped.append(top)
        degrees.append(int(degree[top]))


def _split_oversized(
    labels: np.ndarray, live: pd.DataFrame, cfg: OneIDConfig, key: bytes
) -> tuple[np.ndarray, list[Split], set[str]]:
    """Split every component above the size limit; the new labels, the splits and the dropped keys."""
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=int)
    splits: list[Split] = []
    all_dropped: set[str] = set()
    labels = labels.copy()
    next_label = len(sizes)
    for comp in np.flatnonzero(sizes > cfg.max_component_size):
        members = np.flatnonzero(labels == comp)
        parts, dropped, degrees = _split_component(members, live, cfg.max_component_size)
        labels[members] = np.where(parts == 0, comp, next_label + parts - 1)
        next_label += int(parts.max())
        all_dropped.update(dropped)
        sources = live[live["key"].isin(dropped)].groupby("key")["source"].nunique()
        keys = [
            BlockedKey(
                kind=k.split(_SEP, 1)[0],
                ref=_ref(key, k),
                reason="component_too_large",
                fragments=d,
                sources=int(sources[k]),
            )
            for k, d in zip(dropped, degrees, strict=True)
        ]
        sizes_after = sorted(np.bincount(parts).tolist(), reverse=True)
        splits.append(Split(size_before=len(members), keys_dropped=keys, sizes_after=sizes_after))
    return (_canonical_labels(labels) if splits else labels), splits, all_dropped


# ---------------------------------------------------------------------------------------------
# Ids
# ---------------------------------------------------------------------------------------------


def _fresh_ids(labels: np.ndarray, digests: np.ndarray, cfg: OneIDConfig, taken: set[str]) -> pd.Series:
    """Per component: prefix + smallest member digest whose id is not taken (a previous id)."""
    ids = pd.Series(cfg.id_prefix + pd.Series(digests).str.slice(0, cfg.id_hex_chars).to_numpy())
    ok = ~ids.isin(taken)
    frame = pd.DataFrame({"label": labels, "id": ids, "ok": ok})
    ok_rows = frame[frame["ok"]].sort_values(["label", "id"], kind="stable")
    best = ok_rows.drop_duplicates("label").set_index("label")["id"]
    out = best.reindex(np.arange(labels.max() + 1 if len(labels) else 0))
    for label in np.flatnonzero(out.isna().to_numpy()):  # every member's id is taken: derive a new one
        seed = frame.loc[frame["label"] == label, "id"].min()
        out.iloc[label] = (
            cfg.id_prefix + hashlib.sha256(f"{seed}{_SEP}split".encode()).hexdigest()[: cfg.id_hex_chars]
        )
    return out


def _carry_forward(labels: np.ndarray, frags: pd.DataFrame, previous: pd.DataFrame) -> tuple[pd.Series, int]:
    """Previous ids kept by the new components (label → id) and how many previous ids existed."""
    prev = previous[["source", "source_user_id", "customer_id"]].dropna()
    prev_ids = frags[["source", "source_user_id"]].merge(prev, how="left", on=["source", "source_user_id"])
    claims = (
        pd.DataFrame({"label": labels, "prev": prev_ids["customer_id"].to_numpy()})
        .dropna()
        .groupby(["label", "prev"])
        .size()
        .rename("n")
        .reset_index()
    )
    claims = claims.sort_values(["n", "prev", "label"], ascending=[False, True, True], kind="stable")
    kept: dict[int, str] = {}
    used: set[str] = set()
    for label, prev_id in zip(claims["label"].tolist(), claims["prev"].tolist(), strict=True):
        if label not in kept and prev_id not in used:
            kept[label] = prev_id
            used.add(prev_id)
    return pd.Series(kept, dtype=object), prev["customer_id"].nunique()


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def pairwise_precision_recall(predicted: Iterable, truth: Iterable) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering against the truth (contingency counts, O(n)).

    Precision: share of fragment pairs put together that belong together; recall: share of pairs
    that belong together that were put together.
    """
    (_, fp), (fn, tp) = pair_confusion_matrix(np.asarray(truth), np.asarray(predicted))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return float(precision), float(recall)


def score_against_truth(resolved: pd.DataFrame, identity_truth: pd.DataFrame) -> dict[str, float]:
    """Pairwise precision / recall of resolved identities against a synthetic world's identity truth."""
    both = resolved.merge(identity_truth, on=["source", "source_user_id"], how="inner", validate="1:1")
    if len(both) != len(resolved):
        raise OneIDError(f"identity truth covers {len(both):,} of {len(resolved):,} fragments")
    precision, recall = pairwise_precision_recall(both["customer_id"], both["person_id"])
    return {
        "precision": precision,
        "recall": recall,
        "true_persons": float(both["person_id"].nunique()),
        "resolved_persons": float(both["customer_id"].nunique()),
    }


def _ref(key: bytes, k: str) -> str:
    return _digest(key, k)[:_REF_CHARS]


def _blocked_list(links: pd.DataFrame, reason: pd.Series, key: bytes) -> list[BlockedKey]:
    b = links[reason.notna()].assign(reason=reason[reason.notna()])
    if b.empty:
        return []
    g = b.groupby(["key", "kind", "reason"], sort=True).agg(
        fragments=("frag", "nunique"), sources=("source", "nunique")
    )
    g = g.reset_index().sort_values(["fragments", "key"], ascending=[False, True], kind="stable")
    return [
        BlockedKey(
            kind=r.kind, ref=_ref(key, r.key), reason=r.reason, fragments=r.fragments, sources=r.sources
        )
        for r in g.head(_LISTED).itertuples()
    ]


def resolve(
    identities: pd.DataFrame,
    config: OneIDConfig | None = None,
    *,
    key: str | bytes | None = None,
    previous: pd.DataFrame | None = None,
) -> OneIDResult:
    """Resolve every identity fragment to a OneID ``customer_id`` (see the module docstring).

    ``key`` is the HMAC key for fragment digests (default ``SIYU_PII_KEY``); ``previous`` is an
    earlier result's identities (source, source_user_id, customer_id) whose ids are carried forward.
    """
    cfg = config or OneIDConfig()
    hkey = pii_key(key)
    check_table("identities", identities)
    if previous is not None:
        missing = sorted({"source", "source_user_id", "customer_id"} - set(previous.columns))
        if missing:
            raise OneIDError(f"the previous mapping lacks column(s) {', '.join(missing)}")
    frags = identities.sort_values(["source", "source_user_id"], kind="stable").reset_index(drop=True)
    links = _links(frags)

    reason = pd.Series(None, index=links.index, dtype=object)
    reason = reason.mask(_blocked_by_config(links, cfg, hkey), "block_list")
    usable = reason.isna()
    shared = _shared_within_source(links[usable], cfg.max_accounts_per_source).reindex(
        links.index, fill_value=False
    )
    reason = reason.mask(usable & shared, "shared_within_source")

    live = links[reason.isna()]
    codes, uniques = pd.factorize(live["key"], sort=True)
    labels = _canonical_labels(_components(len(frags), live["frag"].to_numpy(), codes, len(uniques)))

    labels, splits, dropped = _split_oversized(labels, live, cfg, hkey)
    reason = reason.mask(reason.isna() & links["key"].isin(dropped), "component_too_large")

    digests = _fragment_digests(frags, hkey)
    carried, n_prev, retired = 0, None, None
    if previous is not None:
        kept, n_prev = _carry_forward(labels, frags, previous)
        fresh = _fresh_ids(labels, digests, cfg, set(previous["customer_id"].dropna()))
        ids = fresh.copy()
        ids.loc[kept.index] = kept.to_numpy()
        carried = len(kept)
        retired = n_prev - carried
    else:
        ids = _fresh_ids(labels, digests, cfg, set())
    out = frags.copy()
    out["customer_id"] = ids.to_numpy()[labels]

    sizes = np.bincount(labels)
    hist = pd.Series(sizes).value_counts().sort_index()
    report = OneIDReport(
        fragments=len(frags),
        persons=len(sizes),
        singletons=int((sizes == 1).sum()),
        component_sizes={str(k): int(v) for k, v in hist.items()},
        largest_components=sorted(sizes.tolist(), reverse=True)[:5],
        links={k: int((live["kind"] == k).sum()) for k in LINK_KEYS},
        keys_blocked={
            r: int(links.loc[reason == r, "key"].nunique())
            for r in ("block_list", "shared_within_source", "component_too_large")
        },
        fragments_touched_by_blocked_keys=int(links.loc[reason.notna(), "frag"].nunique()),
        blocked=_blocked_list(links, reason, hkey),
        components_split=len(splits),
        splits=splits,
        ids_carried_forward=carried if previous is not None else None,
        ids_new=len(sizes) - carried if previous is not None else None,
        ids_retired=retired,
    )
    return OneIDResult(out, report)


def write_oneid(result: OneIDResult, out: str | Path) -> dict[str, Path]:
    """Write ``OUT/identities.parquet`` (validated, customer_id resolved) and ``OUT/oneid_report.json``."""
    out = Path(out)
    paths = {"identities": write_table(result.identities, out, "identities")}
    tmp = out / f".{REPORT_FILE}.tmp"
    tmp.write_text(json.dumps(result.report.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    paths["report"] = tmp.replace(out / REPORT_FILE)
    return paths
