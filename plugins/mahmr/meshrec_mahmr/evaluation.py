"""Multi-person evaluation as MA-HMR reports it: Relative Human (detection P/R/F1, mPCKh, PCRD),
matched-person 3D errors (AGORA / BEDLAM style MPJPE, PA-MPJPE, MVE), and MuPoTS' 3DPCK with
bone rescaling.

Relative Human (``RH_dir/{split}_annots.npz`` with ``annots``: image name -> list of people,
each ``{"bbox", "kp2d" (19 x 3, 14 x 3 or None), "depth_id", "age"}``; images in
``RH_dir/images/``), as upstream's ``engines/funcs/RH_evaluation/evaluation.py`` (from BEV):

* ground truth keypoints become CrowdPose-14 with upstream's name mapping, which has no
  "Neck_LSP" in the 19-point sets, so that joint is always invalid there; invisible joints are
  set to -2 (and still enter the keypoint box, as upstream);
* predictions: 14 CrowdPose joints (SMPL shoulders..ankles, plus head top and neck from SPIN's
  ``J_regressor_extra``), projected, in original pixels; depth = translation z;
* greedy matching (:func:`meshrec.metrics.matching.greedy_match_2d`, IoU >= 0.05, error over the
  valid joints); P / R / F1 from the counts;
* mPCKh: matched joints whose error is under 0.143 x the diagonal of the visible GT keypoints;
* PCRD_0.2 over all matched pairs of an image, denominator + 0.3 per missed person; per age,
  a pair counts for an age if either person has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import meshrec
from meshrec import distributed
from meshrec.body import JointRegressor
from meshrec.io.safe_pickle import load_npz
from meshrec.metrics.matching import detection_scores, greedy_match_2d

__all__ = ["AGES", "RHAccumulator", "RHImage", "crowdpose14_joints", "evaluate_rh", "matched_errors",
           "pck3d_bone_rescaled", "read_relative_human"]

AGES = ("adult", "teen", "kid", "baby")
CROWDPOSE_14 = ("L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist", "L_Hip", "R_Hip", "L_Knee",
                "R_Knee", "L_Ankle", "R_Ankle", "Head_top", "Neck_LSP")
BK_19 = ("Head_top", "Nose", "Neck", "L_Eye", "R_Eye", "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist",
         "R_Wrist", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle", "L_BigToe", "R_BigToe")
OCHUMAN_19 = ("R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Hip", "R_Knee", "R_Ankle",
              "L_Hip", "L_Knee", "L_Ankle", "Head_top", "Neck", "R_Ear", "L_Ear", "Nose", "R_Eye", "L_Eye")
# SMPL joints (24) then SPIN's 9 extra joints (24 + 2 = neck LSP, 24 + 3 = head top LSP)
SMPL_TO_CROWDPOSE14 = (16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8, 27, 26)


def _mapping(source: tuple[str, ...]) -> np.ndarray:
    return np.array([source.index(name) if name in source else -1 for name in CROWDPOSE_14])


@dataclass
class RHImage:
    """One Relative Human image: keypoints (G, 14, 3) CrowdPose-14 (x, y, visible; invalid -2),
    depth layers (G,), age classes (G,) (0 adult .. 3 baby), and the annotation index of each."""

    name: str
    path: Path
    keypoints: np.ndarray
    depth_ids: np.ndarray
    ages: np.ndarray
    indices: np.ndarray


def read_relative_human(root: str | Path, split: str = "test") -> list[RHImage]:
    """Relative Human as upstream prepares it (``{split}_annots.npz`` + ``images/``).

    Raises FileNotFoundError naming the annotation file when it is missing."""
    root = Path(root)
    path = root / f"{split}_annots.npz"
    if not path.is_file():
        raise FileNotFoundError(f"Relative Human annotations {path} not found: the folder needs {split}_annots.npz "
                                "and images/ (https://github.com/Arthur151/Relative_Human)")
    # The file is a pickled dict inside an npz (upstream's format): read through meshrec's
    # restricted unpickler (array data only, bounded), never np.load(allow_pickle=True), which
    # would run whatever code a downloaded file asks for.
    annots = load_npz(path, keys=["annots"], required=["annots"])["annots"]
    to_bk, to_och = _mapping(BK_19), _mapping(OCHUMAN_19)
    images = []
    for name, people in annots.items():
        keypoints, depth_ids, ages, indices = [], [], [], []
        for index, person in enumerate(people):
            if person.get("kp2d") is None:
                continue
            joints = np.array(person["kp2d"], dtype=np.float64).reshape(-1, 3)
            joints[joints[:, 2] == 0] = -2.0
            joints[:, 2] = joints[:, 2] > 0
            if len(joints) == 19:
                mapper = to_bk if len(Path(name).stem) == 7 else to_och  # BK image names have 7 characters
                joints = joints[mapper]
                joints[to_bk == -1] = -2.0  # upstream uses the BK mapper's gaps for both sets
            elif len(joints) != 14:
                raise ValueError(f"{path}: {name} person {index} has {len(joints)} keypoints, expected 14 or 19")
            keypoints.append(joints)
            depth_ids.append(int(person["depth_id"]))
            ages.append(int(person["age"]))
            indices.append(index)
        images.append(RHImage(name=name, path=root / "images" / name,
                              keypoints=np.array(keypoints).reshape(-1, 14, 3), depth_ids=np.array(depth_ids, dtype=np.int64),
                              ages=np.array(ages, dtype=np.int64), indices=np.array(indices, dtype=np.int64)))
    return images


def _pckh(gt: np.ndarray, pred: np.ndarray, thresh: float = 0.143) -> float | None:
    """Fraction of the visible joints (x, y > -1) within thresh x the visible keypoints' box
    diagonal; None with fewer than 2 visible joints (then upstream records -1 and keeps it in
    the mean, which :class:`RHAccumulator` reproduces)."""
    visible = (gt > -1).all(-1)
    if visible.sum() < 2:
        return None
    points = gt[visible]
    scale = np.hypot(points[:, 0].max() - points[:, 0].min(), points[:, 1].max() - points[:, 1].min())
    error = np.linalg.norm(gt[visible] - pred[visible], axis=-1)
    return float((error / scale < thresh).mean())


@dataclass
class RHAccumulator:
    """Counts of Relative Human over images; :meth:`compute` gives the reported numbers."""

    predictions: int = 0
    true_positives: int = 0
    false_positives: int = 0
    misses: int = 0
    pckh: list[float] = field(default_factory=list)
    depth_pairs: list[tuple[bool, int, int]] = field(default_factory=list)  # (correct, age_i, age_j)
    missed_ages: list[int] = field(default_factory=list)

    def update(self, image: RHImage, pred_keypoints: np.ndarray, pred_depths: np.ndarray,
               threshold: float = 0.2) -> None:
        """pred_keypoints (P, 14, 2) original pixels, pred_depths (P,) metres."""
        people = len(image.keypoints)
        pred_keypoints = np.asarray(pred_keypoints, dtype=np.float64).reshape(-1, 14, 2)
        if len(pred_keypoints) == 0 or people == 0:
            self.misses += people
            self.missed_ages += image.ages.tolist()
            self.predictions += len(pred_keypoints)
            self.false_positives += len(pred_keypoints)
            return
        valid = image.keypoints[:, :, 2] > 0
        has_valid = valid.sum(-1) > 0
        gt = image.keypoints[has_valid]
        ages, layers = image.ages[has_valid], image.depth_ids[has_valid]
        match = greedy_match_2d(pred_keypoints, gt[:, :, :2], iou_thresh=0.05, valid=valid[has_valid])
        self.predictions += len(pred_keypoints)
        self.false_positives += len(match.false_positives)
        self.misses += len(match.misses)
        self.missed_ages += ages[match.misses.numpy()].tolist()
        self.true_positives += match.true_positives
        if match.true_positives == 0:
            return
        p, g = match.pairs[:, 0].numpy(), match.pairs[:, 1].numpy()
        for pi, gi in zip(p, g):
            value = _pckh(gt[gi, :, :2], pred_keypoints[pi])
            self.pckh.append(-1.0 if value is None else value)
        depths, layer, age = np.asarray(pred_depths, dtype=np.float64)[p], layers[g], ages[g]
        known = layer != -1
        depths, layer, age = depths[known], layer[known], age[known]
        for i in range(len(depths)):
            for j in range(i + 1, len(depths)):
                dz, dl = depths[j] - depths[i], layer[j] - layer[i]
                correct = abs(dz) < threshold if dl == 0 else (dz < -threshold if dl < 0 else dz > threshold)
                self.depth_pairs.append((bool(correct), int(age[i]), int(age[j])))

    def compute(self, miss_weight: float = 0.3) -> dict[str, float]:
        tp = self.true_positives
        scores = detection_scores(tp, self.false_positives, self.misses)
        # upstream's RH script counts TP as predictions - misses (its compute_prf1 is shared
        # with AGORA, where the count is of ground truths); reported beside the correct value
        upstream = detection_scores(max(self.predictions - self.misses, 0), self.false_positives, self.misses)
        correct = np.array([c for c, _, _ in self.depth_pairs], dtype=bool)
        result = {"precision": scores.precision, "recall": scores.recall, "f1": scores.f1,
                  "mPCKh": float(np.mean(self.pckh)) if self.pckh else 0.0,
                  "PCRD_0.2": float(correct.sum() / (len(correct) + miss_weight * len(self.missed_ages)))
                  if len(correct) or self.missed_ages else 0.0}
        missed = np.array(self.missed_ages, dtype=np.int64)
        for age_index, age in enumerate(AGES):
            mask = np.array([a == age_index or b == age_index for _, a, b in self.depth_pairs], dtype=bool)
            if mask.sum():
                result[f"PCRD_0.2_{age}"] = float(correct[mask].sum() / (mask.sum() + miss_weight * (missed == age_index).sum()))
        result.update(true_positives=tp, false_positives=self.false_positives, misses=self.misses,
                      precision_upstream=upstream.precision, recall_upstream=upstream.recall, f1_upstream=upstream.f1)
        return result


def crowdpose14_joints(prediction: meshrec.Prediction, extra_regressor: JointRegressor) -> torch.Tensor:
    """(P, 14, 3) CrowdPose-14 joints in the camera frame: SMPL's joints plus SPIN's extra
    joints (``J_regressor_extra``, 9 joints) regressed from the vertices."""
    extra = extra_regressor.to(prediction.vertices.device, prediction.vertices.dtype)(prediction.vertices)
    return torch.cat([prediction.joints[:, :24], extra], dim=1)[:, list(SMPL_TO_CROWDPOSE14)]


def evaluate_rh(method: meshrec.Method, data_root: Path, body_model: Path | None, batch_size: int, progress: bool,
                split: str = "test", limit: int | None = None, shard: tuple[int, int] | None = None,
                **options: Any) -> dict[str, Any]:
    """Runs ``method`` (mahmr / sathmr) on Relative Human and returns P / R / F1, mPCKh and PCRD.

    Args:
        method: a loaded multi-person method returning ``extras["intrinsics"]``.
        data_root: the Relative Human folder (``{split}_annots.npz`` and ``images/``).
        body_model: folder of ``J_regressor_extra.npy`` (head top and neck).
        batch_size: images per :func:`meshrec.predict` call.
        progress: show a progress bar.
        split: which annotation file.
        limit: only the first ``limit`` images (a quick check, not the protocol).
        shard: ``(rank, world_size)`` in a torchrun job (given by :func:`meshrec.evaluate`):
            this rank predicts images rank, rank + W, ...; every rank then gets every image's
            projected keypoints and depths in image order
            (:func:`meshrec.distributed.gather_indexed`) and matches them as one process does,
            so the counts and the per-match tables (mPCKh, depth pairs) are the single-process
            ones, in its order.
    """
    if options:
        raise TypeError(f"the rh evaluation takes split and limit, got {sorted(options)}")
    images = read_relative_human(data_root, split)
    images = images[:limit] if limit is not None else images
    regressor = JointRegressor.from_file("J_regressor_extra.npy", body_model)
    rank, world_size = shard if shard is not None else (0, 1)
    mine = distributed.shard_indices(len(images), rank, world_size)
    outputs = []  # per image of this rank: (P, 14, 2) keypoints in original pixels, (P,) depths in metres
    # padded_batches / GlobalProgress: every rank runs as many batches (a collective per batch)
    with distributed.GlobalProgress(len(images), enabled=progress, unit="image", desc="Relative Human") as bar:
        for batch in distributed.padded_batches(mine, batch_size):
            if batch:
                predictions = meshrec.predict([str(images[i].path) for i in batch], method=method)
                predictions = predictions if isinstance(predictions, list) else [predictions]
                for prediction in predictions:
                    joints = crowdpose14_joints(prediction, regressor).double()
                    K = prediction.extras["intrinsics"].double()
                    homo = joints @ K.T
                    outputs.append(((homo[..., :2] / (homo[..., 2:] + 1e-6)).cpu().numpy(),
                                    prediction.transl[:, 2].double().cpu().numpy()))
            bar.update(len(batch))
    if shard is not None:
        outputs = distributed.gather_indexed(mine, outputs, total=len(images))
    accumulator = RHAccumulator()  # fed in image order, as one process feeds it
    for image, (keypoints, depths) in zip(images, outputs):
        accumulator.update(image, keypoints, depths)
    return {**accumulator.compute(), "num_images": len(images), "split": split}


def matched_errors(pred_joints: torch.Tensor, gt_joints: torch.Tensor, pred_vertices: torch.Tensor | None = None,
                   gt_vertices: torch.Tensor | None = None, root: tuple[int, ...] = (1, 2)) -> dict[str, torch.Tensor]:
    """Per matched person, millimetres: MPJPE and PA-MPJPE of joints (P, J, 3) and MVE of
    vertices, after subtracting the root (AGORA / BEDLAM in MA-HMR: the hips' midpoint, SMPL
    joints 1 and 2). PA uses a similarity Procrustes alignment (Umeyama with scale)."""
    from meshrec.metrics.functional import pa_mpjpe

    def centred(points, joints):
        return points - joints[:, list(root)].mean(1, keepdim=True)

    pred_j, gt_j = centred(pred_joints.double(), pred_joints.double()), centred(gt_joints.double(), gt_joints.double())
    out = {"mpjpe": (pred_j - gt_j).norm(dim=-1).mean(-1) * 1000,
           "pa_mpjpe": pa_mpjpe(pred_j, gt_j, per_joint=True).mean(-1) * 1000}
    if pred_vertices is not None and gt_vertices is not None:
        pv = centred(pred_vertices.double(), pred_joints.double())
        gv = centred(gt_vertices.double(), gt_joints.double())
        out["mve"] = (pv - gv).norm(dim=-1).mean(-1) * 1000
    return out


# MuPoTS / MPI-INF-3DHP 17 joints (upstream mupots_utils.py, 0-based): parents and the order
# bones are rescaled in, from the hip outwards.
MPI_PARENTS = np.array([2, 16, 2, 3, 4, 2, 6, 7, 15, 9, 10, 15, 12, 13, 15, 15, 2]) - 1
MPI_TRAVERSAL = np.array([15, 16, 2, 1, 17, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]) - 1
MPI_PCK_JOINTS = np.array([0, 1, 2, 5, 3, 6, 4, 7, 8, 11, 9, 12, 10, 13])  # head .. ankles (14)


def pck3d_bone_rescaled(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, thresh: float = 150.0,
                        root: int = 14) -> float:
    """MuPoTS 3DPCK of one person: both poses (17, 3) in millimetres made relative to the root
    (pelvis, 14), the prediction's bones rescaled to the ground truth's lengths from the hip
    outwards, then the fraction of the 14 evaluated joints (masked by ``mask``) within ``thresh``.
    A missed person (``pred`` None) scores 0 where visible joints exist."""
    gt = np.asarray(gt, dtype=np.float64)
    gt = gt - gt[root]
    mask = np.ones(len(gt), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if pred is None:
        error = np.full(len(gt), 1e5)
    else:
        pred = np.asarray(pred, dtype=np.float64)
        pred = pred - pred[root]
        scaled = pred.copy()
        for joint in MPI_TRAVERSAL:
            parent = MPI_PARENTS[joint]
            bone = pred[joint] - pred[parent]
            scaled[joint] = scaled[parent] + bone * np.linalg.norm(gt[joint] - gt[parent]) / (np.linalg.norm(bone) + 1e-8)
        error = np.linalg.norm(scaled - gt, axis=-1)
    err, m = error[MPI_PCK_JOINTS], mask[MPI_PCK_JOINTS].astype(np.float64)
    return float(1 - np.sum(err * m > thresh) / (m.sum() + 1e-8))
