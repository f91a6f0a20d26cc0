"""Named evaluation protocols: which joints and regressor, which root, which body model for the
ground truth, how errors are pooled, and where each upstream defines it.

The definitions here are data; :mod:`meshrec.metrics.evaluators` implements them. docs/metrics.md
has the comparison table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
import torch

__all__ = [
    "H36M_PELVIS",
    "H36M_TO_J14",
    "H36M_EVAL_14",
    "PROTOCOLS",
    "Protocol",
    "SAHMR_H36M_TO_J14",
    "SMPL_PELVIS",
    "BodyModelSet",
    "get_protocol",
    "list_protocols",
    "normalise_gender",
]

H36M_PELVIS = 0  # the pelvis of the 17 H36M-regressed joints
SMPL_PELVIS = 0  # the root of the 24 SMPL joints
# The 14 LSP-order joints taken from the 17 H36M joints: R ankle, R knee, R hip, L hip, L knee,
# L ankle, R wrist, R elbow, R shoulder, L shoulder, L elbow, L wrist, neck, head top.
H36M_TO_J14 = (6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10)  # SPIN / mmhuman3d (their 1..6 labels)
SAHMR_H36M_TO_J14 = (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10)  # SA-HMR: the same set
H36M_EVAL_14 = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)  # MotionBERT / MA-HMR: the same set, sorted


@dataclass(frozen=True)
class Protocol:
    """A named way of reporting pose and mesh errors on a dataset.

    Attributes:
        name: registry name.
        title: one line.
        evaluator: "joints" (:class:`~meshrec.metrics.evaluators.JointMeshEvaluator`),
            "scene" (:class:`~meshrec.metrics.evaluators.SceneEvaluator`) or "egobody"
            (:class:`~meshrec.metrics.evaluators.EgoBodyEvaluator`).
        regressor: joint regressor file applied to the meshes (found with
            :func:`meshrec.body.load_joint_regressor`), or None for the SMPL model's own joints.
        joints: evaluated joint indices (into the regressed or SMPL joints).
        root: root joint index for root-relative metrics.
        target_model: ground-truth body model, "gendered" or "neutral".
        pred_pve_model: body model of the prediction for PVE ("neutral", or "gendered": the
            mmhuman3d quirk of passing the ground-truth gender to the predicted mesh too).
        pve_root: "none" (raw vertices) or "pelvis" (each mesh minus its own root joint).
        pooling: "joint-frame" (mean over every valid (frame, joint) pair) or "frame" (mean per
            frame, then over frames). They agree when every frame has the same valid joints.
        metrics: the reported keys.
        upstream: where the upstream code defines the protocol.
        notes: what the method plugin or the dataset reader must do for parity.
        options: protocol constants (EgoHMR's image size and squared contact threshold).
    """

    name: str
    title: str
    evaluator: str
    regressor: str | None
    joints: tuple[int, ...]
    root: int
    target_model: str
    pred_pve_model: str
    pve_root: str
    pooling: str
    metrics: tuple[str, ...]
    upstream: str
    notes: str = ""
    options: Mapping[str, object] = field(default_factory=dict)


PROTOCOLS: dict[str, Protocol] = {
    protocol.name: protocol
    for protocol in [
        Protocol(
            name="standard",
            title="meshrec's documented protocol (SPIN-style 3DPW, pelvis-aligned PVE)",
            evaluator="joints",
            regressor="J_regressor_h36m.npy",
            joints=H36M_TO_J14,
            root=H36M_PELVIS,
            target_model="gendered",
            pred_pve_model="neutral",
            pve_root="pelvis",
            pooling="frame",
            metrics=("MPJPE", "PA-MPJPE", "PVE", "PA-PVE", "PCK", "AUC", "ACCEL"),
            upstream="meshrec.metrics.protocols (SPIN eval.py for the joints; mmhuman3d eval_utils for PCK/AUC; "
            "VIBE compute_accel for ACCEL)",
            notes="Neutral-model prediction against gendered ground truth (neutral when no gender is given); "
            "PCK at 150 mm and AUC over 0..150 mm step 5 on the root-aligned joints; ACCEL (mm/frame^2) when "
            "updates carry sequence ids.",
        ),
        Protocol(
            name="3dpw-mmhuman3d",
            title="3DPW as mmhuman3d reports it (HumanImageDataset, convention h36m)",
            evaluator="joints",
            regressor="J_regressor_h36m.npy",
            joints=H36M_TO_J14,
            root=H36M_PELVIS,
            target_model="gendered",
            pred_pve_model="gendered",
            pve_root="none",
            pooling="joint-frame",
            metrics=("MPJPE", "PA-MPJPE", "PVE", "3DPCK", "PA-3DPCK", "3DAUC", "PA-3DAUC"),
            upstream="open-mmlab/mmhuman3d: mmhuman3d/data/datasets/human_image_dataset.py (_parse_result, "
            "evaluate), mmhuman3d/core/evaluation/eval_utils.py (keypoint_mpjpe, vertice_pve, keypoint_3d_pck, "
            "keypoint_3d_auc), mesh_eval.py (compute_similarity_transform)",
            notes="Ground-truth gender 'm' is male and anything else female (no neutral branch). PVE uses the "
            "prediction's SMPL parameters through the ground truth's gendered model and no root alignment. "
            "PCK/AUC in percent; PCK strict (< 150 mm).",
        ),
        Protocol(
            name="3dpw-motionbert",
            title="3DPW as MotionBERT reports it (lib/utils/utils_mesh.py evaluate_mesh)",
            evaluator="joints",
            regressor="J_regressor_h36m_correct.npy",
            joints=H36M_EVAL_14,
            root=H36M_PELVIS,
            target_model="neutral",
            pred_pve_model="neutral",
            pve_root="pelvis",
            pooling="frame",
            metrics=("mpve", "mpjpe", "pa_mpjpe", "mpjpe_17j", "pa_mpjpe_17j"),
            upstream="Walter0807/MotionBERT: lib/utils/utils_mesh.py (evaluate_mesh, rigid_align), "
            "lib/data/dataset_mesh.py (neutral-SMPL ground truth), train_mesh.py (validate)",
            notes="Ground truth through the neutral model. The method plugin reproduces the rest: flip "
            "test-time augmentation, 16-frame clips with each sequence's tail dropped.",
        ),
        Protocol(
            name="rich-sahmr",
            title="RICH as SA-HMR reports it (tools/eval_results.py)",
            evaluator="scene",
            regressor="J_regressor_h36m_correct.npy",
            joints=SAHMR_H36M_TO_J14,
            root=H36M_PELVIS,
            target_model="smplx-to-smplh",
            pred_pve_model="neutral",
            pve_root="pelvis",
            pooling="frame",
            metrics=("GMPJPE", "GMPVE", "MPJPE", "MPVE", "PenE", "ConFE"),
            upstream="zju3dv/SA-HMR: tools/eval_results.py (main)",
            notes="World frame. Ground truth: SMPL-X meshes mapped to SMPL topology by smplx2smplh_deftrafo_setup "
            "(the dataset reader's job). MPJPE/MPVE translate the prediction by gt_pelvis - pred_pelvis. PenE and "
            "ConFE in metres, summed over vertices (not averaged); ConFE uses RICH's per-vertex contact labels.",
        ),
        Protocol(
            name="prox-sahmr",
            title="PROX (quantitative) as SA-HMR reports it (tools/eval_results.py)",
            evaluator="scene",
            regressor="J_regressor_h36m_correct.npy",
            joints=SAHMR_H36M_TO_J14,
            root=H36M_PELVIS,
            target_model="smplx-to-smplh",
            pred_pve_model="neutral",
            pve_root="pelvis",
            pooling="frame",
            metrics=("GMPJPE", "GMPVE", "MPJPE", "MPVE", "PenE", "ConFE"),
            upstream="zju3dv/SA-HMR: tools/eval_results.py (main, data_name prox_quant)",
            notes="As rich-sahmr; PROX has no contact labels, so ConFE equals PenE. Ground truth: MoSh SMPL-X "
            "meshes moved from the camera to the world frame with T_c2w (the reader's job).",
        ),
        Protocol(
            name="egobody-egohmr",
            title="EgoBody (egocentric) as EgoHMR reports it (test_egohmr.py)",
            evaluator="egobody",
            regressor=None,
            joints=tuple(range(24)),
            root=SMPL_PELVIS,
            target_model="gendered",
            pred_pve_model="neutral",
            pve_root="pelvis",
            pooling="frame",
            metrics=(
                "G-MPJPE", "G-MPJPE-vis", "G-MPJPE-invis", "MPJPE", "MPJPE-vis", "MPJPE-invis",
                "PA-MPJPE", "PA-MPJPE-vis", "PA-MPJPE-invis", "V2V", "V2V-vis", "V2V-invis",
                "MPJPE-invis-best-of-samples", "std-joints", "std-joints-vis", "std-joints-invis",
                "apd-joints", "apd-joints-vis", "apd-joints-invis", "collision-ratio", "contact-ratio",
            ),
            upstream="sanweiliti/EgoHMR: test_egohmr.py (test), utils/pose_utils.py "
            "(reconstruction_error_with_vis_mask), models/egohmr/egohmr.py (eval_coll), "
            "utils/pytorch3d_chamfer_distance.py",
            notes="24 SMPL joints; camera frame. A joint or vertex is visible iff its ground truth projects into "
            "the 1920x1080 image (truncation only; meshrec.metrics.evaluators.image_visibility). vis / invis "
            "variants pool over every (frame, sample, joint); the others average per sample. PA alignment fits "
            "the visible joints with invisible ones zeroed (not dropped). APD is half the usual mean pairwise "
            "distance. Collision: scene points inside the body / all scene points (EgoHMR queries a learned "
            "occupancy, COAP; meshrec tests the mesh exactly). Contact: min squared vertex-to-scene distance < "
            "0.02 (about 14 cm).",
            options={"image_size": (1920, 1080), "contact_threshold_squared": 0.02},
        ),
    ]
}


def list_protocols() -> list[str]:
    """Names of the evaluation protocols meshrec implements."""
    return sorted(PROTOCOLS)


def get_protocol(protocol: str | Protocol) -> Protocol:
    """The :class:`Protocol` called ``protocol`` (or ``protocol`` itself)."""
    if isinstance(protocol, Protocol):
        return protocol
    try:
        return PROTOCOLS[protocol]
    except (KeyError, TypeError):
        raise ValueError(f"unknown evaluation protocol {protocol!r}; known: {', '.join(list_protocols())}") from None


_GENDERS = {"neutral": "neutral", "n": "neutral", "male": "male", "m": "male", "female": "female", "f": "female"}


def normalise_gender(gender: str) -> str:
    """"male", "female" or "neutral" from the spellings datasets use (m / f / n, any case)."""
    key = str(gender).strip().lower()
    if key not in _GENDERS:
        raise ValueError(f"gender must be one of male / m, female / f, neutral / n, got {gender!r}")
    return _GENDERS[key]


RegressorLike = Union[np.ndarray, torch.Tensor, str, Path, None]


class BodyModelSet:
    """SMPL models by gender for evaluation, loaded on first use.

    Args:
        location: folder (or file location) of the SMPL files, as for :class:`meshrec.body.SMPL`;
            None searches ``MESHREC_BODY_MODELS`` and ``~/.cache/meshrec/body_models``.
        models: optional ready models by gender ("neutral", "male", "female").
        dtype: dtype of models loaded here (float64 by default: evaluation precision).
    """

    def __init__(
        self,
        location: str | Path | None = None,
        models: Mapping[str, torch.nn.Module] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.location = location
        self.dtype = dtype
        self._models: dict[str, torch.nn.Module] = {normalise_gender(k): v for k, v in (models or {}).items()}

    def model(self, gender: str) -> torch.nn.Module:
        gender = normalise_gender(gender)
        if gender not in self._models:
            from meshrec.body import SMPL

            self._models[gender] = SMPL(self.location, gender=gender, dtype=self.dtype)
        return self._models[gender]

    def forward(
        self, gender: str | Sequence[str], **params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices (B, V, 3), joints (B, J, 3)) of SMPL parameters (``betas``, ``body_pose``,
        ``global_orient``, optional ``transl``; axis-angle or rotation matrices), through one
        gender's model or, with one gender per sample, each sample's own."""
        genders = [gender] if isinstance(gender, str) else [normalise_gender(g) for g in gender]
        batch = next(iter(params.values())).shape[0]
        if len(genders) == 1:
            genders = [normalise_gender(genders[0])] * batch
        if len(genders) != batch:
            raise ValueError(f"got {len(genders)} genders for a batch of {batch}")
        pose2rot = params["body_pose"].dim() == 2
        vertices = joints = None
        for name in sorted(set(genders)):
            selected = torch.tensor([g == name for g in genders])
            model = self.model(name)
            reference = next(model.buffers())
            subset = {k: v[selected.to(v.device)].to(reference) for k, v in params.items() if v is not None}
            with torch.no_grad():
                out = model(**subset, pose2rot=pose2rot)
            if vertices is None:
                vertices = out.vertices.new_empty((batch, *out.vertices.shape[1:]))
                joints = out.joints.new_empty((batch, *out.joints.shape[1:]))
            vertices[selected.to(vertices.device)] = out.vertices
            joints[selected.to(joints.device)] = out.joints
        return vertices, joints
