"""Identity fragments: each person seen under several source ids, linked by keyed-hash keys.

A person has a fragment on every source they use (acquisition channel, channels with a meaningful
share of their orders, WeCom once added). Fragments carry link keys with source-specific odds —
``phone_hash`` (Tmall/JD/Douyin only when the shopper bound a membership, always for app logins),
``unionid`` (WeChat mini-program and WeCom always, app sometimes) and ``member_id`` (members) — so
links are often missing, yet each person's fragments stay connected: a fragment that shares no key
with the person's other fragments gets the phone hash (the usual way brands bind accounts).

Traps for OneID (recorded in the truth's ``shared_key`` column): about 1% of offline-store fragments
carry the store's front-desk phone instead of the shopper's, and ~0.4% of WeChat fragments carry a
placeholder unionid from a broken integration, shared by strangers.

Personal identifiers are synthetic and leave this module only as HMAC-SHA256 hashes
(:func:`features.pii.hash_identifier`). The key is ``SIYU_PII_KEY`` if set, else a documented demo
key ``siyu-synthetic-demo-<seed>`` — so the same seed and environment give the same bytes.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from features.pii import PII_KEY_ENV, hash_identifier
from features.schema import IDENTITY_SOURCES, ORDER_CHANNELS
from features.synthetic.population import TIER_STORES, Persons

#: source → (P(phone), P(unionid), P(member_id | member)); unionid only for WeChat-based sources.
_KEY_ODDS: dict[str, tuple[float, float, float]] = {
    "tmall": (0.45, 0.0, 0.8),
    "jd": (0.5, 0.0, 0.6),
    "douyin": (0.35, 0.0, 0.4),
    "miniprogram": (0.75, 1.0, 0.9),
    "wecom": (0.25, 1.0, 0.3),
    "offline_store": (0.95, 0.0, 0.8),
    "app": (1.0, 0.5, 0.9),
}
#: Sources whose user ids are personal identifiers (nick, openid, external user id): stored hashed.
_HASHED_SOURCES = frozenset({"tmall", "jd", "douyin", "miniprogram", "wecom"})
FRONT_DESK_RATE, PLACEHOLDER_RATE = 0.01, 0.004
_USE_THRESHOLD = 0.07


def demo_pii_key(seed: int) -> bytes:
    """The HMAC key used when ``SIYU_PII_KEY`` is unset (synthetic data only)."""
    return f"siyu-synthetic-demo-{seed}".encode()


def synth_pii_key(seed: int) -> bytes:
    env = os.environ.get(PII_KEY_ENV)
    return env.encode() if env else demo_pii_key(seed)


def _hash_all(values: np.ndarray, key: bytes) -> np.ndarray:
    return np.array([hash_identifier(v, key) for v in values.tolist()], dtype=object)


def build_identities(
    persons: Persons, ids: np.ndarray, seed: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The identities table and the identity truth (source, source_user_id → person_id)."""
    n = persons.n
    key = synth_pii_key(seed)
    prefs = np.diff(np.concatenate([np.zeros((n, 1)), persons.chan_cum], axis=1), axis=1)
    member_no = rng.permutation(n) + 1
    app_no = rng.permutation(n) + 1
    phones = 13_000_000_000 + rng.choice(7_000_000_000, n, replace=False)  # distinct 13x–19x mobiles

    frags = []
    for src in IDENTITY_SOURCES:
        c = ORDER_CHANNELS.index(src)
        uses = (persons.acq_channel == c) | (prefs[:, c] > _USE_THRESHOLD)
        if src == "wecom":  # adding the brand's WeCom creates the fragment (an external user id)
            uses = ~np.isnan(persons.wecom_t)
        pid = np.flatnonzero(uses)
        p_phone, p_union, p_member = _KEY_ODDS[src]
        frags.append(pd.DataFrame({
            "pid": pid, "source": src,
            "phone": rng.random(pid.size) < p_phone,
            "union": rng.random(pid.size) < p_union,
            "member": (persons.member[pid] > 0) & (rng.random(pid.size) < p_member),
        }))
    f = pd.concat(frags, ignore_index=True)
    wechat = f["source"].isin(["miniprogram", "wecom"]).to_numpy()
    placeholder = wechat & (rng.random(len(f)) < PLACEHOLDER_RATE)
    f["phone"] |= placeholder  # a broken unionid; the shopper still bound a phone

    # Connectivity: a fragment without the phone must share a real unionid / member id with a phone one.
    real_union = f["union"] & ~placeholder
    bridge_u = (f["phone"] & real_union).groupby(f["pid"]).transform("any")
    bridge_m = (f["phone"] & f["member"]).groupby(f["pid"]).transform("any")
    n_frag = f.groupby("pid")["pid"].transform("size")
    linked = f["phone"] | (real_union & bridge_u) | (f["member"] & bridge_m)
    f["phone"] |= ~linked & (n_frag > 1)

    front_desk = (f["source"] == "offline_store").to_numpy() & f["phone"].to_numpy() & (
        rng.random(len(f)) < FRONT_DESK_RATE)

    pid = f["pid"].to_numpy()
    src = f["source"].to_numpy()
    raw_uid = np.char.add(np.char.add(src.astype(str), ":"), pid.astype(str))
    hashed_src = np.isin(src, list(_HASHED_SOURCES))
    uid = np.empty(len(f), dtype=object)
    uid[hashed_src] = _hash_all(raw_uid[hashed_src], key)
    uid[src == "app"] = [f"APP{i:08d}" for i in app_no[pid[src == "app"]]]
    uid[src == "offline_store"] = [f"CARD{i:08d}" for i in member_no[pid[src == "offline_store"]]]

    person_phone = _hash_all(phones.astype(str), key)
    n_stores = int(TIER_STORES.sum())
    desk = _hash_all(np.array([f"front-desk-S{i:03d}" for i in range(1, n_stores + 1)]), key)
    phone_hash = np.where(f["phone"].to_numpy(), person_phone[pid], None)
    phone_hash[front_desk] = desk[persons.home_store[pid[front_desk]] - 1]
    union_raw = np.char.add("wx-union-", pid.astype(str))
    unionid = np.full(len(f), None, dtype=object)
    has_u = f["union"].to_numpy()
    unionid[has_u] = _hash_all(union_raw[has_u], key)
    unionid[placeholder] = hash_identifier("wx-union-placeholder", key)
    member_raw = np.char.add("M", np.char.zfill(member_no[pid].astype(str), 8))
    member_id = np.where(f["member"].to_numpy(), member_raw, None).astype(object)

    identities = pd.DataFrame({
        "source": src.astype(object), "source_user_id": uid, "phone_hash": phone_hash, "unionid": unionid,
        "member_id": member_id, "customer_id": ids[pid],
    })
    shared = np.where(front_desk, "front_desk_phone", np.where(placeholder, "placeholder_unionid", None))
    truth = pd.DataFrame({"source": identities["source"], "source_user_id": uid, "person_id": ids[pid],
                          "shared_key": shared.astype(object)})
    order = np.lexsort((uid.astype(str), src.astype(str)))
    return (identities.iloc[order].reset_index(drop=True), truth.iloc[order].reset_index(drop=True))
