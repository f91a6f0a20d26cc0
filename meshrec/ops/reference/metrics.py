"""Pure-PyTorch references of the metrics ops (torch only: loadable without meshrec).

They compute what the compiled kernels compute, by independent means where that makes a better
oracle: Procrustes through ``torch.linalg.eigh`` of Horn's matrix, inside-mesh tests through the
generalised winding number (a sum of solid angles), nearest points by brute force in chunks.
"""

from __future__ import annotations

import math

import torch

__all__ = ["nearest_points", "procrustes", "sample_sdf", "winding_number"]

# The same thresholds as csrc/metrics/procrustes.h (see meshrec.ops.procrustes).
_VARIANCE_TOLERANCE = 1e-26
_COVARIANCE_TOLERANCE = 1e-13
_GAP_TOLERANCE = 1e-10
_DEGENERATE_TOLERANCE = 1e-12  # top eigenvalues this close (relative) span the optimal rotations


def _horn_matrix(S: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) cross-covariance -> (..., 4, 4) symmetric matrix with q^T N q = tr(R(q) S)."""
    xx, xy, xz, yx, yy, yz, zx, zy, zz = S.flatten(-2).unbind(-1)
    rows = [
        [xx + yy + zz, yz - zy, zx - xz, xy - yx],
        [yz - zy, xx - yy - zz, xy + yx, zx + xz],
        [zx - xz, xy + yx, -xx + yy - zz, yz + zy],
        [xy - yx, zx + xz, yz + zy, -xx - yy + zz],
    ]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def _horn_matrix_adjoint(G: torch.Tensor) -> torch.Tensor:
    """Gradient with respect to S of <G, N(S)>."""
    g = G.flatten(-2).unbind(-1)
    g01, g02, g03 = g[1] + g[4], g[2] + g[8], g[3] + g[12]
    g12, g13, g23 = g[6] + g[9], g[7] + g[13], g[11] + g[14]
    xx = g[0] + g[5] - g[10] - g[15]
    yy = g[0] - g[5] + g[10] - g[15]
    zz = g[0] - g[5] - g[10] + g[15]
    return torch.stack(
        [xx, g03 + g12, -g02 + g13, -g03 + g12, yy, g01 + g23, g02 + g13, -g01 + g23, zz], -1
    ).unflatten(-1, (3, 3))


def _quaternion_to_rotation(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    rows = [
        [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (y * x + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
        [2 * (z * x - w * y), 2 * (z * y + w * x), w * w - x * x - y * y + z * z],
    ]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


class _TopQuaternion(torch.autograd.Function):
    """Top eigenvector of Horn's matrix N(S) for |S|_F > 0, with the eigenvector derivative
    restricted to determined directions (eigenvalue gaps above the tolerance), which autograd
    through eigh does not do (it divides by every gap, also the zero ones)."""

    @staticmethod
    def forward(ctx, S):
        norm = torch.linalg.matrix_norm(S).clamp_min(torch.finfo(S.dtype).tiny)
        N = _horn_matrix(S / norm[..., None, None])
        values, vectors = torch.linalg.eigh(N)
        # Where the top eigenvalue is repeated every unit vector of its eigenspace is optimal: take
        # the one closest to (1, 0, 0, 0), the smallest rotation (then e1, e2, e3), as the kernel.
        scale = values.abs().amax(-1, keepdim=True)
        top_space = vectors * ((values[..., -1:] - values) <= _DEGENERATE_TOLERANCE * scale)[..., None, :]
        projections = top_space @ top_space.transpose(-1, -2)  # column k: e_k projected on the space
        usable = torch.linalg.vector_norm(projections, dim=-2) > 1e-6
        first = torch.where(usable, torch.arange(4, device=S.device).flip(0) + 1, 0).argmax(-1)
        q = torch.gather(projections, -1, first[..., None, None].expand(*first.shape, 4, 1))[..., 0]
        q = torch.nn.functional.normalize(q, dim=-1)
        q = torch.where(q[..., :1] < 0, -q, q)
        ctx.save_for_backward(N, values, vectors, q, norm)
        return q

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_q):
        # dq = sum_k v_k v_k^T dN q / (l_top - l_k) over the determined directions k.
        N, values, vectors, q, norm = ctx.saved_tensors
        top = torch.einsum("...i,...ij,...j->...", q, N, q)
        gaps = top[..., None] - values
        determined = gaps > _GAP_TOLERANCE
        projection = torch.einsum("...ik,...i->...k", vectors, grad_q)
        coefficient = torch.where(determined, projection / torch.where(determined, gaps, 1.0), 0.0) / norm[..., None]
        G = torch.einsum("...k,...ik,...j->...ij", coefficient, vectors, q)
        return _horn_matrix_adjoint(G)


def procrustes(
    source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None, scaling: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(aligned, scale, rotation, translation, residual) of the weighted similarity Procrustes
    problem; see ``meshrec.ops.procrustes``."""
    # Double precision inside, as the kernels: the degeneracy thresholds are relative to it.
    dtype = source.dtype
    x, y = source.double(), target.double()
    w = torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device) if weights is None else weights.double()
    # A negative, NaN or infinite weight makes the whole sample NaN (never a silent identity).
    invalid = ~((w >= 0) & (w < math.inf)).all(-1)
    w = torch.where(invalid[..., None], 0.0, w)
    total = w.sum(-1)
    empty = ~(total > 0) & ~invalid
    safe_total = torch.where(total > 0, total, 1.0)

    def centred(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Centred about the rounded centroid, then by the residual mean (as the kernels): the
        # centred points carry rounding relative to the spread, not to the offset.
        origin = (w[..., None] * points).sum(-2) / safe_total[..., None]
        shifted = points - origin[..., None, :]
        shift = (w[..., None] * shifted).sum(-2) / safe_total[..., None]
        return shifted - shift[..., None, :], origin + shift

    xc, mean_x = centred(x)
    yc, mean_y = centred(y)
    S = torch.einsum("...n,...na,...nb->...ab", w, xc, yc)
    variance = (w * xc.square().sum(-1)).sum(-1)
    target_variance = (w * yc.square().sum(-1)).sum(-1)
    second_x = (w * x.square().sum(-1)).sum(-1)
    second_y = (w * y.square().sum(-1)).sum(-1)
    norm = torch.linalg.matrix_norm(S)
    source_spread = variance > _VARIANCE_TOLERANCE * second_x
    target_spread = target_variance > _VARIANCE_TOLERANCE * second_y
    determined = (source_spread & target_spread & (norm > _COVARIANCE_TOLERANCE * (variance * target_variance).sqrt())
                  & ~empty & ~invalid)
    eye = torch.eye(3, dtype=x.dtype, device=x.device).expand(S.shape)
    # Undetermined samples get a harmless stand-in, so that neither branch makes NaN gradients.
    q = _TopQuaternion.apply(torch.where(determined[..., None, None], S, eye))
    rotation = torch.where(determined[..., None, None], _quaternion_to_rotation(q), eye)
    # NaN or infinite points: NaN rotation (and whatever follows), as the kernels.
    nonfinite = norm.isnan() | second_x.isnan() | second_y.isnan()
    rotation = torch.where((nonfinite & ~determined)[..., None, None], math.nan, rotation)
    trace = (rotation * S.transpose(-1, -2)).sum((-1, -2))
    if scaling:
        # s >= 0: tr(R S) >= 0 at the optimum, rounding aside (and R = I may give tr S < 0).
        scale_determined = source_spread & (trace > 0) & ~empty
        scale = torch.where(scale_determined, trace / torch.where(scale_determined, variance, 1.0), 0.0)
        scale = torch.where(trace.isnan(), trace, scale)
    else:
        scale = torch.ones_like(trace)
    scale = torch.where(empty, 1.0, scale)
    translation = mean_y - scale[..., None] * (rotation @ mean_x[..., None])[..., 0]
    translation = torch.where(empty[..., None], 0.0, translation)
    nan = torch.full((), math.nan, dtype=x.dtype, device=x.device)
    scale = torch.where(invalid, nan, scale)
    rotation = torch.where(invalid[..., None, None], nan, rotation)
    translation = torch.where(invalid[..., None], nan, translation)
    # s R (x - mx) + my: the kernels' form (no cancellation between s R x and t far from the origin).
    mean_y = torch.where(empty[..., None], 0.0, mean_y)
    aligned = scale[..., None, None] * (xc @ rotation.transpose(-1, -2)) + mean_y[..., None, :]
    aligned = torch.where(empty[..., None, None], x, aligned)
    residual = torch.linalg.vector_norm(aligned - y, dim=-1)
    return aligned.to(dtype), scale.to(dtype), rotation.to(dtype), translation.to(dtype), residual.to(dtype)


def sample_sdf(points: torch.Tensor, sdf: torch.Tensor, grid_min, grid_max) -> torch.Tensor:
    """Trilinear samples (...) of the grid sdf[ix, iy, iz] at points (..., 3); see
    ``meshrec.ops.sample_sdf``. Differentiable with respect to the points and the grid."""
    dims = torch.tensor(sdf.shape, device=points.device)
    lower = torch.as_tensor(grid_min, dtype=points.dtype, device=points.device)
    upper = torch.as_tensor(grid_max, dtype=points.dtype, device=points.device)
    finite = ~points.isnan().any(-1)
    u = (torch.where(finite[..., None], points, lower) - lower) / (upper - lower) * (dims - 1).to(points.dtype)
    u = torch.minimum(u.clamp_min(0), (dims - 1).to(points.dtype))
    base = torch.minimum(u.detach().floor().long(), dims - 2)
    f = u - base.to(points.dtype)
    flat = sdf.reshape(-1)

    def corner(dx: int, dy: int, dz: int) -> torch.Tensor:
        index = ((base[..., 0] + dx) * dims[1] + base[..., 1] + dy) * dims[2] + base[..., 2] + dz
        return flat[index]

    fx, fy, fz = f.unbind(-1)
    c00 = corner(0, 0, 0) + fz * (corner(0, 0, 1) - corner(0, 0, 0))
    c01 = corner(0, 1, 0) + fz * (corner(0, 1, 1) - corner(0, 1, 0))
    c10 = corner(1, 0, 0) + fz * (corner(1, 0, 1) - corner(1, 0, 0))
    c11 = corner(1, 1, 0) + fz * (corner(1, 1, 1) - corner(1, 1, 0))
    c0 = c00 + fy * (c01 - c00)
    c1 = c10 + fy * (c11 - c10)
    value = c0 + fx * (c1 - c0)
    return torch.where(finite, value, points.sum(-1))


def winding_number(
    points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """Generalised winding numbers (B, P) of points (B or 1, P, 3) with respect to the closed
    meshes (B, V, 3) with shared faces (F, 3): the sum of the signed solid angles of the faces
    seen from each point, over 4 pi (Van Oosterom and Strackee's formula); an integer away from
    the surface. Points outside a mesh's bounding box get 0 without the sum (exact for closed
    meshes); the others are summed by brute force, ``chunk`` points at a time."""
    batch = vertices.shape[0]
    points = points.expand(batch, -1, -1)
    out = torch.zeros(points.shape[:2], dtype=vertices.dtype, device=vertices.device)
    for b in range(batch):
        lower, upper = vertices[b].amin(0), vertices[b].amax(0)
        candidates = torch.nonzero(((points[b] >= lower) & (points[b] <= upper)).all(-1)).flatten()
        a0, b0, c0 = vertices[b][faces].unbind(1)  # (F, 3) each
        for start in range(0, candidates.numel(), chunk):
            selected = candidates[start : start + chunk]
            p = points[b, selected][:, None, :]
            a, bb, c = a0 - p, b0 - p, c0 - p
            la, lb, lc = (torch.linalg.vector_norm(v, dim=-1) for v in (a, bb, c))
            numerator = (a * torch.linalg.cross(bb, c)).sum(-1)
            denominator = la * lb * lc + (a * bb).sum(-1) * lc + (bb * c).sum(-1) * la + (c * a).sum(-1) * lb
            out[b, selected] = torch.atan2(numerator, denominator).sum(-1) / (2 * math.pi)
    # A NaN or infinite vertex leaves its mesh without an inside: NaN, never "outside" (0).
    broken = ~torch.isfinite(vertices).all(-1).all(-1)
    out = torch.where(broken[:, None], math.nan, out)
    nan = points.isnan().any(-1)
    return torch.where(nan, points.sum(-1).to(out.dtype), out)


def nearest_points(
    queries: torch.Tensor, points: torch.Tensor, chunk_elements: int = 1 << 22
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (B, Q) from each query (B, Q, 3) to the nearest of points (B or 1, P, 3), and its
    index (the smallest index among equally near points; inf and -1 for an empty cloud, NaN and
    -1 for a NaN query). Brute force in chunks of about ``chunk_elements`` pairs, so memory stays
    bounded for million-point scenes: candidates by |q|^2 + |p|^2 - 2 q.p in float64 (matrix
    products), the distance of the chosen pair then recomputed from its difference."""
    batch, count = queries.shape[:2]
    size = points.shape[1]
    q64 = queries.double()
    p64 = points.double().expand(batch, -1, -1)
    p_squared = p64.square().sum(-1)
    best = torch.full((batch, count), math.inf, dtype=torch.float64, device=queries.device)
    index = torch.full((batch, count), -1, dtype=torch.long, device=queries.device)
    query_chunk = max(1, min(count, chunk_elements // max(size, 1)))
    point_chunk = max(1, chunk_elements // query_chunk)
    for q0 in range(0, count, query_chunk):
        q = q64[:, q0 : q0 + query_chunk]
        q_squared = q.square().sum(-1, keepdim=True)
        for p0 in range(0, size, point_chunk):
            p = p64[:, p0 : p0 + point_chunk]
            d2 = torch.baddbmm(p_squared[:, None, p0 : p0 + point_chunk], q, p.transpose(1, 2), alpha=-2).add_(q_squared)
            value, argmin = d2.min(-1)
            closer = value < best[:, q0 : q0 + query_chunk]
            best[:, q0 : q0 + query_chunk] = torch.where(closer, value, best[:, q0 : q0 + query_chunk])
            index[:, q0 : q0 + query_chunk] = torch.where(closer, argmin + p0, index[:, q0 : q0 + query_chunk])
    nan = queries.isnan().any(-1)
    index = torch.where(nan, -1, index)
    distance = torch.full((batch, count), math.inf, dtype=queries.dtype, device=queries.device)
    if size:
        nearest = torch.gather(points.expand(batch, -1, -1), 1, index.clamp_min(0)[..., None].expand(-1, -1, 3))
        distance = torch.where(index >= 0, torch.linalg.vector_norm(queries - nearest, dim=-1), distance)
    return torch.where(nan, queries.sum(-1), distance), index
