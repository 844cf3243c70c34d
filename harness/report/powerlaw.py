"""Power-law fits for scaling studies: L(N) = a * N^(-alpha) + c, with bootstrap confidence intervals.

The fit is nonlinear least squares (scipy ``curve_fit``) on log-loss residuals, parameterized as
log a and log c so both stay positive. Confidence intervals come from a bootstrap over seeds: each
replicate draws, for every size, runs with replacement from that size's seeds, and refits; the 95%
interval is the 2.5th..97.5th percentile of the replicates that converged. With one seed per size
the bootstrap has nothing to resample and the interval is reported as unknown, not as zero width.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLawFit:
    a: float
    alpha: float
    c: float
    alpha_ci: tuple[float, float] | None
    c_ci: tuple[float, float] | None
    n_points: int
    n_sizes: int
    n_boot: int  # replicates that converged

    def predict(self, n) -> np.ndarray:
        return self.a * np.asarray(n, dtype=float) ** (-self.alpha) + self.c


def _model(log_n, log_a, alpha, log_c):
    return np.log(np.exp(log_a - alpha * log_n) + np.exp(log_c))


def fit_power_law(n, loss) -> tuple[float, float, float] | None:
    """(a, alpha, c) for L = a N^-alpha + c; None when the points do not pin it down."""
    from scipy.optimize import curve_fit

    n, loss = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if len(np.unique(n)) < 3 or np.any(n <= 0) or np.any(loss <= 0):
        return None
    log_n, log_l = np.log(n), np.log(loss)
    best = None
    # a few starting points for the irreducible loss c: the fit is not convex in c
    for c_frac in (0.0001, 0.5, 0.9):
        c0 = max(loss.min() * c_frac, 1e-6)
        span = max(loss.max() - c0, 1e-6)
        alpha0 = 0.3
        p0 = (math.log(span) + alpha0 * log_n.min(), alpha0, math.log(c0))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, _ = curve_fit(_model, log_n, log_l, p0=p0, maxfev=20000,
                                 bounds=([-50, 0.0, -30], [200, 5.0, math.log(loss.max() * 2)]))
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((_model(log_n, *p) - log_l) ** 2))
        if best is None or sse < best[0]:
            best = (sse, p)
    if best is None:
        return None
    log_a, alpha, log_c = best[1]
    return math.exp(log_a), float(alpha), math.exp(log_c)


def bootstrap_fit(n, loss, groups, n_boot: int = 200, seed: int = 0) -> PowerLawFit | None:
    """Fit, then bootstrap over runs within each size (``groups`` = size label of each point)."""
    n, loss, groups = np.asarray(n, float), np.asarray(loss, float), np.asarray(groups)
    point = fit_power_law(n, loss)
    if point is None:
        return None
    labels = list(dict.fromkeys(groups.tolist()))
    members = [np.flatnonzero(groups == g) for g in labels]
    alphas, cs = [], []
    if any(len(m) > 1 for m in members):
        rng = np.random.default_rng(seed)
        for _ in range(n_boot):
            idx = np.concatenate([rng.choice(m, size=len(m), replace=True) for m in members])
            f = fit_power_law(n[idx], loss[idx])
            if f is not None:
                alphas.append(f[1])
                cs.append(f[2])

    def ci(xs):
        return (float(np.percentile(xs, 2.5)), float(np.percentile(xs, 97.5))) if len(xs) >= 20 else None

    a, alpha, c = point
    return PowerLawFit(a, alpha, c, ci(alphas), ci(cs), len(n), len(labels), len(alphas))
