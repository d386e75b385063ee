"""The BG/NBD purchase process of every person, vectorised over all persons at once.

Per person (Fader, Hardie & Lee 2005): the first purchase happens at acquisition; while alive, repeat
purchases arrive as a Poisson process with rate ``λ·season·diurnal``; right after each repeat purchase
the person dies with probability ``p``. So the number of repeat purchases before death is
``J ~ Geometric(p)`` on {1, 2, …}, and death happens at the J-th repeat purchase.

In operational time ``τ = Λ(t)`` the process is homogeneous. With ``K ~ Poisson(λ·W)`` events in the
remaining window ``W = Λ(end) − Λ(acq)``, the events are K sorted uniforms; only the first
``n = min(J, K)`` are ever realised, and the first n order statistics of K uniforms are
``S_k / (S_n + G)`` with ``S_k`` cumulative Exp(1) sums and ``G ~ Gamma(K + 1 − n)`` — so the cost
is O(n) per person, not O(K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic.calendar import Clock
from features.synthetic.population import Persons

KIND_FIRST, KIND_REPEAT, KIND_CAMPAIGN = 0, 1, 2


@dataclass
class Purchases:
    """Paid purchases as flat arrays sorted by (person, time)."""

    pid: np.ndarray
    t: np.ndarray
    kind: np.ndarray
    campaign: np.ndarray  # campaign number that induced the purchase, −1 for organic ones

    def sort(self) -> Purchases:
        order = np.lexsort((self.t, self.pid))
        return Purchases(self.pid[order], self.t[order], self.kind[order], self.campaign[order])

    def keys(self) -> np.ndarray:
        """Monotone search keys (person·1e5 + days) for ``np.searchsorted`` per person."""
        return self.pid * 1e5 + self.t

    def last_before(self, pid: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Time of each person's last purchase strictly before ``t`` (−inf if none)."""
        keys = self.keys()
        i = np.searchsorted(keys, pid * 1e5 + t, side="left") - 1
        ok = (i >= 0) & (self.pid[np.clip(i, 0, None)] == pid)
        return np.where(ok, self.t[np.clip(i, 0, None)], -np.inf)

    def count_between(self, pid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Number of each person's purchases with lo ≤ t < hi."""
        keys = self.keys()
        return (np.searchsorted(keys, pid * 1e5 + hi, side="left")
                - np.searchsorted(keys, pid * 1e5 + lo, side="left"))


def draw_purchases(persons: Persons, clock: Clock, rng: np.random.Generator) -> Purchases:
    """All organic paid purchases; also sets ``persons.dropout_t`` (+inf if alive at the end)."""
    n = persons.n
    tau0 = clock.cum(persons.acq_t)
    window = clock.total - tau0
    k = rng.poisson(persons.lam * window)
    j = rng.geometric(persons.p)
    m = np.minimum(j, k)  # realised repeat purchases
    dies = j <= k

    pid = np.repeat(np.arange(n), m)
    starts = np.concatenate([[0], np.cumsum(m)[:-1]])
    e = rng.exponential(1.0, pid.size)
    csum = np.cumsum(e)
    has = m > 0
    # Within-person cumulative sums: subtract the running total before each person's first element.
    base = np.zeros(n)
    base[has] = csum[starts[has]] - e[starts[has]]
    s = csum - np.repeat(base, m)
    s_n = np.zeros(n)
    s_n[has] = s[starts[has] + m[has] - 1]
    g = np.zeros(n)
    g[has] = rng.gamma((k - m + 1)[has].astype(np.float64))
    u = s / (s_n + g)[pid] if pid.size else np.zeros(0)
    t_rep = clock.inv(tau0[pid] + u * window[pid])
    t_rep = np.maximum(t_rep, persons.acq_t[pid])

    dropout = np.full(n, np.inf)
    last = starts + m - 1
    dropout[dies & has] = t_rep[last[dies & has]]
    persons.dropout_t = dropout

    all_pid = np.concatenate([np.arange(n), pid])
    all_t = np.concatenate([persons.acq_t, t_rep])
    kind = np.concatenate([np.full(n, KIND_FIRST, np.int8), np.full(pid.size, KIND_REPEAT, np.int8)])
    return Purchases(all_pid, all_t, kind, np.full(all_pid.size, -1, np.int32)).sort()
