"""EgoHMR stage 1, "ProHMR-scene" (``models/prohmr/prohmr_scene.py``): ResNet-50 image features,
a PointNet scene feature and the camera / box information condition a Glow flow over the 24
joint rotations (ProHMR's 6D layout) and an FC head for betas and a weak-perspective camera.

Parameter names are the upstream's (``backbone.*``, ``flow.flow._transform.*``,
``flow.fc_head.*``, ``scene_enc.*``, ``initialized``), so the released ``53618/best_model.pt``
loads strictly once its SMPL arrays and discriminator are dropped (see
:mod:`meshrec_egohmr.checkpoint`).

Units follow the upstream: the context holds ``fx / 1500`` and pixel quantities divided by fx;
the FC head's camera is (s, tx, ty) in the crop's normalised units; the translation is metres in
the camera frame (OpenCV axes).
"""

from __future__ import annotations

import torch
from torch import nn

from meshrec.camera import weak_perspective_to_translation
from meshrec.nn import resnet50
from meshrec.rotations import matrix_from_6d_prohmr
from meshrec_egohmr.diffusion import Generators, normal
from meshrec_egohmr.flow import ConditionalGlow
from meshrec_egohmr.layers import ResnetPointnet, image_features

__all__ = ["FCHead", "FX_NORM_COEFF", "ProHMRScene", "SMPLFlow", "camera_features"]

FX_NORM_COEFF = 1500.0  # configs/prohmr.yaml CAM.FX_NORM_COEFF
POSE_DIM = 144  # 24 joints x 6D
IMAGE_FEATURES = 2048
SCENE_FEATURES = 512
CONTEXT_FEATURES = 2 + 3 + 1 + IMAGE_FEATURES + SCENE_FEATURES  # 2566


def camera_features(focal: torch.Tensor, principal: torch.Tensor, box_centre: torch.Tensor,
                    box_size: torch.Tensor) -> torch.Tensor:
    """EgoHMR's camera conditioning (B, 6): ``[cx/fx, cy/fx, box_cx/fx, box_cy/fx, box_size/fx,
    fx/1500]`` (the camera centre, the box and the normalised focal length, in the order
    ``torch.cat`` builds them upstream).

    Args:
        focal: (B,) fx in pixels; principal: (B, 2) cx, cy in pixels.
        box_centre: (B, 2) crop centre in pixels; box_size: (B,) crop side in pixels.
    """
    f = focal[:, None]
    return torch.cat([principal / f, box_centre / f, box_size[:, None] / f, f / FX_NORM_COEFF], dim=1)


class FCHead(nn.Module):
    """Linear(C -> 1024) -> ReLU -> Linear(1024 -> 13): offsets of betas (10) and the crop camera
    (3) from the SMPL mean parameters (buffers ``init_betas`` (1, 1, 10), ``init_cam`` (1, 1, 3))."""

    def __init__(self, in_features: int = CONTEXT_FEATURES, hidden: int = 1024):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=False), nn.Linear(hidden, 13))
        nn.init.xavier_uniform_(self.layers[2].weight, gain=0.02)
        self.register_buffer("init_cam", torch.tensor([[[0.9, 0.0, 0.0]]]))
        self.register_buffer("init_betas", torch.zeros(1, 1, 10))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, C) -> betas (B, 10), camera (B, 3) (the same for every flow sample)."""
        offset = self.layers(feats)
        return offset[:, :10] + self.init_betas[0], offset[:, 10:] + self.init_cam[0]


class SMPLFlow(nn.Module):
    """ProHMR's probabilistic SMPL head: ``flow`` (:class:`ConditionalGlow` over 144 = 24 x 6D,
    ProHMR layout, joint 0 = global orientation) and ``fc_head``."""

    def __init__(self, context_features: int = CONTEXT_FEATURES, hidden: int = 1024, num_layers: int = 4,
                 blocks_per_layer: int = 2):
        super().__init__()
        self.flow = ConditionalGlow(POSE_DIM, hidden, num_layers, blocks_per_layer, context_features)
        self.fc_head = FCHead(context_features)

    def log_prob(self, pose_6d: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(pose | feats) (B, S) and the latent z (B, S, 144) of poses (B, S, 144) in
        ProHMR's 6D layout (upstream ``SMPLFlow.log_prob``)."""
        batch, samples = pose_6d.shape[:2]
        context = feats.repeat_interleave(samples, dim=0)
        log_prob, z = self.flow.log_prob(pose_6d.reshape(batch * samples, -1), context)
        return log_prob.reshape(batch, samples), z.reshape(batch, samples, -1)

    def forward(self, feats: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Poses for latents z (B, S, 144) (z = 0 is the mode).

        Returns ``pose_6d`` (B, S, 144) ProHMR layout, ``rotmat`` (B, S, 24, 3, 3), ``log_prob``
        (B, S), ``betas`` (B, 10), ``cam`` (B, 3) (s, tx, ty).
        """
        pose_6d, log_prob = self.flow.sample_and_log_prob(z, feats)
        batch, samples = z.shape[:2]
        rotmat = matrix_from_6d_prohmr(pose_6d.reshape(batch, samples, 24, 6))
        betas, cam = self.fc_head(feats)
        return {"pose_6d": pose_6d, "rotmat": rotmat, "log_prob": log_prob, "betas": betas, "cam": cam}


class ProHMRScene(nn.Module):
    """EgoHMR's stage-1 network.

    Submodules (upstream names): ``backbone`` (ResNet-50, torchvision names, no ``fc``),
    ``scene_enc`` (:class:`ResnetPointnet`), ``flow`` (:class:`SMPLFlow`); buffer
    ``initialized`` (the ActNorm-initialisation flag, unused at inference).
    """

    def __init__(self):
        super().__init__()
        self.backbone = resnet50()
        self.flow = SMPLFlow(CONTEXT_FEATURES)
        self.scene_enc = ResnetPointnet(out_dim=SCENE_FEATURES, hidden_dim=256)
        self.register_buffer("initialized", torch.tensor(False))

    def conditioning(self, images: torch.Tensor, scene_points: torch.Tensor, focal: torch.Tensor,
                     principal: torch.Tensor, box_centre: torch.Tensor, box_size: torch.Tensor) -> torch.Tensor:
        """The 2566-d context (B, 2566): ``[camera_features (6), image (2048), scene (512)]``.

        Args:
            images: (B, 3, 224, 224) crops, ImageNet-normalised RGB.
            scene_points: (B, N, 3) scene points in the camera frame, metres (upstream: 20000).
            focal, principal, box_centre, box_size: see :func:`camera_features`.
        """
        return torch.cat([camera_features(focal, principal, box_centre, box_size),
                          image_features(self.backbone, images), self.scene_enc(scene_points)], dim=1)

    def forward(self, images: torch.Tensor, scene_points: torch.Tensor, focal: torch.Tensor,
                principal: torch.Tensor, box_centre: torch.Tensor, box_size: torch.Tensor,
                num_samples: int = 1, generator: Generators = None,
                z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Sample 0 is the mode (z = 0); samples 1.. draw z ~ N(0, I) with ``generator`` (or
        one generator per person, a list of B).

        Returns the outputs of :meth:`SMPLFlow.forward` plus ``transl`` (B, 3): the crop camera
        turned into a camera-frame translation with the true focal length and principal point
        (PARE / CLIFF conversion, ``convert_pare_to_full_img_cam``), ``z`` and ``context``.
        """
        context = self.conditioning(images, scene_points, focal, principal, box_centre, box_size)
        if z is None:
            z = torch.zeros(context.shape[0], num_samples, POSE_DIM, dtype=context.dtype, device=context.device)
            if num_samples > 1:
                z[:, 1:] = normal(tuple(z[:, 1:].shape), generator, z.dtype, z.device)
        out = self.flow(context, z)
        intrinsics = torch.zeros(context.shape[0], 3, 3, dtype=context.dtype, device=context.device)
        intrinsics[:, 0, 0] = focal
        intrinsics[:, 1, 1] = focal
        intrinsics[:, :2, 2] = principal
        intrinsics[:, 2, 2] = 1
        out["transl"] = weak_perspective_to_translation(out["cam"], box_centre, box_size, intrinsics)
        out["z"] = z
        out["context"] = context
        return out
