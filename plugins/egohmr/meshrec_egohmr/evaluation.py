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

Scene cubes (``cubes=``): ``"predict-time"`` (default) crops them in the method from the stage-1
cloud around its stage-1 translation (upstream crops the full scene mesh offline with a random
yaw); ``"from_pred"`` reads EgoHMR's offline test cubes (``Egohmr_scene_preprocess_cube_s2_from_
pred_release``, cropped around EgoHMR's stage-1 translation: what its ``test_egohmr.py`` uses),
``"from_gt"`` those cropped around the ground truth (:class:`meshrec_egohmr.egobody.EgoBodyCubes`).
The same cube feeds stage 2 and the scene metrics, as upstream. Other differences from
``test_egohmr.py``, all documented in the plugin README: the collision ratio uses meshrec's exact
inside-mesh test (upstream: COAP's learned occupancy > 0.5).

Sampling noise is seeded per frame (``seed``, default the method's ``seed`` option or 0, hashed
with the frame's index: :func:`meshrec_egohmr.method.item_seed`), so the numbers do not depend on
the batch size or on how ``torchrun`` shards the frames (``shard``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

import meshrec
from meshrec import distributed
from meshrec.metrics import evaluator as make_evaluator
from meshrec.metrics import image_visibility
from meshrec_egohmr.egobody import EgoBodyCubes, EgoBodyScenes, read_annotations
from meshrec_egohmr.scene import crop_scene_cube

__all__ = ["CUBE_CHOICES", "evaluate_egobody"]

PROTOCOL = "egobody-egohmr"
CUBE_CHOICES = ("predict-time", "from_pred", "from_gt")


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


def _limit(cube: torch.Tensor, count: int) -> torch.Tensor:
    """The method's uniform sub-sampling of a given cube to ``cube_points``."""
    return cube[:: len(cube) // count][:count] if len(cube) > count else cube


def evaluate_egobody(method: meshrec.Method, data_root: Path, body_model: Path | None, batch_size: int, progress: bool,
                     split: str = "test", limit: int | None = None, scene_metrics: bool = True,
                     cubes: str = "predict-time", seed: int | None = None, shard: tuple[int, int] | None = None,
                     **options: Any) -> dict[str, Any]:
    """Runs ``method`` (``egohmr`` or ``prohmr-scene``) on EgoBody's egocentric ``split`` and
    reports the egobody-egohmr metrics.

    Args:
        data_root: EgoBody's folder (see :mod:`meshrec_egohmr.egobody`).
        body_model: folder with SMPL_MALE.pkl and SMPL_FEMALE.pkl (ground truth).
        limit: evaluate the first ``limit`` frames only.
        scene_metrics: also compute the collision and contact ratios (slower).
        cubes: "predict-time", "from_pred" or "from_gt" (see the module docstring).
        seed: base seed of the per-frame sampling (None: the method's ``seed`` option, or 0).
        shard: ``(rank, world_size)`` in a torchrun job (given by :func:`meshrec.evaluate`): this
            rank runs frames rank, rank + W, ...; the per-frame values are merged in frame order
            (:func:`meshrec.distributed.merge_evaluator`), so every rank returns the
            single-process numbers.
    """
    if options:
        raise TypeError(f"egobody-egohmr has no options {sorted(options)}; it takes split, limit, scene_metrics, "
                        "cubes and seed")
    if cubes not in CUBE_CHOICES:
        raise ValueError(f"cubes must be one of {CUBE_CHOICES}, got {cubes!r}")
    from meshrec.body import SMPL

    data_root = Path(data_root)
    annotations = read_annotations(data_root, split)
    scenes = EgoBodyScenes(data_root, split)
    cube_reader = None if cubes == "predict-time" else EgoBodyCubes(data_root, split, cubes, transforms=scenes.transforms)
    models = {0: SMPL(body_model, gender="male", create_transl=False).double(),
              1: SMPL(body_model, gender="female", create_transl=False).double()}
    evaluator = make_evaluator(PROTOCOL)
    count = len(annotations) if limit is None else min(int(limit), len(annotations))
    base_seed = int(seed) if seed is not None else int(method.options.get("seed") or 0)
    parameters = inspect.signature(method.predict_batch).parameters
    # the keywords predict_batch takes beyond the samples (all of them if it takes **kwargs)
    accepted = {"cubes", "seeds"} if any(p.kind is p.VAR_KEYWORD for p in parameters.values()) else set(parameters)
    cube_points = int(method.options.get("cube_points", 20000))
    boxes = annotations.boxes_xyxy()
    rank, world_size = shard if shard is not None else (0, 1)
    indices = distributed.shard_indices(count, rank, world_size)
    # padded_batches / GlobalProgress: every rank runs as many batches (a collective per batch)
    with distributed.GlobalProgress(count, enabled=progress, unit="frame", desc="egobody") as bar:
        for batch in distributed.padded_batches(indices, batch_size):
            if batch:
                _evaluate_batch(method, annotations, scenes, cube_reader, models, evaluator, data_root, boxes,
                                np.asarray(batch), base_seed, accepted, scene_metrics, cube_points)
            bar.update(len(batch))
    if shard is not None:
        evaluator = distributed.merge_evaluator(evaluator, indices)
    report = evaluator.compute()
    report["frames"] = count
    report["cubes"] = cubes
    return report


def _evaluate_batch(method, annotations, scenes, cube_reader, models, evaluator, data_root, boxes, index, base_seed,
                    accepted, scene_metrics, cube_points) -> None:
    # Sample.index = the frame's index in the split: the per-frame seeds hash it
    samples = [meshrec.Sample(index=int(i), source=annotations.imgname[i], image_source=data_root / annotations.imgname[i],
                              bbox=boxes[i:i + 1], camera=annotations.intrinsics(i),
                              scene=scenes.points(annotations.imgname[i]), keypoints=annotations.keypoints[i:i + 1])
               for i in index]
    for sample in samples:
        method.check_sample(sample)
    given = None if cube_reader is None else [cube_reader.points(annotations.imgname[i]) for i in index]
    extra: dict[str, Any] = {}
    if "seeds" in accepted:
        extra["seeds"] = [base_seed] * len(samples)
    if given is not None and "cubes" in accepted:
        extra["cubes"] = given
    with torch.inference_mode():
        predictions = method.predict_batch(samples, **extra)
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
            if given is not None:  # the cube stage 2 saw (upstream's metrics use the same cube)
                cube = _limit(torch.as_tensor(given[k], dtype=torch.float64), cube_points)
            else:
                full = torch.as_tensor(samples[k].scene, dtype=torch.float64)
                cube = crop_scene_cube(full, prediction.transl[0].double().cpu(),
                                       method.options.get("cube_size", 2.0), cube_points)
            scene = cube[None]
        evaluator.update(pred_joints, target_joints[k:k + 1], joint_visible, pred_vertices=pred_vertices,
                         target_vertices=target_vertices[k:k + 1], vertex_visible=vertex_visible, scene_points=scene,
                         faces=method.body_model.faces_tensor.cpu() if scene_metrics else None)
    for sample in samples:
        sample.release()
