"""Plain numpy, one-sample-at-a-time implementations of the textbook metric formulas: the oracles
the tests hold meshrec's batched kernels and metrics against (written for these tests, in the
way the SPIN / mmhuman3d evaluation loops compute them).

The only departures from those loops are meshrec's documented rules for degenerate inputs
(meshrec.ops.procrustes): zero total weight -> identity; vanishing cross-covariance -> R = I;
vanishing source spread -> scale 0 (numpy's loop would divide 0 by 0 there).
"""

from __future__ import annotations

import numpy as np


def similarity_transform(source, target, weights=None, scaling=True):
    """(aligned, scale, rotation, translation) for one (N, 3) point set: SVD of the weighted
    cross-covariance, reflection fix Z = diag(1, 1, sign det(U V^T)), R = V Z U^T,
    s = tr(R K) / var, t = mu_y - s R mu_x."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if not total > 0:
        return source.copy(), 1.0, np.eye(3), np.zeros(3)
    mean_x = (w[:, None] * source).sum(0) / total
    mean_y = (w[:, None] * target).sum(0) / total
    x, y = source - mean_x, target - mean_y
    K = (w[:, None] * x).T @ y
    variance = float((w * (x**2).sum(1)).sum())
    second_x = float((w * (source**2).sum(1)).sum())
    second_y = float((w * (target**2).sum(1)).sum())
    if np.linalg.norm(K) > 1e-13 * np.sqrt(second_x * second_y):
        U, _, Vt = np.linalg.svd(K)
        V = Vt.T
        Z = np.eye(3)
        Z[2, 2] = np.sign(np.linalg.det(U @ V.T))
        R = V @ Z @ U.T
    else:
        R = np.eye(3)
    if not scaling:
        s = 1.0
    elif variance > 1e-26 * second_x:
        s = float(np.trace(R @ K)) / variance
    else:
        s = 0.0
    t = mean_y - s * R @ mean_x
    return s * source @ R.T + t, s, R, t


def pa_errors(pred, target, weights=None):
    """(B, N) per-joint errors after per-sample similarity alignment (a Python loop)."""
    return np.stack([
        np.linalg.norm(similarity_transform(p, g, None if weights is None else weights[i])[0] - g, axis=-1)
        for i, (p, g) in enumerate(zip(pred, target))
    ])


def joint_errors(pred, target, root=None):
    """(B, N) per-joint errors after subtracting each sample's root joint (or mean of joints)."""
    errors = []
    for p, g in zip(np.asarray(pred, np.float64), np.asarray(target, np.float64)):
        if root is not None:
            index = [root] if isinstance(root, int) else list(root)
            p = p - p[index].mean(0)
            g = g - g[index].mean(0)
        errors.append(np.sqrt(((p - g) ** 2).sum(-1)))
    return np.stack(errors)


def masked_sample_means(errors, mask=None):
    """Per-sample mean over the valid joints, NaN for a sample with none."""
    out = []
    for i, row in enumerate(errors):
        valid = np.ones(len(row), bool) if mask is None else np.asarray(mask[i], bool)
        out.append(row[valid].mean() if valid.any() else np.nan)
    return np.array(out)


def scale_aligned(pred, target, mask=None):
    out = []
    for i, (p, g) in enumerate(zip(pred, target)):
        valid = np.ones(len(p), bool) if mask is None else np.asarray(mask[i], bool)
        pp = (p[valid] ** 2).sum()
        out.append(p * ((p[valid] * g[valid]).sum() / pp if pp > 0 else 1.0))
    return np.stack(out)


def acceleration_errors(pred, target):
    """(T - 2,) per-window acceleration errors of one (T, J, 3) sequence."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    out = []
    for t in range(len(pred) - 2):
        a_pred = pred[t] - 2 * pred[t + 1] + pred[t + 2]
        a_gt = target[t] - 2 * target[t + 1] + target[t + 2]
        out.append(np.linalg.norm(a_pred - a_gt, axis=-1).mean())
    return np.array(out)


def average_pairwise_distance(samples):
    """Mean over ordered pairs (i != j) of the mean joint distance, one (S, J, 3) input."""
    samples = np.asarray(samples, np.float64)
    count = len(samples)
    total = 0.0
    for i in range(count):
        for j in range(count):
            if i != j:
                total += np.linalg.norm(samples[i] - samples[j], axis=-1).mean()
    return total / (count * (count - 1))


def trilinear(sdf, grid_min, grid_max, point):
    """Trilinear sample of sdf[ix, iy, iz] with samples on grid_min..grid_max, border clamped."""
    sdf = np.asarray(sdf, np.float64)
    dims = np.array(sdf.shape)
    u = (np.asarray(point, np.float64) - grid_min) / (np.asarray(grid_max) - grid_min) * (dims - 1)
    u = np.clip(u, 0, dims - 1)
    base = np.minimum(np.floor(u).astype(int), dims - 2)
    f = u - base
    value = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                weight = (f[0] if dx else 1 - f[0]) * (f[1] if dy else 1 - f[1]) * (f[2] if dz else 1 - f[2])
                value += weight * sdf[base[0] + dx, base[1] + dy, base[2] + dz]
    return value
