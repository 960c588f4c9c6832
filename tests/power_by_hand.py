"""Independent references for the report's statistics, written without the code under test.

power_by_quadrature: two-sided one-sample t-test power without the noncentral t distribution:
T = (Z + d sqrt(n)) / sqrt(V / nu) with V ~ chi2(nu), so P(|T| > c) is the chi-square average of two
normal tail probabilities. holm_by_hand: Holm's step-down adjustment written out.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special
from scipy import stats as sps


def power_by_quadrature(d: float, n: int, alpha: float) -> float:
    nu, shift = n - 1, d * math.sqrt(n)
    c = sps.t.ppf(1 - alpha / 2, nu)
    log_norm = (nu / 2) * math.log(2) + math.lgamma(nu / 2)

    def integrand(v: float) -> float:
        s = c * math.sqrt(v / nu)
        chi2_pdf = math.exp((nu / 2 - 1) * math.log(v) - v / 2 - log_norm) if v > 0 else (0.5 if nu == 2 else 0.0)
        return (special.ndtr(shift - s) + special.ndtr(-shift - s)) * chi2_pdf

    return integrate.quad(integrand, 0, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


def holm_by_hand(pvalues: list[float]) -> list[float]:
    """Sorted ascending, the k-th smallest (k = 1..m) times (m - k + 1), made monotone, capped at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    m, adjusted, running = len(pvalues), [0.0] * len(pvalues), 0.0
    for k, i in enumerate(order, start=1):
        running = max(running, (m - k + 1) * pvalues[i])
        adjusted[i] = min(1.0, running)
    return adjusted
