"""Multi-person evaluation: matching predictions to ground truth (Hungarian on 3D joints, and
the greedy 2D matching with IoU gating of MA-HMR / SAT-HMR / AGORA / BEV), detection scores, and
the relative-depth correctness (PCRD) of Relative Human.

These work per image on small tensors (people x joints) and return Python numbers and index
tensors; accumulate counts over a dataset and call :func:`detection_scores` / :func:`pcrd` once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "DetectionScores",
    "Matching",
    "detection_scores",
    "greedy_match_2d",
    "keypoint_box_iou",
    "match_people",
    "pcrd",
    "relative_depth_pairs",
]


@dataclass(frozen=True)
class Matching:
    """The result of :func:`match_people` for one image."""

    pairs: torch.Tensor            # (M, 2) int64: (prediction index, ground-truth index)
    costs: torch.Tensor            # (M,) mean joint distance of each pair, input units
    false_positives: torch.Tensor  # (FP,) unmatched prediction indices
    misses: torch.Tensor           # (FN,) unmatched ground-truth indices

    @property
    def true_positives(self) -> int:
        return int(self.pairs.shape[0])


def _box_iou(a: torch.Tensor, b: torch.Tensor, a_mask: torch.Tensor, b_mask: torch.Tensor) -> torch.Tensor:
    """IoU of the xy bounding boxes of the (valid) keypoints, for all pairs: (P, G)."""

    def boxes(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        big = torch.finfo(points.dtype).max
        lo = torch.where(mask[..., None], points[..., :2], torch.full_like(points[..., :2], big)).amin(-2)
        hi = torch.where(mask[..., None], points[..., :2], torch.full_like(points[..., :2], -big)).amax(-2)
        return torch.cat([lo, hi], -1)

    box_a, box_b = boxes(a, a_mask), boxes(b, b_mask)
    lo = torch.maximum(box_a[:, None, :2], box_b[None, :, :2])
    hi = torch.minimum(box_a[:, None, 2:], box_b[None, :, 2:])
    intersection = (hi - lo).clamp_min(0).prod(-1)
    area_a = (box_a[:, 2:] - box_a[:, :2]).clamp_min(0).prod(-1)
    area_b = (box_b[:, 2:] - box_b[:, :2]).clamp_min(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def match_people(
    pred: torch.Tensor,
    target: torch.Tensor,
    target_mask: torch.Tensor | None = None,
    max_cost: float | None = None,
    min_iou: float | None = None,
) -> Matching:
    """One-to-one matching of predicted people to ground-truth people (Hungarian algorithm).

    The cost of a pair is the mean Euclidean distance over the ground truth's valid joints, in
    2D (image keypoints) or 3D; ``scipy.optimize.linear_sum_assignment`` minimises the total.
    Assigned pairs costlier than ``max_cost``, or whose keypoint boxes overlap less than
    ``min_iou`` (xy boxes of the valid keypoints; MA-HMR / AGORA use 0.1, Relative Human 0.05),
    are dropped: their prediction becomes a false positive and their ground truth a miss.
    (MA-HMR and AGORA match greedily, cheapest pair first; the optimal assignment can differ on
    crowded images.)

    Args:
        pred: (P, J, D) predicted joints, D = 2 or 3. P may be 0.
        target: (G, J, D) ground truth. G may be 0.
        target_mask: optional (G, J) valid ground-truth joints.
        max_cost: optional largest accepted cost, in input units.
        min_iou: optional smallest accepted keypoint-box IoU.
    """
    from scipy.optimize import linear_sum_assignment

    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, torch.Tensor) or value.dim() != 3 or value.shape[-1] not in (2, 3):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must have shape (people, J, 2 or 3), got {shape}")
    if pred.shape[1:] != target.shape[1:]:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same joints and dimension")
    count_pred, count_target = pred.shape[0], target.shape[0]
    if target_mask is None:
        target_mask = torch.ones(target.shape[:2], dtype=torch.bool, device=target.device)
    elif target_mask.shape != target.shape[:2]:
        raise ValueError(f"target_mask must have shape {tuple(target.shape[:2])}, got {tuple(target_mask.shape)}")
    target_mask = target_mask.bool()
    if count_pred == 0 or count_target == 0:
        return Matching(torch.zeros(0, 2, dtype=torch.long), pred.new_zeros(0).cpu(), torch.arange(count_pred), torch.arange(count_target))
    distance = torch.linalg.vector_norm(pred[:, None] - target[None], dim=-1)  # (P, G, J)
    weights = target_mask[None].to(distance.dtype)
    count = weights.sum(-1)
    cost = torch.where(count > 0, (distance * weights).sum(-1) / count.clamp_min(1), torch.full_like(count, float("inf")))
    finite = torch.where(torch.isfinite(cost), cost, torch.full_like(cost, 1e30))
    rows, columns = linear_sum_assignment(finite.detach().cpu().double().numpy())
    rows, columns = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(columns, dtype=torch.long)
    keep = torch.isfinite(cost.detach().cpu()[rows, columns])
    if max_cost is not None:
        keep &= cost.detach().cpu()[rows, columns] <= max_cost
    if min_iou is not None:
        pred_mask = torch.ones(pred.shape[:2], dtype=torch.bool, device=pred.device)
        iou = _box_iou(pred.detach(), target.detach(), pred_mask, target_mask).cpu()
        keep &= iou[rows, columns] >= min_iou
    rows, columns = rows[keep], columns[keep]
    matched_pred = torch.zeros(count_pred, dtype=torch.bool)
    matched_pred[rows] = True
    matched_target = torch.zeros(count_target, dtype=torch.bool)
    matched_target[columns] = True
    return Matching(
        pairs=torch.stack([rows, columns], 1),
        costs=cost.detach().cpu()[rows, columns],
        false_positives=torch.nonzero(~matched_pred).flatten(),
        misses=torch.nonzero(~matched_target).flatten(),
    )


@dataclass(frozen=True)
class DetectionScores:
    """Precision, recall and F1 of matched people, with the counts they come from."""

    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    misses: int


def detection_scores(true_positives: int, false_positives: int, misses: int) -> DetectionScores:
    """precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = TP / (TP + (FP + FN) / 2) (as
    AGORA and MA-HMR; MA-HMR rounds to 2 decimals, meshrec does not). A ratio with a zero
    denominator is 0."""
    tp, fp, fn = int(true_positives), int(false_positives), int(misses)
    if min(tp, fp, fn) < 0:
        raise ValueError(f"counts must be non-negative, got TP={tp}, FP={fp}, FN={fn}")

    def ratio(numerator: float, denominator: float) -> float:
        return numerator / denominator if denominator > 0 else 0.0

    return DetectionScores(
        precision=ratio(tp, tp + fp), recall=ratio(tp, tp + fn), f1=ratio(tp, tp + 0.5 * (fp + fn)),
        true_positives=tp, false_positives=fp, misses=fn,
    )


def relative_depth_pairs(
    pred_depth: torch.Tensor, depth_layer: torch.Tensor, threshold: float = 0.2
) -> tuple[int, int]:
    """Relative-depth correctness of the matched people of one image (BEV's PCDR, MA-HMR's PCRD).

    For every pair (i, j) of people whose ground-truth depth layers are both known (>= 0), the
    layers say "same depth", "i closer" or "i farther"; the prediction is correct when
    ``|z_j - z_i| < threshold`` for the same layer, ``z_j - z_i < -threshold`` when j's layer is
    smaller (closer) and ``z_j - z_i > threshold`` when it is larger.

    Args:
        pred_depth: (M,) predicted depths (camera z, metres) of the matched people.
        depth_layer: (M,) their ground-truth depth layers (Relative Human ``depth_id``; -1 unknown).
        threshold: the tolerance, metres (0.2 for PCRD_0.2).

    Returns:
        (correct pairs, pairs).
    """
    pred_depth = torch.as_tensor(pred_depth, dtype=torch.float64).flatten()
    depth_layer = torch.as_tensor(depth_layer).flatten()
    if pred_depth.shape != depth_layer.shape:
        raise ValueError(f"pred_depth {tuple(pred_depth.shape)} and depth_layer {tuple(depth_layer.shape)} must match")
    known = depth_layer >= 0
    z, layer = pred_depth[known], depth_layer[known]
    i, j = torch.triu_indices(len(z), len(z), offset=1)
    dz, dlayer = z[j] - z[i], layer[j] - layer[i]
    correct = torch.where(dlayer == 0, dz.abs() < threshold, torch.where(dlayer < 0, dz < -threshold, dz > threshold))
    return int(correct.sum()), int(correct.numel())


def pcrd(correct_pairs: int, pairs: int, missed_people: int = 0, miss_weight: float = 0.3) -> float:
    """Percentage of correct relative depths (0..1) over a dataset: correct pairs over all pairs
    plus ``miss_weight`` (0.3 in BEV / MA-HMR) per missed ground-truth person, so that missing
    people is not rewarded. 0 when there is nothing to score."""
    denominator = pairs + miss_weight * missed_people
    return correct_pairs / denominator if denominator > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Greedy 2D matching with IoU gating, exactly as MA-HMR / SAT-HMR (and AGORA, BEV) evaluate.
#
# The upstream procedure (``utils/evaluation.py: match_2d_greedy``, RH's
# ``engines/funcs/RH_evaluation/matching.py``), kept step by step because the order of pairs
# decides the result on crowded images:
#
# * the error of a (prediction, ground truth) pair is ``numpy.linalg.norm(P - G, 2)`` of the
#   (J, 2) keypoint difference: for a matrix that is the *spectral* norm (largest singular
#   value), not the Frobenius norm; ``pair_error="frobenius"`` gives the latter;
# * pairs are visited cheapest first; a pair whose two people are both free and whose keypoint
#   boxes overlap with IoU >= ``iou_thresh`` is matched; a visited pair below the IoU threshold
#   counts one "false positive" event that only shortens the search (upstream's counter): the
#   search stops when every ground truth is matched or matches + events reach the predictions;
# * keypoint boxes are (min, max) of the given points with the pixel-inclusive +1 convention.
#
# Unmatched predictions are the false positives, unmatched ground truths the misses.


def keypoint_box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the boxes of two keypoint sets (J, 2), upstream's +1 (pixel-inclusive) areas."""
    lo_a, hi_a = a.min(0), a.max(0)
    lo_b, hi_b = b.min(0), b.max(0)
    width = max(0.0, min(hi_a[0], hi_b[0]) - max(lo_a[0], lo_b[0]) + 1)
    height = max(0.0, min(hi_a[1], hi_b[1]) - max(lo_a[1], lo_b[1]) + 1)
    inter = width * height
    area_a = (hi_a[0] - lo_a[0] + 1) * (hi_a[1] - lo_a[1] + 1)
    area_b = (hi_b[0] - lo_b[0] + 1) * (hi_b[1] - lo_b[1] + 1)
    return float(inter / (area_a + area_b - inter))


def greedy_match_2d(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, iou_thresh: float = 0.1,
                    valid: np.ndarray | torch.Tensor | None = None, num_joints: int | None = None,
                    pair_error: str = "spectral") -> Matching:
    """Greedy one-to-one matching of predicted to ground-truth 2D keypoints (see the module doc).

    Args:
        pred: (P, J, >=2) predicted keypoints, pixels. P may be 0.
        target: (G, J, >=2) ground-truth keypoints; boxes are taken over all J points as given.
        iou_thresh: 0.1 (AGORA / BEDLAM / 3DPW in MA-HMR), 0.05 (Relative Human).
        valid: optional (G, J) joints of each ground truth used in the pair error (RH).
        num_joints: use only the first joints (MA-HMR: the 24 SMPL joints).
        pair_error: "spectral" (upstream) or "frobenius".

    Returns:
        :class:`Matching` with ``costs`` the pair errors, pixels.
    """
    pred = np.asarray(pred.detach().cpu() if torch.is_tensor(pred) else pred, dtype=np.float64)
    target = np.asarray(target.detach().cpu() if torch.is_tensor(target) else target, dtype=np.float64)
    if pred.ndim != 3 or target.ndim != 3 or (len(pred) and len(target) and pred.shape[1] != target.shape[1]):
        raise ValueError(f"pred and target must be (people, J, 2) with the same J, got {pred.shape} and {target.shape}")
    if pair_error not in ("spectral", "frobenius"):
        raise ValueError(f"pair_error must be 'spectral' or 'frobenius', got {pair_error!r}")
    if num_joints is not None:
        pred, target = pred[:, :num_joints], target[:, :num_joints]
        valid = None if valid is None else np.asarray(valid)[:, :num_joints]
    pred, target = pred[..., :2], target[..., :2]
    P, G = len(pred), len(target)
    if valid is not None:
        valid = np.asarray(valid.cpu() if torch.is_tensor(valid) else valid, dtype=bool)
        if valid.shape != target.shape[:2]:
            raise ValueError(f"valid must have shape {target.shape[:2]}, got {valid.shape}")
    order_norm = 2 if pair_error == "spectral" else "fro"
    errors = np.full(P * G, np.inf)
    for p in range(P):
        for g in range(G):
            mask = slice(None) if valid is None else valid[g]
            errors[p * G + g] = np.linalg.norm(pred[p][mask] - target[g][mask], order_norm)
    pairs, costs = [], []
    pred_done, target_done = np.zeros(P, bool), np.zeros(G, bool)
    events = 0
    candidates = list(np.argsort(errors, kind="stable"))  # argmin after argmin, ties by index
    while candidates and target_done.sum() < G and pred_done.sum() + events < P:
        index = candidates.pop(0)
        p, g = divmod(int(index), G)
        iou = keypoint_box_iou(pred[p], target[g])
        if iou < iou_thresh:
            events += 1
        elif not pred_done[p] and not target_done[g]:
            pairs.append((p, g))
            costs.append(errors[index])
            pred_done[p] = target_done[g] = True
    pairs_t = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    return Matching(pairs=pairs_t, costs=torch.tensor(costs, dtype=torch.float64),
                    false_positives=torch.from_numpy(np.flatnonzero(~pred_done)),
                    misses=torch.from_numpy(np.flatnonzero(~target_done)))
