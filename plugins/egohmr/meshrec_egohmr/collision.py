"""COAP's collision score for EgoHMR's guidance: an optional extra (``collision_score="coap"``).

EgoHMR (``EgoHMR.guide_coll``, ``test_egohmr.py``) guides the last DDPM steps with the gradient
of COAP's collision loss (Mihajlovic et al., CVPR 2022, ``markomih/COAP``), and meshrec does the
same here when the ``coap`` package is installed and its weights are given:

- the body: the noisy x_t decoded with the neutral SMPL (the model's betas, detached; no
  translation), in the frame of the cube relative to the stage-1 translation (``scene_cano``);
  COAP receives the vertices, the joints and the full pose as axis-angle (B, 72), as EgoHMR
  converts its rotation matrices;
- the points: per sample, the cube points inside the body's axis-aligned bounding box
  (bounds included), all of them (no cap at test time);
- the loss: ``coap.collision_loss(points, body)`` = sum over those points of
  relu(occupancy - 0.5), one value per sample;
- the gradient: d(-mean over EgoHMR's batch of the losses)/d pose, pose = the de-normalised x_t
  (``x_t * Xstd + Xmean``: ``guide_coll`` rebinds ``x_t`` to it before differentiating, so the
  gradient added in normalised space lacks the factor Xstd). Upstream's batch is its test
  batch of 5 images (``--batch_size 5``, one sample each), so each sample's gradient is 1/5 of
  its own loss's; meshrec divides by :data:`COAP_BATCH_MEAN` = 5 whatever its own batching is, so
  that results do not depend on how inputs are batched (upstream's last, smaller batch divides
  by fewer). The lower-body joint weights and the step schedule are those of
  :mod:`meshrec_egohmr.diffusion` (weight 2.0, upstream's ``--cond_grad_weight`` default).

COAP is not on PyPI. Install it from its repository (it needs smplx, trimesh, scikit-image and
pytorch3d)::

    pip install git+https://github.com/markomih/COAP.git

meshrec never downloads COAP's weights (COAP's own ``attach_coap(pretrained=True)`` would): it
reads them from the released EgoHMR stage-2 checkpoint, which holds them as ``smpl.coap.*``
(what EgoHMR ran with), or from a COAP checkpoint file you give (``coap_smpl_neutral.ckpt``,
``models/`` on COAP's ``dev`` branch, ``{'state_dict': ...}``).

COAP encodes each body from points it samples on the mesh with pytorch3d and the global torch
random generator; meshrec runs each of those encodings under a forked generator seeded from the
method's sampling seed, so results are reproducible and the global generator is left untouched.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from meshrec.errors import CheckpointError
from meshrec.io.checkpoints import load_checkpoint
from meshrec.rotations import matrix_from_6d_spin, matrix_to_axis_angle

__all__ = ["COAP_BATCH_MEAN", "COAP_INSTALL", "COAPScore", "coap_guidance", "import_coap", "read_coap_weights"]

COAP_BATCH_MEAN = 5  # EgoHMR's test batch: its guidance differentiates the mean loss over 5 images
COAP_INSTALL = ("collision_score='coap' needs the COAP package (markomih/COAP), which is not on PyPI: install it with "
                "`pip install git+https://github.com/markomih/COAP.git` (it also needs smplx, trimesh, scikit-image and "
                "pytorch3d, see https://github.com/facebookresearch/pytorch3d/blob/main/INSTALL.md), or use "
                "collision_score='meshrec' (the default: no extra package, no learned weights)")
COAP_PREFIX = "smpl.coap."


def import_coap():
    """The ``coap`` and ``smplx`` modules, or an ImportError that says how to install them."""
    try:
        import coap
    except ImportError as error:
        raise ImportError(f"{COAP_INSTALL} ({error})") from None
    try:
        import smplx
    except ImportError as error:
        raise ImportError(f"COAP attaches to an smplx body model: pip install smplx ({error})") from None
    return coap, smplx


def read_coap_weights(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """COAP's state dict from ``path``: a COAP checkpoint (``{'state_dict': {...}}`` with COAP's
    own names) or EgoHMR's stage-2 checkpoint, whose ``smpl.coap.*`` entries are COAP's."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"COAP weights {path} do not exist: pass coap_checkpoint= the EgoHMR stage-2 file "
                              "(91453/best_model_mpjpe_vis.pt, which holds smpl.coap.*) or COAP's coap_smpl_neutral.ckpt")
    payload = load_checkpoint(path, trust=trust)
    if isinstance(payload, Mapping) and "state_dict" in payload:
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not all(torch.is_tensor(v) for v in payload.values()):
        raise CheckpointError(f"{path}: expected {{'state_dict': {{name: tensor}}}} (COAP's or EgoHMR's checkpoint)")
    embedded = {k[len(COAP_PREFIX):]: v for k, v in payload.items() if k.startswith(COAP_PREFIX)}
    if embedded:
        return embedded
    if any(k.startswith("smpl.") or k.startswith("diffusion_model.") for k in payload):
        raise CheckpointError(f"{path} is an EgoHMR checkpoint without COAP's smpl.coap.* entries: pass COAP's own "
                              "weights with coap_checkpoint=")
    return dict(payload)


def _smplx_body(body_model: nn.Module, smplx: Any) -> nn.Module:
    """An ``smplx.SMPL`` holding the arrays of meshrec's SMPL module (COAP partitions that mesh
    by its skinning weights; it only accepts smplx's classes). No file is read."""
    from smplx.utils import Struct

    vertices = body_model.v_template.shape[0]
    posedirs = body_model.posedirs.detach().cpu().double().numpy()
    data = Struct(
        f=np.asarray(body_model.faces, dtype=np.int64),
        v_template=body_model.v_template.detach().cpu().double().numpy(),
        shapedirs=body_model.shapedirs.detach().cpu().double().numpy(),
        J_regressor=body_model.J_regressor.detach().cpu().double().numpy(),
        posedirs=posedirs.T.reshape(vertices, 3, posedirs.shape[0]),
        weights=body_model.lbs_weights.detach().cpu().double().numpy(),
        kintree_table=np.stack([body_model.parents.detach().cpu().numpy(), np.arange(len(body_model.parents))]),
    )
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note about the number of betas
        return smplx.SMPL(model_path="", data_struct=data, create_betas=False, create_global_orient=False,
                          create_body_pose=False, create_transl=False, num_betas=body_model.shapedirs.shape[-1])


class COAPScore:
    """COAP attached to (a copy of) the method's neutral SMPL, with weights from a file.

    Args:
        body_model: meshrec's neutral SMPL (the method's).
        weights: see :func:`read_coap_weights`.
        device: where COAP runs (float32, as EgoHMR casts its SMPL outputs with ``.float()``).
    """

    def __init__(self, body_model: nn.Module, weights: str | Path, device: torch.device | str = "cpu",
                 trust: bool = False):
        coap, smplx = import_coap()
        state = read_coap_weights(weights, trust=trust)
        body = _smplx_body(body_model, smplx)
        coap.attach_coap(body, pretrained=False)  # never download: the weights come from `weights`
        module = body.coap
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"COAP weights {weights} do not fit COAP built on this SMPL model: {error}") from None
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        self.module = module.to(device)
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> "COAPScore":
        self.module = self.module.to(device)
        self.device = torch.device(device)
        return self

    def loss(self, vertices: torch.Tensor, joints: torch.Tensor, full_pose: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """COAP's ``collision_loss`` of one body: vertices (V, 3), joints (J, 3), full_pose (72,)
        axis-angle, points (N, 3) in the body's frame. Returns () (differentiable)."""
        body = SimpleNamespace(vertices=vertices[None].float(), joints=joints[None].float(),
                               full_pose=full_pose.reshape(1, -1).float())
        self.module.detach_cache()  # encode this body afresh (COAP caches the last body it saw)
        return self.module.collision_loss(points[None].float(), body, ret_collision_mask=None)[0]


def coap_guidance(mean: torch.Tensor, std: torch.Tensor, body_model: nn.Module, score: COAPScore,
                  betas: torch.Tensor, local_cubes: list[torch.Tensor], num_samples: int,
                  joint_weights: torch.Tensor, row_seeds: list[int]):
    """g(x_t, step) = d(-sum_b loss_b / COAP_BATCH_MEAN)/d pose times the per-joint weights, where
    pose = x_t * std + mean is the de-normalised 6D pose (diffusion layout): EgoHMR's
    ``guide_coll`` differentiates with respect to that tensor, not x_t (it rebinds ``x_t`` to the
    de-normalised pose before ``autograd.grad``), and adds the result to the mean in normalised
    space; meshrec does the same.

    Args:
        mean, std: (144,) the pose statistics (``Xmean``, ``Xstd``).
        betas: (B, 10) per row (detached).
        local_cubes: each person's cube relative to its translation; row b uses cube b // S.
        joint_weights: (144,) EgoHMR's lower-body weights.
        row_seeds: (B,) seeds of COAP's point sampling, one per row (plus the step).
    """

    def guidance(x_t: torch.Tensor, step: int) -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            x = (x_t.clone() * std.clone() + mean.clone()).detach().requires_grad_(True)
            rotmat = matrix_from_6d_spin(x.reshape(len(x), 24, 6))
            dtype = body_model.v_template.dtype
            body = body_model(betas=betas.clone().to(dtype), global_orient=rotmat[:, :1].to(dtype),
                              body_pose=rotmat[:, 1:].to(dtype), pose2rot=False)
            full_pose = matrix_to_axis_angle(rotmat.to(dtype)).reshape(len(x), -1)
            total = x.new_zeros(())
            for index in range(len(x)):
                points = local_cubes[index // num_samples].clone().to(dtype)
                vertices = body.vertices[index]
                low, high = vertices.detach().amin(0), vertices.detach().amax(0)
                inside = points[((points >= low) & (points <= high)).all(-1)]
                if len(inside) == 0:
                    continue
                devices = [score.device] if score.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed((row_seeds[index] + 7919 * step) % (2**63))
                    loss = score.loss(vertices.to(score.device), body.joints[index].to(score.device),
                                      full_pose[index].to(score.device), inside.to(score.device))
                total = total + loss.to(x.dtype).to(x.device)
            if not total.requires_grad:
                return torch.zeros_like(x_t)
            (grad,) = torch.autograd.grad(-total / COAP_BATCH_MEAN, x)
        return (grad * joint_weights).detach()

    return guidance
