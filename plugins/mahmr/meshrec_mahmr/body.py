"""SMPL with MA-HMR's 11 shape coefficients, and the posing of the network's per-query outputs.

MA-HMR's 11th coefficient blends the adult template towards the SMIL kid template (smplx's
``age="kid"``): the centred kid template minus the adult template is one more shape direction.
:class:`meshrec.body.SMPL` supports that at construction (``age="kid"``,
``kid_template_path``); :class:`KidBlendSMPL` adds it on top of an adult SMPL that
:func:`meshrec.load_method` already loaded, by handing SMPL a per-person template
``v_template + beta_10 * kid_offset`` (exactly the same mesh and joints, since both the shape
blend and the joint regressor are linear in the template). Suggestion for the core: let
``load_method`` build the body model with the method's ``body_model_age`` / kid template.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from meshrec.body.files import find_body_model_file

__all__ = ["KID_TEMPLATE_FILE", "KidBlendSMPL", "find_kid_template", "pose_queries"]

KID_TEMPLATE_FILE = "smpl_kid_template.npy"


def find_kid_template(path: str | Path | None, body_model: nn.Module | None = None) -> Path:
    """The SMIL kid template (AGORA's ``smpl_kid_template.npy``, (6890, 3)): ``path`` (a file or a
    folder), else beside the body model's file, else in ``MESHREC_BODY_MODELS`` /
    ``~/.cache/meshrec/body_models``. Raises BodyModelNotFoundError naming where it looked."""
    if path is None and getattr(body_model, "model_file", None) is not None:
        beside = Path(body_model.model_file).parent / KID_TEMPLATE_FILE
        if beside.is_file():
            return beside
    return find_body_model_file([KID_TEMPLATE_FILE], path)


class KidBlendSMPL(nn.Module):
    """An adult SMPL plus the kid-template shape direction: betas (B, NB + 1), the last one the
    kid blend (0 adult, 1 the full kid template).

    Args:
        smpl: a :class:`meshrec.body.SMPL` (adult; its ``num_betas`` first coefficients are used).
        kid_template: (V, 3) array, or a path to the ``.npy`` file.
    """

    def __init__(self, smpl: nn.Module, kid_template: np.ndarray | str | Path):
        super().__init__()
        if not isinstance(kid_template, np.ndarray):
            kid_template = np.load(Path(kid_template), allow_pickle=False)
        template = smpl.v_template.detach().cpu().double().numpy()
        if kid_template.shape != template.shape:
            raise ValueError(f"kid template has shape {kid_template.shape}, the body model's template {template.shape}")
        offset = (kid_template - kid_template.mean(axis=0)) - template  # smplx's age="kid" direction
        self.smpl = smpl
        self.register_buffer("kid_offset", torch.as_tensor(offset, dtype=smpl.v_template.dtype,
                                                           device=smpl.v_template.device))

    @property
    def num_betas(self) -> int:
        return self.smpl.num_betas + 1

    @property
    def faces_tensor(self) -> torch.Tensor:
        return self.smpl.faces_tensor

    @property
    def v_template(self) -> torch.Tensor:
        return self.smpl.v_template

    def forward(self, betas: torch.Tensor, **kwargs):
        """As SMPL's forward, with betas (B, num_betas + 1)."""
        if betas.dim() != 2 or betas.shape[1] != self.num_betas:
            raise ValueError(f"betas must have shape (B, {self.num_betas}), got {tuple(betas.shape)}")
        template = self.smpl.v_template.to(betas.dtype) + betas[:, -1, None, None] * self.kid_offset.to(betas.dtype)
        return self.smpl(betas=betas[:, :-1], v_template=template, **kwargs)


def pose_queries(body: nn.Module, rotmats: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor,
                 K: torch.Tensor) -> dict[str, torch.Tensor]:
    """SMPL meshes of per-person outputs in the camera frame, and their projection.

    Args:
        body: SMPL (or :class:`KidBlendSMPL`) taking betas (P, NB).
        rotmats: (P, 24, 3, 3) global orientation and body pose.
        betas: (P, NB); transl: (P, 3) metres; K: (P, 3, 3) intrinsics (pixels).

    Returns vertices (P, V, 3) and joints (P, 45, 3) in metres, camera frame (SMPL output plus
    ``transl``), and j2ds (P, 45, 2) pixels (upstream divides by z + 1e-6).
    """
    dtype = body.v_template.dtype
    out = body(betas=betas.to(dtype), global_orient=rotmats[:, :1].to(dtype), body_pose=rotmats[:, 1:].to(dtype),
               pose2rot=False)
    vertices = out.vertices + transl[:, None].to(dtype)
    joints = out.joints + transl[:, None].to(dtype)
    homo = joints @ K.to(dtype).transpose(1, 2)
    return {"vertices": vertices, "joints": joints, "j2ds": homo[..., :2] / (homo[..., 2:] + 1e-6)}
