"""EgoBody's egocentric test set as EgoHMR reports it (``meshrec eval --dataset egobody-egohmr``).

Protocol (``meshrec.metrics`` protocol "egobody-egohmr", :class:`meshrec.metrics.EgoBodyEvaluator`):
every frame of ``egocapture_test_smpl.npz``; ground truth through the gendered SMPL ('m' male,
else female) with the annotated translation; prediction = the method's samples (neutral SMPL +
the stage-1 translation); visibility = the ground truth's joints / vertices projecting into the
1920 x 1080 image (truncation only); G-MPJPE, MPJPE, PA-MPJPE (visible-joint alignment with the
invisible joints zeroed, EgoHMR's quirk), V2V, each also over visible / invisible elements pooled
over the set; std and APD over samples (APD halved, as printed upstream); collision ratio
(fraction of the cube's points inside the body) and contact ratio (squared nearest distance
< 0.02, i.e. ~14 cm, EgoHMR's quirk). Millimetres.

Differences from ``test_egohmr.py``, all documented in the plugin README: the scene cube is cropped
by the method at predict time from the stage-1 cloud (upstream crops the full scene mesh offline
with a random yaw), the collision ratio uses meshrec's exact inside-mesh test (upstream: COAP's
learned occupancy > 0.5), and invisible joints' visibility comes from the file's OpenPose
keypoints as upstream does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import meshrec
from meshrec.metrics import evaluator as make_evaluator
from meshrec.metrics import image_visibility
from meshrec_egohmr.egobody import EgoBodyScenes, read_annotations
from meshrec_egohmr.scene import crop_scene_cube

__all__ = ["evaluate_egobody"]

PROTOCOL = "egobody-egohmr"


def _ground_truth(body_models: dict[int, Any], annotations, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    joints, vertices = [], []
    for i in index:
        model = body_models[int(annotations.gender[i])]
        dtype = model.v_template.dtype
        out = model(betas=torch.as_tensor(annotations.shape[i:i + 1], dtype=dtype),
                    global_orient=torch.as_tensor(annotations.global_orient[i:i + 1], dtype=dtype),
                    body_pose=torch.as_tensor(annotations.pose[i:i + 1], dtype=dtype))
        shift = torch.as_tensor(annotations.transl[i], dtype=dtype)
        joints.append(out.joints[:, :24] + shift)
        vertices.append(out.vertices + shift)
    return torch.cat(joints).double(), torch.cat(vertices).double()


def evaluate_egobody(method: meshrec.Method, data_root: Path, body_model: Path | None, batch_size: int, progress: bool,
                     split: str = "test", limit: int | None = None, scene_metrics: bool = True,
                     **options: Any) -> dict[str, Any]:
    """Runs ``method`` (``egohmr`` or ``prohmr-scene``) on EgoBody's egocentric ``split`` and
    reports the egobody-egohmr metrics.

    Args:
        data_root: EgoBody's folder (see :mod:`meshrec_egohmr.egobody`).
        body_model: folder with SMPL_MALE.pkl and SMPL_FEMALE.pkl (ground truth).
        limit: evaluate the first ``limit`` frames only.
        scene_metrics: also compute the collision and contact ratios (slower).
    """
    if options:
        raise TypeError(f"egobody-egohmr has no options {sorted(options)}; it takes split, limit, scene_metrics")
    from meshrec.body import SMPL

    data_root = Path(data_root)
    annotations = read_annotations(data_root, split)
    scenes = EgoBodyScenes(data_root, split)
    models = {0: SMPL(body_model, gender="male", create_transl=False).double(),
              1: SMPL(body_model, gender="female", create_transl=False).double()}
    evaluator = make_evaluator(PROTOCOL)
    count = len(annotations) if limit is None else min(limit, len(annotations))
    boxes = annotations.boxes_xyxy()
    starts = range(0, count, batch_size)
    for start in tqdm(starts, disable=not progress, desc="egobody"):
        index = np.arange(start, min(start + batch_size, count))
        samples = [meshrec.Sample(index=k, source=annotations.imgname[i], image_source=data_root / annotations.imgname[i],
                                  bbox=boxes[i:i + 1], camera=annotations.intrinsics(i),
                                  scene=scenes.points(annotations.imgname[i]), keypoints=annotations.keypoints[i:i + 1])
                   for k, i in enumerate(index)]
        for sample in samples:
            method.check_sample(sample)
        with torch.inference_mode():
            predictions = method.predict_batch(samples)
        target_joints, target_vertices = _ground_truth(models, annotations, index)
        for k, (i, prediction) in enumerate(zip(index, predictions)):
            focal = torch.tensor(annotations.fx[i], dtype=torch.float64)
            principal = torch.tensor([annotations.cx[i], annotations.cy[i]], dtype=torch.float64)
            joint_visible = image_visibility(target_joints[k:k + 1], focal, principal)
            vertex_visible = image_visibility(target_vertices[k:k + 1], focal, principal)
            pred_joints = prediction.extras["samples_joints"][:, :, :24].double().cpu()
            pred_vertices = prediction.samples.double().cpu()
            scene = None
            if scene_metrics:
                full = torch.as_tensor(samples[k].scene, dtype=torch.float64)
                cube = crop_scene_cube(full, prediction.transl[0].double().cpu(),
                                       method.options.get("cube_size", 2.0), method.options.get("cube_points", 20000))
                scene = cube[None]
            evaluator.update(pred_joints, target_joints[k:k + 1], joint_visible, pred_vertices=pred_vertices,
                             target_vertices=target_vertices[k:k + 1], vertex_visible=vertex_visible, scene_points=scene,
                             faces=method.body_model.faces_tensor.cpu() if scene_metrics else None)
        for sample in samples:
            sample.release()
    report = evaluator.compute()
    report["frames"] = count
    return report
