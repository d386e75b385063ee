"""Compiled row loop of the BG/NBD objective (:class:`training.clv._BGNBDObjective`; numba).

One pass over the (collapsed) rows, split over the cores, gives each row's weighted log-likelihood and
its four partial derivatives; numpy's version of the same expressions walks a dozen row-sized
temporaries per evaluation, and BFGS evaluates it about a hundred times when a fit does not converge.
Terms in x only (gamma functions, b + max(x, 1) − 1) come in precomputed per distinct x. The rows are
summed by numpy afterwards, so the fitted parameters do not depend on the number of threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, parallel=True)
def bgnbd_terms(
    r: float,
    alpha: float,
    a: float,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    w: np.ndarray,
    ix: np.ndarray,
    g: np.ndarray,
    d_r: np.ndarray,
    d_a: np.ndarray,
    d_b: np.ndarray,
    b_x: np.ndarray,
) -> np.ndarray:
    """Per row (columns): w·ll, w·∂ll/∂r, w·∂ll/∂α, w·∂ll/∂a, w·∂ll/∂b (FHL 2005 eq. 6, section 7).

    ``g, d_r, d_a, d_b`` are the x-only terms per distinct x, ``b_x`` = b + max(x, 1) − 1 per distinct x,
    and ``ix`` maps each row to its distinct x.
    """
    log_alpha, log_a = math.log(alpha), math.log(a)
    out = np.empty((5, x.shape[0]))
    for i in numba.prange(x.shape[0]):
        k = ix[i]
        xi = x[i]
        log_aT = math.log(alpha + T[i])
        a3 = -(r + xi) * log_aT
        if xi > 0:
            log_at = math.log(alpha + t_x[i])
            a4 = log_a - math.log(b_x[k]) - (r + xi) * log_at
            top = max(a3, a4)
            e3 = math.exp(a3 - top)
            e4 = math.exp(a4 - top)
        else:
            log_at = 0.0
            top, e3, e4 = a3, 1.0, 0.0
        total = e3 + e4
        w3, w4 = e3 / total, e4 / total
        wi = w[i]
        out[0, i] = wi * (g[k] + r * log_alpha + top + math.log(total))
        out[1, i] = wi * (d_r[k] + log_alpha - w3 * log_aT - w4 * log_at)
        out[2, i] = wi * (r / alpha - (r + xi) * (w3 / (alpha + T[i]) + w4 / (alpha + t_x[i])))
        out[3, i] = wi * (d_a[k] + w4 / a)
        out[4, i] = wi * (d_b[k] - w4 / b_x[k])
    return out
