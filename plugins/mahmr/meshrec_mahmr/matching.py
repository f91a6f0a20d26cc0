"""Greedy 2D matching with IoU gating, exactly as MA-HMR / SAT-HMR (and AGORA, BEV) evaluate.

Meant to move into :mod:`meshrec.metrics.matching` beside the Hungarian :func:`match_people`
(it returns the same :class:`meshrec.metrics.matching.Matching`); it lives here until then.

The upstream procedure (``utils/evaluation.py: match_2d_greedy``, RH's
``engines/funcs/RH_evaluation/matching.py``), kept step by step because the order of pairs
decides the result on crowded images:

* the error of a (prediction, ground truth) pair is ``numpy.linalg.norm(P - G, 2)`` of the
  (J, 2) keypoint difference: for a matrix that is the *spectral* norm (largest singular
  value), not the Frobenius norm; ``pair_error="frobenius"`` gives the latter;
* pairs are visited cheapest first; a pair whose two people are both free and whose keypoint
  boxes overlap with IoU >= ``iou_thresh`` is matched; a visited pair below the IoU threshold
  counts one "false positive" event that only shortens the search (upstream's counter): the
  search stops when every ground truth is matched or matches + events reach the predictions;
* keypoint boxes are (min, max) of the given points with the pixel-inclusive +1 convention.

Unmatched predictions are the false positives, unmatched ground truths the misses.
"""

from __future__ import annotations

import numpy as np
import torch

from meshrec.metrics.matching import Matching

__all__ = ["greedy_match_2d", "keypoint_box_iou"]


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
