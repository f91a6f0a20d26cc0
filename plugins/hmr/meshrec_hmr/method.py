"""The ``hmr`` method: person crops -> HMR network -> SMPL in the camera frame."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import meshrec
from meshrec.body import SMPL_OUTPUT_JOINT_NAMES
from meshrec.camera import default_intrinsics, weak_perspective_to_translation
from meshrec.nn import crop_boxes, square_boxes
from meshrec_hmr.checkpoint import load_hmr_network

__all__ = ["HMR"]

CROP_SIZE = 224


class HMR(meshrec.Method):
    """HMR with mmhuman3d's weights.

    Per person box (x1, y1, x2, y2 after ``meshrec.predict``'s conversion), a square of side
    ``bbox_scale * max(w, h)`` around the box centre is resized to 224 x 224, normalised with
    ImageNet's mean and std, and regressed to SMPL rotations, betas and a weak-perspective crop
    camera. Without a box the whole image is the box (padded to a square, no extra scale). The
    crop camera becomes a camera-frame translation with the image's intrinsics (or
    :func:`meshrec.camera.default_intrinsics`), see :mod:`meshrec.camera`.

    Options: see ``options`` below (``meshrec.load_method("hmr", ..., option=value)``).
    """

    name = "hmr"
    summary = "HMR (ResNet-50, iterative regression), mmhuman3d / GTA-Human checkpoints"
    inputs = frozenset({meshrec.Input.IMAGE})
    optional_inputs = frozenset({meshrec.Input.BBOX, meshrec.Input.CAMERA})
    needs_checkpoint = True
    checkpoint_help = (
        "meshrec-hmr reads mmhuman3d's HMR checkpoints: resnet50_hmr_gta_bt / resnet50_hmr_gta_ft "
        "(open-mmlab/mmhuman3d, configs/gta_human/README.md) or resnet50_hmr_pw3d (configs/hmr/README.md)."
    )
    batch_size = 16
    joint_names = SMPL_OUTPUT_JOINT_NAMES
    options = (
        meshrec.Option("bbox_scale", 1.25, "square crop side over the box's longer side (mmhuman3d's "
                       "inference API: 1.25; its 3DPW evaluation uses the dataset's boxes as they are: 1.0)",
                       type=float),
        meshrec.Option("trust_checkpoint", False, "unpickle the checkpoint fully (only for files you trust)"),
    )

    @classmethod
    def build(cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device,
              bbox_scale: float, trust_checkpoint: bool) -> "HMR":
        if not bbox_scale > 0:
            raise ValueError(f"bbox_scale must be positive, got {bbox_scale}")
        network = load_hmr_network(checkpoint, trust=trust_checkpoint).to(device).eval()
        return cls(network, body_model, device, bbox_scale=bbox_scale, trust_checkpoint=trust_checkpoint)

    @property
    def bbox_scale(self) -> float:
        return self.options["bbox_scale"]

    def regress(self, samples: list[meshrec.Sample], bbox_scale: float | None = None) -> dict[str, torch.Tensor]:
        """Network outputs for every person box of ``samples``, concatenated.

        Returns a dict with ``rotmat`` (P, 24, 3, 3), ``betas`` (P, 10), ``cam`` (P, 3), the
        crops' ``centres`` (P, 2) and ``sides`` (P,) in pixels, ``intrinsics`` (P, 3, 3) and
        ``owner`` (P,) (index of the sample each person comes from).
        """
        scale = self.bbox_scale if bbox_scale is None else bbox_scale
        crops, centres, sides, intrinsics, owners = [], [], [], [], []
        for index, sample in enumerate(samples):
            image = torch.from_numpy(sample.image()).to(self.device).permute(2, 0, 1)
            height, width = image.shape[-2:]
            if sample.bbox is not None:
                box_centres, box_sides = square_boxes(torch.as_tensor(sample.bbox, device=self.device), scale)
            else:
                box_centres = torch.tensor([[width / 2, height / 2]], device=self.device, dtype=torch.float64)
                box_sides = torch.tensor([float(max(height, width))], device=self.device, dtype=torch.float64)
            crops.append(crop_boxes(image, box_centres, box_sides, CROP_SIZE))
            camera = (torch.as_tensor(sample.camera) if sample.camera is not None
                      else default_intrinsics(height, width, torch.float64))
            centres.append(box_centres)
            sides.append(box_sides)
            intrinsics.append(camera.to(self.device, torch.float64).expand(len(box_sides), 3, 3))
            owners.append(torch.full((len(box_sides),), index, device=self.device))
        outputs = self.model(torch.cat(crops))
        return {**outputs, "centres": torch.cat(centres), "sides": torch.cat(sides),
                "intrinsics": torch.cat(intrinsics), "owner": torch.cat(owners)}

    def predict_batch(self, samples: list[meshrec.Sample]) -> list[meshrec.Prediction]:
        out = self.regress(samples)
        rotmat, betas = out["rotmat"], out["betas"]
        dtype = self.body_model.v_template.dtype
        body = self.body_model(betas=betas.to(dtype), global_orient=rotmat[:, :1].to(dtype),
                               body_pose=rotmat[:, 1:].to(dtype), pose2rot=False)
        transl = weak_perspective_to_translation(out["cam"].double(), out["centres"], out["sides"],
                                                 out["intrinsics"]).to(dtype)
        everyone = meshrec.Prediction(
            vertices=body.vertices + transl[:, None], joints=body.joints + transl[:, None],
            global_orient=rotmat[:, 0], body_pose=rotmat[:, 1:], betas=betas, transl=transl,
            scores=torch.ones(len(betas), device=self.device), faces=self.body_model.faces_tensor,
            joint_names=self.joint_names,
            extras={"crop_camera": out["cam"], "crop_centre": out["centres"], "crop_size": out["sides"],
                    "intrinsics": out["intrinsics"]},
        )
        return everyone.split(out["owner"], len(samples))
