"""Evaluators: accumulate predictions and ground truth over a dataset and report a named protocol
(:mod:`meshrec.metrics.protocols`, compared in docs/metrics.md).

>>> evaluator = meshrec.metrics.evaluator("3dpw-mmhuman3d", body_model="~/body_models")
>>> for batch in loader:                      # the method plugin's dataset reader
...     evaluator.update_smpl(pred=batch_pred_params, target=batch_gt_params, gender=batch_gender)
>>> evaluator.compute()                       # {"MPJPE": ..., "PA-MPJPE": ..., "num_samples": ...} (mm)

Inputs are metres (``input_unit="mm"`` for millimetre inputs); reports are millimetres, except
where a protocol reports otherwise (SA-HMR's PenE / ConFE in metres, ratios and percentages).
Evaluators never update on NaN inputs: they raise, naming the samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from meshrec.metrics import functional as F
from meshrec.metrics.protocols import BodyModelSet, Protocol, get_protocol, list_protocols
from meshrec.ops.metrics import nearest_points, points_inside_mesh, procrustes, sample_sdf

if TYPE_CHECKING:
    from meshrec.body import JointRegressor

__all__ = [
    "EgoBodyEvaluator",
    "Evaluator",
    "JointMeshEvaluator",
    "SceneEvaluator",
    "evaluator",
    "image_visibility",
]

_UNITS = {"m": 1000.0, "mm": 1.0}


def _as_tensor(name: str, value: Any, dtype=torch.float64) -> torch.Tensor:
    if value is None:
        return None
    tensor = torch.as_tensor(value)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {tensor.dtype}")
    tensor = tensor.detach().to(dtype)
    bad = torch.isnan(tensor).flatten(1).any(1) if tensor.dim() > 1 else torch.isnan(tensor)
    if bad.any():
        raise ValueError(f"{name} contains NaN (samples {torch.nonzero(bad).flatten()[:10].tolist()} of this batch)")
    return tensor


def _check_batch(name: str, tensor: torch.Tensor, layout: str, dims: int, last: int = 3) -> None:
    if tensor.dim() != dims or tensor.shape[-1] != last or tensor.shape[0] == 0:
        raise ValueError(f"{name} must have shape {layout} with at least one sample, got {tuple(tensor.shape)}")


class Evaluator:
    """Base class: a protocol, accumulated per-sample values, and ``compute`` / ``reset``."""

    def __init__(
        self,
        protocol: str | Protocol,
        joint_regressor: np.ndarray | torch.Tensor | str | Path | None = None,
        body_model: str | Path | BodyModelSet | None = None,
        input_unit: str = "m",
    ) -> None:
        self.protocol = get_protocol(protocol)
        if input_unit not in _UNITS:
            raise ValueError(f"input_unit must be 'm' or 'mm', got {input_unit!r}")
        self.to_mm = _UNITS[input_unit]
        self.to_m = self.to_mm / 1000.0
        self.body_models = body_model if isinstance(body_model, BodyModelSet) else BodyModelSet(body_model)
        self._regressor_source = joint_regressor
        self._regressor: torch.Tensor | None = None
        self.reset()

    def reset(self) -> None:
        """Forgets everything accumulated."""
        self._values: dict[str, list[torch.Tensor]] = {}
        self._num_samples = 0

    def __len__(self) -> int:
        return self._num_samples

    @property
    def joint_regressor(self) -> "JointRegressor":
        """The protocol's float64 :class:`meshrec.body.JointRegressor` (given, or loaded from
        ``body_model``)."""
        if self._regressor is None:
            from meshrec.body import JointRegressor, load_joint_regressor

            source = self._regressor_source
            if source is None or isinstance(source, (str, Path)):
                if self.protocol.regressor is None:
                    raise ValueError(f"protocol {self.protocol.name!r} uses the SMPL joints, not a regressor")
                if isinstance(source, (str, Path)) and Path(source).is_file():
                    location, name = Path(source).parent, Path(source).name
                else:
                    location, name = (source if source is not None else self.body_models.location), self.protocol.regressor
                source = load_joint_regressor(name, location)
            matrix = source.detach().cpu().numpy() if torch.is_tensor(source) else np.asarray(source)
            if matrix.ndim != 2:
                raise ValueError(f"joint_regressor must be (J, V), got {tuple(matrix.shape)}")
            self._regressor = JointRegressor(matrix, dtype=torch.float64)
        return self._regressor

    def regress(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, J, 3) joints of (B, V, 3) vertices with the protocol's regressor."""
        regressor = self.joint_regressor.to(vertices.device)
        if regressor.num_vertices != vertices.shape[-2]:
            raise ValueError(f"the joint regressor expects {regressor.num_vertices} vertices, got {vertices.shape[-2]}")
        return regressor(vertices.to(torch.float64))

    def _add(self, key: str, values: torch.Tensor) -> None:
        """Stores per-sample values (B, ...) as a (B, K) float64 CPU block."""
        values = values.detach().to("cpu", torch.float64)
        self._values.setdefault(key, []).append(values.reshape(values.shape[0], -1) if values.dim() else values.reshape(1, 1))

    def num_invalid_samples(self) -> int:
        """Samples with a non-finite value in any accumulated metric (a NaN or infinite body, scene
        or joint). They are not dropped: every average they enter is NaN, so an invalid output
        never scores well; this count says how many there were."""
        invalid = torch.zeros(self._num_samples, dtype=torch.bool)
        for blocks in self._values.values():
            values = torch.cat(blocks) if blocks else torch.zeros(0, 1, dtype=torch.float64)
            if len(values) == self._num_samples:  # per-sample metrics (not per-sequence ones)
                invalid |= ~torch.isfinite(values).all(dim=1)
        return int(invalid.sum())

    def _cat(self, key: str) -> torch.Tensor:
        if key not in self._values:
            return torch.zeros(0, 1, dtype=torch.float64)
        return torch.cat(self._values[key])

    def _require_samples(self) -> None:
        if self._num_samples == 0:
            raise ValueError(f"{type(self).__name__} ({self.protocol.name}): no samples were added; call update() first")

    def compute(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


def _pooled(errors: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean over every valid entry (joint-frame pooling)."""
    if mask is None:
        return float(errors.mean())
    weights = mask.to(errors.dtype)
    return float((errors * weights).sum() / weights.sum()) if weights.sum() > 0 else float("nan")


def _per_frame(errors: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean over frames of the per-frame mean (frames without valid entries skipped; a frame
    with a non-finite error makes the result NaN)."""
    per_frame = F.masked_mean(errors, mask)
    if mask is None:
        return float(per_frame.mean())
    has_entries = mask.to(torch.bool).any(dim=-1)
    return float(per_frame[has_entries].mean()) if bool(has_entries.any()) else float("nan")


class JointMeshEvaluator(Evaluator):
    """Single-person joint and mesh errors: the "standard", "3dpw-mmhuman3d" and
    "3dpw-motionbert" protocols.

    Feed it meshes (joints are regressed with the protocol's regressor) or joints, or SMPL
    parameters through :meth:`update_smpl`, which runs the protocol's body models.
    """

    def update(
        self,
        pred_vertices: torch.Tensor | None = None,
        target_vertices: torch.Tensor | None = None,
        pred_joints: torch.Tensor | None = None,
        target_joints: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        pred_vertices_pve: torch.Tensor | None = None,
        sequence: Sequence[Any] | torch.Tensor | None = None,
    ) -> None:
        """Adds a batch.

        Args:
            pred_vertices, target_vertices: (B, 6890, 3) meshes (camera frame, metres).
            pred_joints, target_joints: (B, J, 3) joints in the regressor's layout (17 H36M
                joints), used instead of regressing them from the meshes.
            mask: optional (B, 14) validity of the evaluated joints (default all valid).
            pred_vertices_pve: the predicted mesh to use for PVE when the protocol builds it
                differently (mmhuman3d: through the ground truth's gendered model).
            sequence: optional (B,) sequence ids (consecutive frames in order), for the
                acceleration error of the standard protocol.
        """
        pred_vertices = _as_tensor("pred_vertices", pred_vertices)
        target_vertices = _as_tensor("target_vertices", target_vertices)
        pred_joints = _as_tensor("pred_joints", pred_joints)
        target_joints = _as_tensor("target_joints", target_joints)
        pred_vertices_pve = _as_tensor("pred_vertices_pve", pred_vertices_pve)
        if pred_joints is None:
            if pred_vertices is None:
                raise ValueError("give pred_joints or pred_vertices (joints are regressed from the mesh)")
            pred_joints = self.regress(pred_vertices)
        if target_joints is None:
            if target_vertices is None:
                raise ValueError("give target_joints or target_vertices (joints are regressed from the mesh)")
            target_joints = self.regress(target_vertices)
        _check_batch("pred_joints", pred_joints, "(B, J, 3)", 3)
        if pred_joints.shape != target_joints.shape:
            raise ValueError(f"pred_joints {tuple(pred_joints.shape)} and target_joints {tuple(target_joints.shape)} differ")
        p = self.protocol
        batch = pred_joints.shape[0]
        if mask is not None:
            mask = torch.as_tensor(mask).bool().cpu()
            if mask.shape != (batch, len(p.joints)):
                raise ValueError(f"mask must have shape (B, {len(p.joints)}), got {tuple(mask.shape)}")
        self._add("mask", torch.ones(batch, len(p.joints), dtype=torch.float64) if mask is None else mask.double())
        if (sequence is None) != (not self._sequences) and self._num_samples:
            raise ValueError("pass sequence ids with every batch or with none")
        errors = F.mpjpe(pred_joints, target_joints, root=p.root, joints=p.joints, per_joint=True)
        pa_errors = F.pa_mpjpe(pred_joints, target_joints, joints=p.joints, per_joint=True,
                               align_weights=None if mask is None else mask.to(pred_joints.device).double())
        self._add("mpjpe", errors)
        self._add("pa_mpjpe", pa_errors)
        if p.name == "3dpw-motionbert":
            self._add("mpjpe_17j", F.mpjpe(pred_joints, target_joints, root=p.root, per_joint=True))
            self._add("pa_mpjpe_17j", F.pa_mpjpe(pred_joints, target_joints, per_joint=True))
        pve_pred = pred_vertices_pve if pred_vertices_pve is not None else pred_vertices
        if pve_pred is not None and target_vertices is not None:
            roots = {}
            if p.pve_root == "pelvis":
                pve_pred_joints = pred_joints if pve_pred is pred_vertices else self.regress(pve_pred)
                roots = dict(pred_root=pve_pred_joints[:, p.root], target_root=target_joints[:, p.root])
            self._add("pve", F.pve(pve_pred, target_vertices, **roots, per_vertex=True).mean(-1, keepdim=True))
            if p.name == "standard":
                self._add("pa_pve", F.pve(pve_pred, target_vertices, **roots, alignment="procrustes"))
        if sequence is not None:
            sequence = list(torch.as_tensor(sequence).tolist()) if isinstance(sequence, torch.Tensor) else list(sequence)
            if len(sequence) != batch:
                raise ValueError(f"sequence must have one id per sample ({batch}), got {len(sequence)}")
            self._sequences.extend(sequence)
            root = F.root_positions
            self._add("seq_pred", (pred_joints - root(pred_joints, p.root)[:, None])[:, list(p.joints)])
            self._add("seq_target", (target_joints - root(target_joints, p.root)[:, None])[:, list(p.joints)])
        self._num_samples += batch

    def reset(self) -> None:
        super().reset()
        self._sequences: list[Any] = []

    def update_smpl(
        self,
        pred: Mapping[str, torch.Tensor],
        target: Mapping[str, torch.Tensor],
        gender: Sequence[str] | str | None = None,
        mask: torch.Tensor | None = None,
        sequence: Sequence[Any] | None = None,
    ) -> None:
        """Adds a batch given SMPL parameters (``betas``, ``body_pose``, ``global_orient``,
        optional ``transl``): the prediction goes through the neutral model, the ground truth
        through the protocol's model (gendered with ``gender``, one "male" / "female" / "m" /
        "f" per sample, or neutral)."""
        p = self.protocol
        if p.target_model == "gendered" and gender is None and p.name != "standard":
            raise ValueError(f"protocol {p.name!r} evaluates against gendered ground truth: pass gender")
        if p.name == "3dpw-mmhuman3d" and gender is not None:
            # mmhuman3d: 'm' is male, every other value female.
            gender = ["male" if str(g).lower() in ("m", "male") else "female" for g in
                      ([gender] if isinstance(gender, str) else gender)]
        target_gender = gender if (p.target_model == "gendered" and gender is not None) else "neutral"
        pred_vertices, _ = self.body_models.forward("neutral", **pred)
        target_vertices, _ = self.body_models.forward(target_gender, **target)
        pred_vertices_pve = None
        if p.pred_pve_model == "gendered" and gender is not None:
            pred_vertices_pve, _ = self.body_models.forward(target_gender, **pred)
        self.update(pred_vertices=pred_vertices, target_vertices=target_vertices, mask=mask,
                    pred_vertices_pve=pred_vertices_pve, sequence=sequence)

    def _acceleration_errors(self) -> torch.Tensor:
        pred, target = self._cat("seq_pred"), self._cat("seq_target")
        joints = len(self.protocol.joints)
        pred, target = pred.view(-1, joints, 3), target.view(-1, joints, 3)
        errors, start = [], 0
        ids = self._sequences
        while start < len(ids):
            end = start
            while end < len(ids) and ids[end] == ids[start]:
                end += 1
            if end - start >= 3:
                errors.append(F.acceleration_error(pred[start:end], target[start:end]))
            start = end
        return torch.cat(errors) if errors else torch.zeros(0, dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        """The protocol's metrics (mm; PCK and AUC in percent; ACCEL in mm per frame^2) and
        ``num_samples``."""
        self._require_samples()
        p = self.protocol
        mask = self._cat("mask").bool()
        pool = _pooled if p.pooling == "joint-frame" else _per_frame
        mm = self.to_mm
        errors, pa_errors = self._cat("mpjpe") * mm, self._cat("pa_mpjpe") * mm
        report: dict[str, float] = {}
        if p.name == "3dpw-motionbert":
            report["mpjpe"] = pool(errors, mask)
            report["pa_mpjpe"] = pool(pa_errors, mask)
            report["mpjpe_17j"] = _per_frame(self._cat("mpjpe_17j") * mm, None)
            report["pa_mpjpe_17j"] = _per_frame(self._cat("pa_mpjpe_17j") * mm, None)
            if "pve" in self._values:
                report["mpve"] = float((self._cat("pve") * mm).mean())
        else:
            report["MPJPE"] = pool(errors, mask)
            report["PA-MPJPE"] = pool(pa_errors, mask)
            if "pve" in self._values:
                report["PVE"] = float((self._cat("pve") * mm).mean())
            thresholds = torch.linspace(0.0, 150.0, 31, dtype=torch.float64)
            pck_name, auc_name = ("3DPCK", "3DAUC") if p.name == "3dpw-mmhuman3d" else ("PCK", "AUC")
            for prefix, values in (("", errors), ("PA-", pa_errors)):
                if p.name == "standard" and prefix:
                    continue
                report[prefix + pck_name] = 100.0 * pool((values < 150.0).double(), mask)
                curve = (values[..., None] < thresholds).double().mean(-1)
                report[prefix + auc_name] = 100.0 * pool(curve, mask)
            if p.name == "standard":
                if "pa_pve" in self._values:
                    report["PA-PVE"] = float((self._cat("pa_pve") * mm).mean())
                if self._sequences:
                    accel = self._acceleration_errors() * mm
                    if accel.numel():
                        report["ACCEL"] = float(accel.mean())
        report["num_samples"] = self._num_samples
        report["num_invalid_samples"] = self.num_invalid_samples()
        return report


class SceneEvaluator(Evaluator):
    """World-frame errors and scene plausibility: the "rich-sahmr" and "prox-sahmr" protocols
    (SA-HMR's ``tools/eval_results.py``)."""

    def update(
        self,
        pred_vertices: torch.Tensor,
        target_vertices: torch.Tensor,
        sdf: torch.Tensor | None = None,
        grid_min: Sequence[float] | None = None,
        grid_max: Sequence[float] | None = None,
        contact: torch.Tensor | None = None,
    ) -> None:
        """Adds a batch of frames of one scene.

        Args:
            pred_vertices: (B, 6890, 3) predicted meshes in the world frame (metres).
            target_vertices: (B, 6890, 3) ground truth in SMPL topology, world frame.
            sdf, grid_min, grid_max: the scene's signed-distance grid (SA-HMR's ``*_sdf.npy`` and
                json ``min`` / ``max``); needed for PenE and ConFE.
            contact: optional (B, 6890) or (6890,) ground-truth contact labels (RICH); None for
                PROX (ConFE = PenE).
        """
        pred_vertices = _as_tensor("pred_vertices", pred_vertices)
        target_vertices = _as_tensor("target_vertices", target_vertices)
        _check_batch("pred_vertices", pred_vertices, "(B, V, 3)", 3)
        if pred_vertices.shape != target_vertices.shape:
            raise ValueError(f"pred_vertices {tuple(pred_vertices.shape)} and target_vertices {tuple(target_vertices.shape)} differ")
        p = self.protocol
        pred_joints, target_joints = self.regress(pred_vertices), self.regress(target_vertices)
        pred_pelvis, target_pelvis = pred_joints[:, p.root], target_joints[:, p.root]
        shift = (target_pelvis - pred_pelvis)[:, None]
        selected = list(p.joints)
        self._add("GMPJPE", F.mpjpe(pred_joints[:, selected], target_joints[:, selected]))
        self._add("GMPVE", F.pve(pred_vertices, target_vertices))
        self._add("MPJPE", F.mpjpe((pred_joints + shift)[:, selected], target_joints[:, selected]))
        self._add("MPVE", F.pve(pred_vertices + shift, target_vertices))
        if sdf is not None:
            if grid_min is None or grid_max is None:
                raise ValueError("sdf needs grid_min and grid_max (the scene json's min and max)")
            sdf = torch.as_tensor(sdf).detach().to(torch.float64)
            values = sample_sdf(pred_vertices * self.to_m, sdf, grid_min, grid_max)
            penetration = torch.where(values < 0, -values, torch.zeros_like(values))
            self._add("PenE", penetration.sum(-1))
            if contact is None:
                self._add("ConFE", penetration.sum(-1))
            else:
                labels = torch.as_tensor(contact).bool().expand_as(values)
                self._add("ConFE", torch.where(labels, values.abs(), penetration).sum(-1))
        elif "PenE" in self._values:
            raise ValueError("this evaluator has seen scene SDFs before: pass sdf for every batch")
        self._num_samples += pred_vertices.shape[0]

    def compute(self) -> dict[str, float]:
        """GMPJPE, GMPVE, MPJPE, MPVE (mm, per-frame means averaged over frames) and, when SDFs
        were given, PenE and ConFE (metres, summed over vertices, averaged over frames)."""
        self._require_samples()
        report = {key: float(self._cat(key).mean() * self.to_mm) for key in ("GMPJPE", "GMPVE", "MPJPE", "MPVE")}
        for key in ("PenE", "ConFE"):
            if key in self._values:
                report[key] = float(self._cat(key).mean())
        report["num_samples"] = self._num_samples
        report["num_invalid_samples"] = self.num_invalid_samples()
        return report


def image_visibility(
    points: torch.Tensor,
    focal_length: torch.Tensor | float,
    principal_point: torch.Tensor | Sequence[float],
    image_size: Sequence[int] = (1920, 1080),
) -> torch.Tensor:
    """EgoHMR's visibility: whether camera-frame points (..., N, 3) project (pinhole, focal
    (...) or scalar, the same for x and y; principal point (..., 2)) into ``[0, width) x [0,
    height)``. Truncation only: no occlusion test (and, as EgoHMR, no test that z > 0)."""
    focal = torch.as_tensor(focal_length, dtype=points.dtype, device=points.device)
    center = torch.as_tensor(principal_point, dtype=points.dtype, device=points.device)
    while focal.dim() < points.dim() - 1:
        focal = focal[..., None]
    projected = points[..., :2] / points[..., 2:3] * focal[..., None] + center[..., None, :]
    width, height = image_size
    return (projected[..., 0] >= 0) & (projected[..., 0] < width) & (projected[..., 1] >= 0) & (projected[..., 1] < height)


class EgoBodyEvaluator(Evaluator):
    """The "egobody-egohmr" protocol: multi-sample predictions, visibility split, diversity and
    scene plausibility, as EgoHMR's ``test_egohmr.py`` reports them."""

    def update(
        self,
        pred_joints: torch.Tensor,
        target_joints: torch.Tensor,
        joint_visible: torch.Tensor,
        pred_vertices: torch.Tensor | None = None,
        target_vertices: torch.Tensor | None = None,
        vertex_visible: torch.Tensor | None = None,
        scene_points: torch.Tensor | None = None,
        faces: torch.Tensor | None = None,
    ) -> None:
        """Adds a batch of B frames with S samples each.

        Args:
            pred_joints: (B, S, 24, 3) or (B, 24, 3) predicted SMPL joints, camera frame,
                translation applied (metres).
            target_joints: (B, 24, 3) ground-truth joints (gendered SMPL, with translation).
            joint_visible: (B, 24) bool (:func:`image_visibility` of the ground truth).
            pred_vertices, target_vertices, vertex_visible: (B, S, V, 3), (B, V, 3), (B, V), for
                V2V and the scene metrics.
            scene_points: (B, P, 3) scene points in the camera frame (EgoHMR's 20000-point cube),
                for the collision and contact ratios.
            faces: (F, 3) mesh faces for the collision ratio (SMPL's).
        """
        pred_joints = _as_tensor("pred_joints", pred_joints)
        if pred_joints is not None and pred_joints.dim() == 3:
            pred_joints = pred_joints[:, None]
        target_joints = _as_tensor("target_joints", target_joints)
        _check_batch("pred_joints", pred_joints, "(B, S, J, 3)", 4)
        batch, samples, count = pred_joints.shape[:3]
        if target_joints.shape != (batch, count, 3):
            raise ValueError(f"target_joints must have shape {(batch, count, 3)}, got {tuple(target_joints.shape)}")
        visible = torch.as_tensor(joint_visible).bool()
        if visible.shape != (batch, count):
            raise ValueError(f"joint_visible must have shape {(batch, count)}, got {tuple(visible.shape)}")
        root = self.protocol.root
        target_rel = target_joints - target_joints[:, None, root]
        pred_rel = pred_joints - pred_joints[:, :, None, root]
        vis = visible[:, None].expand(batch, samples, count).double()
        g_errors = torch.linalg.vector_norm(pred_joints - target_joints[:, None], dim=-1)  # (B, S, J)
        errors = torch.linalg.vector_norm(pred_rel - target_rel[:, None], dim=-1)
        # PA alignment on the visible joints, the invisible ones zeroed but kept (EgoHMR's quirk).
        target_rel_s = target_rel[:, None].expand_as(pred_rel)
        fit = procrustes(pred_rel * vis[..., None], target_rel_s * vis[..., None])
        aligned = fit.scale[..., None, None] * (pred_rel @ fit.rotation.transpose(-1, -2)) + fit.translation[..., None, :]
        pa_errors = torch.linalg.vector_norm(aligned - target_rel_s, dim=-1)
        for key, values in (("G-MPJPE", g_errors), ("MPJPE", errors), ("PA-MPJPE", pa_errors)):
            self._add(key, values.mean(-1))
            self._add(key + "-vis", (values * vis).sum(-1))
            self._add(key + "-invis", (values * (1 - vis)).sum(-1))
        self._add("joint-vis-count", visible.sum(-1).double())
        self._add("joint-invis-count", (~visible).sum(-1).double())
        self._add("MPJPE-invis-best", (errors * (1 - vis)).sum(-1).amin(-1))
        if samples >= 2:
            self._add("std-joints", F.sample_std(pred_rel))
            # EgoHMR averages per frame over the visible / invisible joints; frames without any are NaN.
            self._add("std-joints-vis", F.sample_std(pred_rel, mask=visible))
            self._add("std-joints-invis", F.sample_std(pred_rel, mask=~visible))
            # EgoHMR's normaliser counts every ordered pair twice: half the mean pairwise distance.
            self._add("apd-joints", F.average_pairwise_distance(pred_rel) / 2)
            self._add("apd-joints-vis", F.average_pairwise_distance(pred_rel, mask=visible) / 2)
            self._add("apd-joints-invis", F.average_pairwise_distance(pred_rel, mask=~visible) / 2)
        if pred_vertices is not None:
            pred_vertices = _as_tensor("pred_vertices", pred_vertices)
            if pred_vertices.dim() == 3:
                pred_vertices = pred_vertices[:, None]
            target_vertices = _as_tensor("target_vertices", target_vertices)
            if target_vertices is None or vertex_visible is None:
                raise ValueError("V2V needs target_vertices and vertex_visible with pred_vertices")
            vertex_vis = torch.as_tensor(vertex_visible).bool()
            if pred_vertices.shape[:2] != (batch, samples) or target_vertices.shape != (batch, *pred_vertices.shape[2:]):
                raise ValueError(f"pred_vertices (B, S, V, 3) and target_vertices (B, V, 3) do not match the joints' batch")
            vv = vertex_vis[:, None].double()
            v2v = torch.linalg.vector_norm(
                (pred_vertices - pred_joints[:, :, None, root]) - (target_vertices - target_joints[:, None, root])[:, None],
                dim=-1,
            )
            self._add("V2V", v2v.mean(-1))
            self._add("V2V-vis", (v2v * vv).sum(-1))
            self._add("V2V-invis", (v2v * (1 - vv)).sum(-1))
            self._add("vertex-vis-count", vertex_vis.sum(-1).double())
            self._add("vertex-invis-count", (~vertex_vis).sum(-1).double())
            if scene_points is not None:
                scene = _as_tensor("scene_points", scene_points)
                flat_vertices = pred_vertices.reshape(batch * samples, *pred_vertices.shape[2:])
                flat_scene = scene[:, None].expand(batch, samples, *scene.shape[1:]).reshape(batch * samples, *scene.shape[1:])
                threshold = float(self.protocol.options["contact_threshold_squared"])
                squared = nearest_points(flat_vertices * self.to_m, flat_scene * self.to_m).distance.amin(-1).square()
                self._add("contact-ratio", (squared < threshold).double().view(batch, samples))
                if faces is None:
                    raise ValueError("the collision ratio needs the mesh faces (SMPL's)")
                inside = points_inside_mesh(flat_scene, flat_vertices, torch.as_tensor(faces))
                self._add("collision-ratio", inside.double().mean(-1).view(batch, samples))
        self._num_samples += batch

    def compute(self) -> dict[str, float]:
        """EgoHMR's printed metrics (mm; ratios as fractions) and ``num_samples``."""
        self._require_samples()
        mm = self.to_mm
        samples = self._cat("MPJPE").shape[1]
        report: dict[str, float] = {}
        vis_count, invis_count = float(self._cat("joint-vis-count").sum()), float(self._cat("joint-invis-count").sum())

        def ratio(total: float, count: float) -> float:
            return total / count if count > 0 else float("nan")

        for key in ("G-MPJPE", "MPJPE", "PA-MPJPE"):
            report[key] = float(self._cat(key).mean()) * mm
            report[key + "-vis"] = ratio(float(self._cat(key + "-vis").sum()), vis_count * samples) * mm
            report[key + "-invis"] = ratio(float(self._cat(key + "-invis").sum()), invis_count * samples) * mm
        if "V2V" in self._values:
            vv, vi = float(self._cat("vertex-vis-count").sum()), float(self._cat("vertex-invis-count").sum())
            report["V2V"] = float(self._cat("V2V").mean()) * mm
            report["V2V-vis"] = ratio(float(self._cat("V2V-vis").sum()), vv * samples) * mm
            report["V2V-invis"] = ratio(float(self._cat("V2V-invis").sum()), vi * samples) * mm
        report["MPJPE-invis-best-of-samples"] = ratio(float(self._cat("MPJPE-invis-best").sum()), invis_count) * mm
        for key in ("std-joints", "std-joints-vis", "std-joints-invis", "apd-joints", "apd-joints-vis", "apd-joints-invis"):
            if key in self._values:
                report[key] = float(torch.nanmean(self._cat(key))) * mm
        for key in ("collision-ratio", "contact-ratio"):
            if key in self._values:
                report[key] = float(self._cat(key).mean())
        report["num_samples"] = self._num_samples
        report["num_invalid_samples"] = self.num_invalid_samples()
        return report


_CLASSES = {"joints": JointMeshEvaluator, "scene": SceneEvaluator, "egobody": EgoBodyEvaluator}


def evaluator(protocol: str | Protocol = "standard", **kwargs: Any) -> Evaluator:
    """An evaluator for a named protocol (see :func:`meshrec.metrics.list_protocols`).

    Keyword arguments go to the evaluator: ``joint_regressor`` (array, or a path; default: the
    protocol's file found in ``body_model``), ``body_model`` (folder of the SMPL files, for
    :meth:`JointMeshEvaluator.update_smpl` and regressor loading), ``input_unit`` ("m" or "mm").
    """
    protocol = get_protocol(protocol)
    if protocol.evaluator not in _CLASSES:
        raise ValueError(f"protocol {protocol.name!r} names an unknown evaluator {protocol.evaluator!r}; "
                         f"known protocols: {', '.join(list_protocols())}")
    return _CLASSES[protocol.evaluator](protocol, **kwargs)
