"""The ``sahmr`` method: image + person box + intrinsics + scene points -> mesh in the camera frame.

Importing this module builds nothing; :meth:`SAHMR.build` creates the network and loads weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import meshrec
from meshrec.body import JointRegressor
from meshrec.ops import joint_regression
from meshrec.scene.points import check_scene_scale
from meshrec_sahmr.scene import points_in_frustum, square_box

__all__ = ["H36M_JOINT_NAMES", "SAHMR", "crop_square"]

CROP_SIZE = 224
H36M_JOINT_NAMES = ("pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
                    "torso", "neck", "nose", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
                    "right_elbow", "right_wrist")


def crop_square(image: torch.Tensor, bbx_lurb: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """SA-HMR's crop (``squared_crop_and_resize``): the square [left, up, right, bottom] of ``image``
    (3, H, W) resized to (3, size, size) by an affine warp with bilinear sampling, black outside.
    As OpenCV's warpAffine with src corners (l, u) -> (0, 0), (r, u) -> (size - 1, 0)."""
    _, height, width = image.shape
    steps = torch.arange(size, dtype=torch.float64, device=image.device)
    xs = bbx_lurb[0].double() + steps * (bbx_lurb[2] - bbx_lurb[0]).double() / (size - 1)
    ys = bbx_lurb[1].double() + steps * (bbx_lurb[3] - bbx_lurb[1]).double() / (size - 1)
    grid = torch.stack(torch.broadcast_tensors((2 * xs[None, :] + 1) / width - 1, (2 * ys[:, None] + 1) / height - 1), -1)
    return F.grid_sample(image[None], grid[None].to(image.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0]


class SAHMR(meshrec.Method):
    """SA-HMR with the authors' released weights (RICH or PROX).

    Per person box (x1, y1, x2, y2; without boxes the whole image), the square of side
    ``bbox_scale * max(w, h)`` around the box centre is resized to 224 x 224 (SA-HMR's test crop),
    the scene points inside that square's frustum (0.5 to 12.5 m) go to RCNet, which finds the
    root and the contact points, and METRO-enhanced regresses the 6890 SMPL-topology vertices
    around the root. The output is in the camera frame, metres; joints are the 17 H36M joints
    regressed from the vertices. SA-HMR is not parametric: ``global_orient``, ``body_pose`` and
    ``betas`` are NaN, ``transl`` is the refined root (the H36M pelvis estimate).

    Extras per person: ``root_initial`` / ``root_refined`` (3,), ``contact_points`` (500, 3)
    camera frame with ``contact_part_ids`` (500,) (0 = none / padding, 1..7 = L_Leg, R_Leg,
    L_Hand, R_Hand, back, gluteus, thighs), ``num_contact_points``, ``crop_box`` (4,).
    """

    name = "sahmr"
    summary = "SA-HMR (CVPR 2023): scene-aware mesh recovery from an image, person box, intrinsics and scene points"
    inputs = frozenset({meshrec.Input.IMAGE, meshrec.Input.CAMERA, meshrec.Input.SCENE})
    optional_inputs = frozenset({meshrec.Input.BBOX})
    needs_checkpoint = True
    checkpoint_help = (
        "meshrec-sahmr reads SA-HMR's released checkpoints sahmr_rich_e30.pth or sahmr_prox_e30.pth (the Google "
        "Drive folder linked from github.com/zju3dv/SA-HMR's README), plus mesh_downsampling.npz and "
        "seg_part_info.npy from that repository (option support_dir)."
    )
    body_model_type = "smpl"
    batch_size = 4  # 2x the images/s of batch 1 on the 2-core CPU (benchmarks/RESULTS.md); upstream evaluates at 1
    joint_names = H36M_JOINT_NAMES
    options = (
        meshrec.Option("support_dir", "", "folder with SA-HMR's mesh_downsampling.npz and seg_part_info.npy "
                       "(default: the checkpoint's folder, then the body-model folders)"),
        meshrec.Option("rounding", "trunc", "SPVCNN downsampling division: trunc (what the released weights were "
                       "trained with) or floor", choices=("trunc", "floor")),
        meshrec.Option("contact_seed", 0, "seed of the 500-of-n contact point draw per person (-1: the global "
                       "generator, non-deterministic as upstream)"),
        meshrec.Option("empty_crop", "error", "no scene point within 1.25 m of the estimated root: error, or "
                       "frustum (use every point in the box frustum, as upstream)", choices=("error", "frustum")),
        meshrec.Option("bbox_scale", 1.15, "crop square side over the box's longer side (SA-HMR: 1.15)"),
        meshrec.Option("trust_checkpoint", False, "unpickle the checkpoint fully (only for files you trust)"),
    )

    @classmethod
    def build(cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device,
              **options: Any) -> "SAHMR":
        from meshrec_sahmr.checkpoint import load_sahmr_network
        from meshrec_sahmr.support import build_template, find_support_file, load_downsampling, load_part_ids

        options = {**{o.name: o.default for o in cls.options}, **options}
        if not options["bbox_scale"] > 0:
            raise ValueError(f"bbox_scale must be positive, got {options['bbox_scale']}")
        if body_model is None:
            raise ValueError("method 'sahmr' builds its template from the neutral SMPL: pass body_model=...")
        network = load_sahmr_network(checkpoint, trust=options["trust_checkpoint"], rounding=options["rounding"])
        folders = [options["support_dir"] or None, checkpoint.parent if checkpoint is not None else None]
        downsampling = load_downsampling(find_support_file("mesh_downsampling.npz", folders))
        pids = load_part_ids(find_support_file("seg_part_info.npy", folders))
        regressor_file = (find_support_file("J_regressor_h36m_correct.npy", folders, required=False)
                          or find_support_file("J_regressor_h36m.npy", folders))
        regressor = torch.as_tensor(np.load(regressor_file, allow_pickle=False), dtype=torch.float64)
        if regressor.shape != (17, 6890):
            raise ValueError(f"the H36M joint regressor must be (17, 6890), got {tuple(regressor.shape)}")
        joints14, verts431 = build_template(body_model, regressor.to(body_model.v_template.device), downsampling)
        network.metro_enhanced.set_template(joints14.float(), verts431.float(), pids)
        method = cls(network.to(device).eval(), body_model, device, **options)
        method.regressor = regressor.float().to(device)  # dense (17, 6890), for the evaluators
        method.joint_regressor = JointRegressor(regressor).to(device)  # the same, sparse, for predictions
        return method

    def check_sample(self, sample: meshrec.Sample) -> None:
        camera = np.asarray(sample.camera)
        if camera.shape != (3, 3):
            raise ValueError(f"{sample.source}: camera must be the (3, 3) intrinsics K in pixels, got shape {camera.shape}")
        if not np.isfinite(camera).all() or camera[0, 0] <= 0 or camera[1, 1] <= 0:
            raise ValueError(f"{sample.source}: camera K must be finite with positive focal lengths, got {camera.tolist()}")
        try:
            check_scene_scale(torch.as_tensor(np.asarray(sample.scene)))
        except ValueError as error:
            raise ValueError(f"{sample.source}: {error}. The scene is (N, 3) points in the camera frame (x right, "
                             "y down, z forward), metres: e.g. meshrec.scene.points_from_depth(depth, K) for a depth "
                             "map, meshrec.scene.sample_mesh_points('scan.ply') for a mesh") from None

    def _inputs(self, samples: list[meshrec.Sample]):
        crops, boxes, cameras, clouds, owners = [], [], [], [], []
        dtype = next(self.model.parameters()).dtype
        for index, sample in enumerate(samples):
            self.check_sample(sample)
            image = torch.from_numpy(np.ascontiguousarray(sample.image())).to(self.device)
            image = image.permute(2, 0, 1).to(dtype) / 255.0
            height, width = image.shape[-2:]
            person_boxes = (torch.as_tensor(np.asarray(sample.bbox), dtype=torch.float64) if sample.bbox is not None
                            else torch.tensor([[0.0, 0.0, width, height]], dtype=torch.float64))
            K = torch.as_tensor(np.asarray(sample.camera), dtype=dtype, device=self.device)
            scene = torch.as_tensor(np.asarray(sample.scene), dtype=dtype, device=self.device)
            for person, box in enumerate(person_boxes):
                lurb = square_box(box, self.options["bbox_scale"]).to(self.device, dtype)
                frustum = points_in_frustum(scene, lurb, K)
                if len(frustum) == 0:
                    raise ValueError(
                        f"{sample.source}: no scene point lies in the frustum of person box {person} "
                        f"({box.tolist()} px, depth 0.5 to 12.5 m): is the scene in this camera's frame (x right, "
                        "y down, z forward, metres) and does it cover the person?")
                crops.append(crop_square(image, lurb))
                boxes.append(lurb)
                cameras.append(K)
                clouds.append(frustum)
                owners.append(index)
        return (torch.stack(crops), torch.stack(boxes), torch.stack(cameras), clouds,
                torch.tensor(owners, device=self.device))

    def predict_batch(self, samples: list[meshrec.Sample]) -> list[meshrec.Prediction]:
        image, boxes, K, clouds, owner = self._inputs(samples)
        rc = self.model.rcnet(image, boxes, K, clouds)
        if self.options["empty_crop"] == "error" and bool(rc.crop_fell_back.any()):
            person = int(rc.crop_fell_back.nonzero()[0, 0])
            root = rc.pred_c_pelvis[person, 0].tolist()
            raise ValueError(
                f"{samples[int(owner[person])].source}: no scene point within {self.model.rcnet.r_keep} m of the "
                f"estimated root ({', '.join(f'{v:.2f}' for v in root)}) m, camera frame: the scene does not reach the "
                "person (check its frame and units, metres), or pass empty_crop='frustum' to use every point in "
                "the box frustum as upstream does")
        seed = self.options["contact_seed"]
        generators = None if seed < 0 else [torch.Generator().manual_seed(seed) for _ in range(len(image))]
        out = self.model.mesh_from_root(image, rc, generators)
        vertices = out.pred_c_verts
        joints = joint_regression(vertices, self.joint_regressor.sparse().to(dtype=vertices.dtype))
        people = len(vertices)
        nan = vertices.new_full((), float("nan"))
        root = rc.pred_c_pelvis_refined[:, 0]
        prediction = meshrec.Prediction(
            vertices=vertices, joints=joints, global_orient=nan.expand(people, 3, 3).clone(),
            body_pose=nan.expand(people, 23, 3, 3).clone(), betas=nan.expand(people, 10).clone(), transl=root,
            scores=torch.ones(people, device=vertices.device), method=self.name,
            faces=getattr(self.body_model, "faces_tensor", None), joint_names=self.joint_names,
            extras={"root_initial": rc.pred_c_pelvis[:, 0], "root_refined": root, "contact_points": out.pred_c_pcSeg,
                    "contact_part_ids": out.pcSeg_pids, "num_contact_points": out.num_contact_points,
                    "crop_box": boxes},
        )
        return prediction.split(owner, len(samples), shared=())
