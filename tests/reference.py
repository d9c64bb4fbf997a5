"""Independent NumPy references used by the tests (the paper's equations, loops
over positions, no code shared with the library)."""

from __future__ import annotations

import itertools

import numpy as np


def maxpool(x: np.ndarray, pool: tuple[int, int, int]) -> np.ndarray:
    """Max pool with stride = kernel, no padding (floor), on (B, T, H, W, C)."""
    b, t, h, w, c = x.shape
    pt, ph, pw = pool
    to, ho, wo = t // pt, h // ph, w // pw
    x = x[:, : to * pt, : ho * ph, : wo * pw]
    x = x.reshape(b, to, pt, ho, ph, wo, pw, c)
    return x.max(axis=(2, 4, 6))


def nonlocal_block(
    x,
    weights: dict,
    *,
    instantiation,
    pool,
    pool_position="before",
    pairwise="spacetime",
    group=None,
    scale=True,
    bn_epsilon=1.0000001e-5,
):
    """y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j); z = x + BN(W_z y).

    ``x`` is (B, T, H, W, C) (callers expand rank 3/4 inputs). ``weights`` holds
    NumPy arrays: theta/phi/g/out ``(kernel, bias)`` pairs (bias may be None),
    ``concat`` (2*inner,) and ``bn`` (gamma, beta, mean, var) or None.
    """
    x = x.astype(np.float64)

    def proj(t, name):
        kernel, bias = weights[name]
        out = t @ kernel
        return out if bias is None else out + bias

    pooled = maxpool(x, pool)
    if instantiation == "gaussian":
        theta, phi = x, pooled
        g = proj(pooled, "g") if pool_position == "before" else maxpool(proj(x, "g"), pool)
    else:
        theta = proj(x, "theta")
        if pool_position == "before":
            phi, g = proj(pooled, "phi"), proj(pooled, "g")
        else:
            phi, g = maxpool(proj(x, "phi"), pool), maxpool(proj(x, "g"), pool)
    inner = g.shape[-1]
    b_, t_, h_, w_ = x.shape[:4]
    tk, hk, wk = phi.shape[1:4]
    y = np.zeros((b_, t_, h_, w_, inner))
    keys_all = list(itertools.product(range(tk), range(hk), range(wk)))
    for b in range(b_):
        for t, h, w in itertools.product(range(t_), range(h_), range(w_)):
            keys = [k for k in keys_all if _attends((t, h, w), k, pairwise, group, pool[0])]
            th = theta[b, t, h, w]
            f = []
            for k in keys:
                ph = phi[b][k]
                if instantiation in ("embedded_gaussian", "gaussian"):
                    s = th @ ph
                    if instantiation == "embedded_gaussian" and scale:
                        s = s / np.sqrt(inner)
                    f.append(s)
                elif instantiation == "dot_product":
                    f.append(th @ ph)
                else:
                    f.append(max(0.0, np.concatenate([th, ph]) @ weights["concat"]))
            f = np.array(f)
            if instantiation in ("embedded_gaussian", "gaussian"):
                f = np.exp(f - f.max())
                f = f / f.sum()
            else:
                f = f / len(keys)
            y[b, t, h, w] = sum(fk * g[b][k] for fk, k in zip(f, keys, strict=True))
    z = proj(y, "out")
    if weights.get("bn") is not None:
        gamma, beta, mean, var = weights["bn"]
        z = gamma * (z - mean) / np.sqrt(var + bn_epsilon) + beta
    return x + z


def _attends(query, key, pairwise, group, pool_t):
    t, h, w = query
    tk, hk, wk = key
    if pairwise == "space":
        return tk == t
    if pairwise == "time":
        return (hk, wk) == (h, w)
    if group is not None:
        return t // group == (tk * pool_t) // group
    return True
