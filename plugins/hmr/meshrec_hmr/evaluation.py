"""3DPW test set as mmhuman3d reports it (``meshrec eval --dataset pw3d``).

Protocol (``meshrec.metrics`` protocol "3dpw-mmhuman3d", see docs/metrics.md): every person
and frame of mmhuman3d's ``pw3d_test.npz``; ground truth through the gendered SMPL models
('m' male, anything else female), prediction through the neutral one; joints from
``J_regressor_h36m.npy`` applied to the meshes; pelvis = H36M joint 0; the 14 LSP joints;
MPJPE and PA-MPJPE (per-frame similarity Procrustes) pooled over all joints and frames; PVE
with the prediction also through the ground truth's gendered model (mmhuman3d's quirk);
millimetres.

Crops follow mmhuman3d's test pipeline for HMR: a square of side max(w, h) of the file's box
(already enlarged by mmhuman3d's converter), no further scaling. Other methods crop as they do
in :func:`meshrec.predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import meshrec
from meshrec import distributed
from meshrec.metrics import evaluator as make_evaluator
from meshrec_hmr.pw3d import find_pw3d_annotations, read_pw3d_humandata

__all__ = ["evaluate_pw3d"]

PROTOCOL = "3dpw-mmhuman3d"


def _samples(annotations, data_root: Path, indices: list[int]) -> list[meshrec.Sample]:
    samples = []
    for position, index in enumerate(indices):
        x, y, w, h = annotations.boxes_xywh[index]
        path = annotations.image_paths[index]
        samples.append(meshrec.Sample(index=position, source=path, image_source=data_root / path,
                                      bbox=np.array([[x, y, x + w, y + h]])))
    return samples


def _predicted_parameters(method: meshrec.Method, samples: list[meshrec.Sample]) -> dict[str, torch.Tensor]:
    """SMPL parameters of the one person per sample: global_orient (B, 3, 3), body_pose
    (B, 23, 3, 3), betas (B, 10)."""
    if hasattr(method, "regress"):  # HMR: mmhuman3d's test crop (the file's boxes as they are)
        out = method.regress(samples, bbox_scale=1.0)
        rotmat, betas = out["rotmat"], out["betas"]
        return {"global_orient": rotmat[:, 0], "body_pose": rotmat[:, 1:], "betas": betas}
    predictions = method.predict_batch(samples)
    if any(p.num_people != 1 for p in predictions):
        raise ValueError(f"method {method.name!r} returned other than one person for a 3DPW box")
    return {"global_orient": torch.cat([p.global_orient for p in predictions]),
            "body_pose": torch.cat([p.body_pose for p in predictions]),
            "betas": torch.cat([p.betas for p in predictions])}


def evaluate_pw3d(method: meshrec.Method, data_root: Path, body_model: Path | None, batch_size: int, progress: bool,
                  annotations: str | Path | None = None, limit: int | None = None,
                  shard: tuple[int, int] | None = None, **options: Any) -> dict[str, Any]:
    """Runs ``method`` on the 3DPW test set and returns MPJPE, PA-MPJPE and PVE in mm.

    Args:
        method: a loaded single-person image method (``hmr``).
        data_root: the 3DPW folder (with ``imageFiles/``).
        body_model: folder of the SMPL files (male, female, neutral) and ``J_regressor_h36m.npy``.
        batch_size: frames per batch.
        progress: show a progress bar.
        annotations: the HumanData file, if not in the usual places (see ``find_pw3d_annotations``).
        limit: evaluate only the first ``limit`` frames (a quick check; not the protocol).
        shard: ``(rank, world_size)`` in a torchrun job (given by :func:`meshrec.evaluate`):
            this rank runs frames rank, rank + W, ...; the ranks' per-frame errors are merged
            in frame order (:func:`meshrec.distributed.merge_evaluator`), so every rank returns
            the single-process numbers.
    """
    if options:
        raise TypeError(f"the pw3d evaluation takes annotations and limit, got {sorted(options)}")
    path = find_pw3d_annotations(Path(data_root), annotations)
    data = read_pw3d_humandata(path)
    count = len(data) if limit is None else min(int(limit), len(data))
    evaluator = make_evaluator(PROTOCOL, body_model=body_model)
    rank, world_size = shard if shard is not None else (0, 1)
    indices = distributed.shard_indices(count, rank, world_size)
    # padded_batches / GlobalProgress: every rank runs as many batches (a collective per batch)
    with distributed.GlobalProgress(count, enabled=progress, unit="frame", desc="3DPW") as bar:
        for batch in distributed.padded_batches(indices, batch_size):
            if batch:
                samples = _samples(data, Path(data_root), batch)
                with torch.inference_mode():
                    predicted = _predicted_parameters(method, samples)
                target = {"global_orient": torch.as_tensor(data.global_orient[batch]),
                          "body_pose": torch.as_tensor(data.body_pose[batch].reshape(-1, 69)),
                          "betas": torch.as_tensor(data.betas[batch])}
                evaluator.update_smpl(pred={k: v.detach().cpu() for k, v in predicted.items()}, target=target,
                                      gender=[data.genders[i] for i in batch])
                for sample in samples:
                    sample.release()
            bar.update(len(batch))
    if shard is not None:
        evaluator = distributed.merge_evaluator(evaluator, indices)
    metrics = evaluator.compute()
    return {**metrics, "num_samples": count, "protocol": PROTOCOL, "annotations": str(path),
            "complete": count == len(data)}
