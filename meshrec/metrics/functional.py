"""Per-sample pose and mesh errors: the MPJPE family, PCK / AUC, acceleration error, diversity.

Conventions shared by every function here:

- Points are tensors of shape (..., N, 3) (joints or vertices); any leading batch shape.
- Results are per sample, a tensor with the batch shape (...), in the units of the inputs
  (meshrec works in metres; multiply by 1000 for the millimetres papers report). ``per_joint``
  variants return (..., N) instead.
- ``mask`` (..., N) selects the joints a sample's mean runs over (bool, or 0/1). A sample whose
  mask selects nothing has no defined mean: its value is NaN (pool with ``torch.nanmean``, or
  let the evaluators of :mod:`meshrec.metrics.evaluators` pool sums and counts).
- ``root`` aligns prediction and target separately before measuring: an int (the joint
  index of the pelvis, e.g. 0 for H36M-regressed joints) or a sequence of ints whose mean is the
  root (e.g. the two hips: the mid-hip). The root is taken from all joints, before ``joints``
  selects the evaluated subset.
- Differentiable (PA-MPJPE too: usable as a loss). Bad shapes and empty inputs raise
  ValueError / TypeError naming the argument.
- A NaN or infinite coordinate (or Procrustes weight) makes that sample's result NaN, in every
  function here (PCK and AUC too): invalid input never scores as a plausible value.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

from meshrec.ops.metrics import procrustes

__all__ = [
    "Root",
    "acceleration_error",
    "align_root",
    "auc",
    "average_pairwise_distance",
    "joint_errors",
    "masked_mean",
    "mpjpe",
    "pa_mpjpe",
    "pck",
    "pve",
    "root_positions",
    "sample_std",
    "scale_aligned_mpjpe",
]

Root = Union[int, Sequence[int], None]

ALIGNMENTS = ("none", "scale", "procrustes")


def _check_points(name: str, value, min_points: int = 1) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {value.dtype}")
    if value.dim() < 2 or value.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., N, 3), got {tuple(value.shape)}")
    if value.shape[-2] < min_points:
        raise ValueError(f"{name} has {value.shape[-2]} points; at least {min_points} are needed")
    if value.numel() == 0:
        raise ValueError(f"{name} is an empty batch {tuple(value.shape)}: there is nothing to evaluate")


def _check_pair(pred: torch.Tensor, target: torch.Tensor, pred_name: str = "pred", target_name: str = "target") -> None:
    _check_points(pred_name, pred)
    _check_points(target_name, target)
    if pred.shape != target.shape:
        raise ValueError(f"{pred_name} {tuple(pred.shape)} and {target_name} {tuple(target.shape)} must have the same shape")
    if pred.device != target.device:
        raise ValueError(f"{pred_name} ({pred.device}) and {target_name} ({target.device}) must be on the same device")


def _check_mask(mask, shape: torch.Size, name: str = "mask") -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} (the points without their last axis), got {tuple(mask.shape)}")
    return mask


def root_positions(joints: torch.Tensor, root: Root) -> torch.Tensor:
    """(..., 3) root position of (..., J, 3) joints: joint ``root`` (an int) or the mean of the
    joints ``root`` lists (e.g. the two hips: the mid-hip). Zero when ``root`` is None."""
    if root is None:
        return joints.new_zeros(joints.shape[:-2] + (3,))
    indices = [root] if isinstance(root, int) else list(root)
    if not indices or not all(isinstance(i, int) and -joints.shape[-2] <= i < joints.shape[-2] for i in indices):
        raise ValueError(f"root must be a joint index or a non-empty list of joint indices below {joints.shape[-2]}, got {root!r}")
    return joints[..., indices, :].mean(-2)


def align_root(points: torch.Tensor, joints: torch.Tensor, root: Root) -> torch.Tensor:
    """``points`` (..., N, 3) minus the root of ``joints`` (..., J, 3) (see :func:`root_positions`)."""
    return points - root_positions(joints, root)[..., None, :]


def _select(points: torch.Tensor, joints: Sequence[int] | None) -> torch.Tensor:
    if joints is None:
        return points
    return points[..., list(joints), :]


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last axis of ``values`` where ``mask`` is set (all when None); NaN where a
    row selects nothing."""
    if mask is None:
        return values.mean(-1)
    weights = mask.to(values.dtype)
    count = weights.sum(-1)
    total = (values * weights).sum(-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def joint_errors(
    pred: torch.Tensor, target: torch.Tensor, root: Root = None, joints: Sequence[int] | None = None
) -> torch.Tensor:
    """(..., J') Euclidean error of every (selected) joint after root alignment."""
    _check_pair(pred, target)
    pred = _select(align_root(pred, pred, root), joints)
    target = _select(align_root(target, target, root), joints)
    return torch.linalg.vector_norm(pred - target, dim=-1)


def mpjpe(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    root: Root = None,
    joints: Sequence[int] | None = None,
    per_joint: bool = False,
) -> torch.Tensor:
    """Mean per-joint position error (MPJPE).

    Args:
        pred, target: (..., J, 3) joints.
        mask: optional (..., J') joints to average over (J' = len(joints) when selecting).
        root: root alignment (see the module doc); None compares absolute positions
            (G-MPJPE when the joints are in a world or camera frame).
        joints: optional indices of the evaluated joints, taken after root alignment.
        per_joint: return the (..., J') per-joint errors instead of the mean.

    Returns:
        (...) per-sample MPJPE, or (..., J'), in the units of the inputs.
    """
    errors = joint_errors(pred, target, root, joints)
    if per_joint:
        return errors
    return masked_mean(errors, _check_mask(mask, errors.shape))


def _procrustes(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None):
    dtype = pred.dtype if pred.dtype in (torch.float32, torch.float64) else torch.float32
    if weights is not None:
        weights = weights.to(dtype)
    return procrustes(pred.to(dtype), target.to(dtype), weights)


def _scale_aligned(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    weights = torch.ones(pred.shape[:-1], dtype=pred.dtype, device=pred.device) if mask is None else mask.to(pred.dtype)
    pp = (weights * pred.square().sum(-1)).sum(-1)
    pg = (weights * (pred * target).sum(-1)).sum(-1)
    # A prediction at the origin cannot be scaled: keep it (scale 1) rather than divide 0 by 0.
    scale = torch.where(pp > 0, pg / torch.where(pp > 0, pp, 1.0), torch.ones_like(pp))
    return pred * scale[..., None, None]


def pa_mpjpe(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    joints: Sequence[int] | None = None,
    align_weights: torch.Tensor | None = None,
    per_joint: bool = False,
) -> torch.Tensor:
    """MPJPE after a per-sample similarity Procrustes alignment (PA-MPJPE, reconstruction error).

    The prediction is scaled, rotated (det +1) and translated onto the target
    (:func:`meshrec.ops.procrustes`, SPIN's / mmhuman3d's ``compute_similarity_transform``,
    batched), then MPJPE is measured. Root alignment is irrelevant (Procrustes re-centres).

    Args:
        pred, target: (..., J, 3) joints.
        mask: optional (..., J') joints to average over.
        joints: optional indices of the evaluated joints (alignment uses the same joints).
        align_weights: optional (..., J') weights of the joints in the alignment (default:
            ``mask``, else all joints). EgoHMR aligns on the visible joints only.
        per_joint: return (..., J') per-joint errors.

    Degenerate samples (all predicted joints equal, collinear joints) are well defined, see
    :func:`meshrec.ops.procrustes`. Differentiable (a loss).
    """
    _check_pair(pred, target)
    pred, target = _select(pred, joints), _select(target, joints)
    mask = _check_mask(mask, pred.shape[:-1])
    weights = _check_mask(align_weights, pred.shape[:-1], "align_weights")
    if weights is None and mask is not None:
        weights = mask
    errors = _procrustes(pred, target, weights).residual.to(pred.dtype)
    return errors if per_joint else masked_mean(errors, mask)


def scale_aligned_mpjpe(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    root: Root = None,
    joints: Sequence[int] | None = None,
    per_joint: bool = False,
) -> torch.Tensor:
    """MPJPE after root alignment and the least-squares scale ``<p, g> / <p, p>`` of the
    prediction (S-MPJPE / N-MPJPE; mmhuman3d's alignment="scale"). The scale is fitted on the
    masked joints (mmhuman3d fits it on all joints; the same without a mask)."""
    _check_pair(pred, target)
    pred = _select(align_root(pred, pred, root), joints)
    target = _select(align_root(target, target, root), joints)
    mask = _check_mask(mask, pred.shape[:-1])
    errors = torch.linalg.vector_norm(_scale_aligned(pred, target, mask) - target, dim=-1)
    return errors if per_joint else masked_mean(errors, mask)


def pve(
    pred_vertices: torch.Tensor,
    target_vertices: torch.Tensor,
    pred_root: torch.Tensor | None = None,
    target_root: torch.Tensor | None = None,
    alignment: str = "none",
    mask: torch.Tensor | None = None,
    per_vertex: bool = False,
) -> torch.Tensor:
    """Per-vertex error (PVE, MPVE, V2V): mean Euclidean distance between corresponding vertices.

    Args:
        pred_vertices, target_vertices: (..., V, 3).
        pred_root, target_root: optional (..., 3) positions subtracted from each mesh before
            comparing (e.g. each mesh's own regressed pelvis, as MotionBERT, SA-HMR and EgoHMR do;
            mmhuman3d subtracts nothing). Both or neither.
        alignment: "none", "scale" (least-squares scale) or "procrustes" (PA-PVE).
        mask: optional (..., V) vertices to average over.
        per_vertex: return (..., V) per-vertex errors.
    """
    _check_pair(pred_vertices, target_vertices, "pred_vertices", "target_vertices")
    if (pred_root is None) != (target_root is None):
        raise ValueError("give both pred_root and target_root, or neither")
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if pred_root is not None:
        expected = pred_vertices.shape[:-2] + (3,)
        if pred_root.shape != expected or target_root.shape != expected:
            raise ValueError(
                f"pred_root and target_root must have shape {tuple(expected)}, got {tuple(pred_root.shape)} and {tuple(target_root.shape)}"
            )
        pred_vertices = pred_vertices - pred_root[..., None, :]
        target_vertices = target_vertices - target_root[..., None, :]
    mask = _check_mask(mask, pred_vertices.shape[:-1])
    if alignment == "procrustes":
        pred_vertices = _procrustes(pred_vertices, target_vertices, mask).aligned.to(pred_vertices.dtype)
    elif alignment == "scale":
        pred_vertices = _scale_aligned(pred_vertices, target_vertices, mask)
    errors = torch.linalg.vector_norm(pred_vertices - target_vertices, dim=-1)
    return errors if per_vertex else masked_mean(errors, mask)


def _aligned_errors(pred, target, alignment: str, root: Root, joints, mask) -> torch.Tensor:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if alignment == "procrustes":
        return pa_mpjpe(pred, target, mask=mask, joints=joints, per_joint=True)
    if alignment == "scale":
        return scale_aligned_mpjpe(pred, target, mask=mask, root=root, joints=joints, per_joint=True)
    return joint_errors(pred, target, root, joints)


def pck(
    pred: torch.Tensor,
    target: torch.Tensor,
    threshold: float = 0.15,
    mask: torch.Tensor | None = None,
    alignment: str = "none",
    root: Root = None,
    joints: Sequence[int] | None = None,
) -> torch.Tensor:
    """3D PCK: per-sample fraction (0..1) of joints whose error is strictly below ``threshold``
    (in the units of the inputs: 0.15 for 150 mm in metres; pass 150 for millimetre inputs),
    after ``alignment`` ("none", "scale" or "procrustes") and root alignment. Not
    differentiable (a count)."""
    errors = _aligned_errors(pred, target, alignment, root, joints, mask)
    return masked_mean(_hits(errors, threshold), _check_mask(mask, errors.shape))


def _hits(errors: torch.Tensor, thresholds) -> torch.Tensor:
    """1.0 where errors < thresholds, else 0.0; NaN where the error is NaN (a NaN joint is
    neither a hit nor a miss: the sample's PCK is NaN, never a plausible fraction)."""
    hits = (errors < thresholds).to(errors.dtype)
    return torch.where(errors.isnan(), errors, hits)


def auc(
    pred: torch.Tensor,
    target: torch.Tensor,
    thresholds: torch.Tensor | Sequence[float] | None = None,
    mask: torch.Tensor | None = None,
    alignment: str = "none",
    root: Root = None,
    joints: Sequence[int] | None = None,
) -> torch.Tensor:
    """Area under the 3D PCK curve: the mean of :func:`pck` over ``thresholds`` (default 0, 5,
    ..., 150 mm expressed in metres, 31 values, as MPI-INF-3DHP's ``mpii_compute_3d_pck.m`` and
    mmhuman3d; the threshold 0 always scores 0 since the test is strict). Per sample, 0..1."""
    if thresholds is None:
        thresholds = torch.linspace(0.0, 0.15, 31, dtype=torch.float64)
    thresholds = torch.as_tensor(thresholds, dtype=pred.dtype, device=pred.device)
    if thresholds.dim() != 1 or thresholds.numel() == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {tuple(thresholds.shape)}")
    errors = _aligned_errors(pred, target, alignment, root, joints, mask)
    below = _hits(errors[..., None], thresholds).mean(-1)
    return masked_mean(below, _check_mask(mask, errors.shape))


def acceleration_error(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Acceleration error of joint sequences, per frame.

    The second finite difference ``x[t] - 2 x[t+1] + x[t+2]`` of prediction and target, the
    Euclidean norm of their difference per joint, averaged over joints (mmhuman3d's
    ``keypoint_accel_error``, VIBE's ``compute_accel``). Units: input units per frame^2 (not
    normalised by the frame rate).

    Args:
        pred, target: (..., T, J, 3) sequences, T >= 3.
        mask: optional (..., T) valid frames; a window touching an invalid frame is NaN.

    Returns:
        (..., T - 2) per-window errors.
    """
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, torch.Tensor) or value.dim() < 3 or value.shape[-1] != 3:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must have shape (..., T, J, 3), got {shape}")
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.shape[-3] < 3 or pred.shape[-2] == 0:
        raise ValueError(f"acceleration needs at least 3 frames and 1 joint, got {tuple(pred.shape)}")

    def acceleration(x: torch.Tensor) -> torch.Tensor:
        return x[..., :-2, :, :] - 2 * x[..., 1:-1, :, :] + x[..., 2:, :, :]

    error = torch.linalg.vector_norm(acceleration(pred) - acceleration(target), dim=-1).mean(-1)
    if mask is not None:
        mask = _check_mask(mask, pred.shape[:-2]).bool()
        valid = mask[..., :-2] & mask[..., 1:-1] & mask[..., 2:]
        error = torch.where(valid, error, torch.full_like(error, float("nan")))
    return error


def _check_samples(samples: torch.Tensor) -> None:
    if not isinstance(samples, torch.Tensor) or samples.dim() < 3 or samples.shape[-1] != 3:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"samples must have shape (..., S, J, 3), got {shape}")
    if samples.shape[-3] < 2:
        raise ValueError(f"diversity needs at least 2 samples per input, got S = {samples.shape[-3]}")


def average_pairwise_distance(samples: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Diversity of S samples per input (APD): the mean over ordered pairs of distinct samples of
    the mean per-joint distance between them (= the mean over unordered pairs).

    Args:
        samples: (..., S, J, 3), e.g. pelvis-aligned joints of S hypotheses.
        mask: optional (..., J) joints to average over (e.g. the invisible ones).

    Returns:
        (...) APD in input units. EgoHMR's printed "apd" is half of this (its normaliser counts
        every ordered pair twice); :mod:`meshrec.metrics.evaluators` reproduces it for that
        protocol.
    """
    _check_samples(samples)
    distances = torch.linalg.vector_norm(samples[..., :, None, :, :] - samples[..., None, :, :, :], dim=-1)
    count = samples.shape[-3]
    pair_mean = distances.sum((-3, -2)) / (count * (count - 1))  # (..., J), diagonal terms are 0
    if mask is not None:
        mask = _check_mask(mask, samples.shape[:-3] + samples.shape[-2:-1])
    return masked_mean(pair_mean, mask)


def sample_std(samples: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Diversity of S samples per input: the unbiased standard deviation over the samples of
    every coordinate, averaged over xyz and the (masked) joints (EgoHMR's "std-joints")."""
    _check_samples(samples)
    std = samples.std(dim=-3, unbiased=True).mean(-1)  # (..., J)
    if mask is not None:
        mask = _check_mask(mask, samples.shape[:-3] + samples.shape[-2:-1])
    return masked_mean(std, mask)
