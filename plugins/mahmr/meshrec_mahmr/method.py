"""The ``mahmr`` and ``sathmr`` methods: an image -> every person, metric, in the camera frame.

Importing this module builds no network and reads no weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import meshrec
from meshrec.body import SMPL_OUTPUT_JOINT_NAMES

__all__ = ["MAHMR", "SATHMR"]


def _optional_path(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


class MAHMR(meshrec.Method):
    """MA-HMR (gouba2333/MA-HMR, arXiv 2511.13282) with its released weights.

    The image's long side is resized to 1288 px; the network finds every person (up to 50
    queries, confidence > ``conf_thresh``, no NMS as upstream), each with SMPL pose, 11 shape
    coefficients (the 11th blends towards the SMIL kid template) and a metric translation
    computed from the predicted field of view. A given CAMERA (3 x 3 K in the image's pixels)
    replaces the predicted focal length and principal point (the depth scales with the focal
    length, the translation keeps each person's predicted image position).

    Prediction per image: vertices (P, 6890, 3) and joints (P, 45, 3) in metres, camera frame
    (x right, y down, z forward); ``extras``: ``intrinsics`` (3, 3) in the original image's
    pixels (predicted, or the given one), ``fov`` (vertical, radians, predicted), ``boxes``
    (P, 4) x1 y1 x2 y2 and ``keypoints_2d`` (P, 45, 2) in original pixels, ``resize_rate``.
    """

    name = "mahmr"
    summary = "MA-HMR: one-stage multi-person metric mesh recovery from one image (SAT DINOv2 + DETR + FoV head)"
    inputs = frozenset({meshrec.Input.IMAGE})
    optional_inputs = frozenset({meshrec.Input.CAMERA})
    needs_checkpoint = True
    checkpoint_help = (
        "meshrec-mahmr reads MA-HMR's released mahmr_stage3.bin (also stages 1-2), linked from the README "
        "of https://github.com/gouba2333/MA-HMR (CC BY-NC 4.0). The 11th shape coefficient needs the SMIL kid "
        "template smpl_kid_template.npy (AGORA, https://agora.is.tue.mpg.de) beside the SMPL files."
    )
    body_model_type = "smpl"
    batch_size = 2
    joint_names = SMPL_OUTPUT_JOINT_NAMES
    variant = "mahmr"
    options = (
        meshrec.Option("conf_thresh", 0.3, "keep queries whose confidence exceeds this (upstream: 0.3, no NMS)"),
        meshrec.Option("kid_template", None, "smpl_kid_template.npy (file or folder); default: beside the SMPL "
                       "files or in MESHREC_BODY_MODELS", type=_optional_path),
        meshrec.Option("max_side", 5152, "longer image sides are first downscaled to this (antialiased, with a "
                       "warning), pixels", type=int),
        meshrec.Option("token_quirk", False, "MA-HMR's token-selection quirk: with no background quad in the "
                       "batch, keep the 28-px tokens of small-person patches beside their 14-px tokens"),
        meshrec.Option("trust_checkpoint", False, "unpickle the checkpoint fully (only for files you trust)"),
    )

    @classmethod
    def build(cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device,
              conf_thresh: float = 0.3, kid_template: str | None = None, max_side: int = 5152,
              token_quirk: bool = False, trust_checkpoint: bool = False) -> "MAHMR":
        from meshrec_mahmr.body import KidBlendSMPL, find_kid_template
        from meshrec_mahmr.checkpoint import load_mahmr_network

        if not 0 <= conf_thresh < 1:
            raise ValueError(f"conf_thresh must lie in [0, 1), got {conf_thresh}")
        if max_side < 1288:
            raise ValueError(f"max_side must be at least 1288 (the network's input size), got {max_side}")
        if body_model is None:
            raise ValueError(f"method {cls.name!r} needs the SMPL body model")
        network = load_mahmr_network(checkpoint, cls.variant, trust=trust_checkpoint,
                                     keep_sat_lvl1_without_background=bool(token_quirk))
        network = network.to(device).eval()
        wanted = network.config.dim_shape
        if body_model.num_betas == wanted - 1:
            try:
                template = find_kid_template(kid_template, body_model)
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"this checkpoint predicts {wanted} shape coefficients; the last one blends towards the SMIL kid "
                    "template smpl_kid_template.npy (AGORA, https://agora.is.tue.mpg.de; also shipped with "
                    "MA-HMR's SMPL data), which was not found. Put it beside the SMPL files or pass "
                    f"kid_template=PATH.\n{error}") from None
            body_model = KidBlendSMPL(body_model, np.load(template, allow_pickle=False)).to(device)
        elif body_model.num_betas < wanted:
            raise ValueError(f"the checkpoint predicts {wanted} shape coefficients but the body model takes "
                             f"{body_model.num_betas}")
        return cls(network, body_model, device, conf_thresh=float(conf_thresh), kid_template=kid_template,
                   max_side=int(max_side), token_quirk=bool(token_quirk), trust_checkpoint=trust_checkpoint)

    def check_sample(self, sample: meshrec.Sample) -> None:
        from meshrec_mahmr.preprocess import MIN_SIDE, read_sixteen_bit

        if isinstance(sample.image_source, (str, Path)) and sample._image is None:
            sixteen = read_sixteen_bit(sample.image_source)
            if sixteen is not None:  # the core's reader clips 16-bit values to 255
                sample._image = sixteen
        height, width = sample.image().shape[:2]
        if min(height, width) < MIN_SIDE:
            raise ValueError(f"{sample.source} is {height}x{width} pixels: {self.name} needs at least {MIN_SIDE} px "
                             "per side (it resizes the long side to 1288)")
        if sample.camera is not None:
            K = np.asarray(sample.camera, dtype=np.float64)
            if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise ValueError(f"{sample.source}: camera must be a finite (3, 3) K with positive focal lengths, "
                                 f"got {K.tolist() if K.size == 9 else K.shape}")

    @property
    def conf_thresh(self) -> float:
        return self.options["conf_thresh"]

    def predict_batch(self, samples: list[meshrec.Sample]) -> list[meshrec.Prediction]:
        from meshrec_mahmr.body import pose_queries
        from meshrec_mahmr.preprocess import preprocess

        network = self.model
        size = network.config.input_size
        inputs = [preprocess(sample.image(), size, self.options["max_side"], self.device, sample.source)
                  for sample in samples]
        dtype = network.cam_intrinsics.dtype
        out = network([p.image.to(dtype) for p in inputs], [p.size for p in inputs])
        predictions = []
        for index, (sample, pre) in enumerate(zip(samples, inputs)):
            keep = out["pred_confs"][index, :, 0] > self.conf_thresh
            rotmats = out["pred_rotmats"][index, keep]
            betas = out["pred_betas"][index, keep]
            transl = out["pred_transl"][index, keep]
            K = out["pred_intrinsics"][index].double()
            to_original = torch.diag(torch.tensor([1 / pre.rate, 1 / pre.rate, 1.0], dtype=torch.float64,
                                                  device=K.device))
            if sample.camera is not None:
                transl, K = self._given_camera(transl, K, torch.as_tensor(sample.camera, dtype=torch.float64,
                                                                         device=K.device), pre.rate)
            people = len(rotmats)
            posed = pose_queries(self.body_model, rotmats, betas, transl, K.expand(people, 3, 3))
            boxes = out["pred_boxes"][index, keep].double() * size / pre.rate  # cx cy w h, original px
            boxes = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], dim=1)
            body_dtype = posed["vertices"].dtype
            extras = {
                "intrinsics": (to_original @ K).to(body_dtype),
                "keypoints_2d": (posed["j2ds"] / pre.rate).to(body_dtype),
                "boxes": boxes.to(body_dtype),
                "resize_rate": pre.rate,
                "focal_source": "given" if sample.camera is not None else "predicted",
            }
            if out["pred_fov"] is not None:
                extras["fov"] = float(out["pred_fov"][index])
            predictions.append(meshrec.Prediction(
                vertices=posed["vertices"], joints=posed["joints"], global_orient=rotmats[:, 0].to(body_dtype),
                body_pose=rotmats[:, 1:].to(body_dtype), betas=betas.to(body_dtype), transl=transl.to(body_dtype),
                scores=out["pred_confs"][index, keep, 0].to(body_dtype), faces=self.body_model.faces_tensor,
                joint_names=self.joint_names, extras=extras,
            ))
        return predictions

    def _given_camera(self, transl: torch.Tensor, K_pred: torch.Tensor, K_user: torch.Tensor,
                      rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Translations under the user's K (original pixels): each person's origin keeps its
        predicted pixel, and its depth scales with the focal length (t_z = 2 f / (s * 1288) in
        the network's camera model). Returns (P, 3) translations and K in resized pixels."""
        K = torch.diag(torch.tensor([rate, rate, 1.0], dtype=torch.float64, device=K_user.device)) @ K_user
        t = transl.double()
        uv = (t @ K_pred.T)[:, :2] / t[:, 2:]
        depth = t[:, 2:] * K[0, 0] / K_pred[0, 0]
        xy = (uv - K[:2, 2]) / torch.stack([K[0, 0], K[1, 1]]) * depth
        return torch.cat([xy, depth], dim=1).to(transl.dtype), K


class SATHMR(MAHMR):
    """SAT-HMR (ChiSu001/SAT-HMR) with its released ``sat_644.pth``: the same network without the
    FoV head (a fixed 60 degree vertical FoV on the 1288-px square, f = 1115.4 px in resized
    pixels) and with 10 shape coefficients. A given CAMERA replaces that focal length."""

    name = "sathmr"
    summary = "SAT-HMR: one-stage multi-person mesh recovery with scale-adaptive tokens (fixed-FoV camera)"
    checkpoint_help = (
        "meshrec-mahmr reads SAT-HMR's released sat_644.pth, linked from the README of "
        "https://github.com/ChiSu001/SAT-HMR (Apache-2.0 code)."
    )
    variant = "sathmr"
