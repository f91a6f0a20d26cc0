"""The ``motionbert`` method: 2D keypoint sequences -> SMPL per frame (MotionBERT's mesh model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import meshrec
from meshrec.body import SMPL_OUTPUT_JOINT_NAMES, JointRegressor, find_body_model_file, load_joint_regressor
from meshrec.io.checkpoints import load_checkpoint
from meshrec_motionbert.checkpoint import load_mesh_network
from meshrec_motionbert.keypoints import (
    average_rotations,
    coco_to_h36m,
    flip_keypoints,
    flip_rotations,
    frame_owners,
    normalize,
    window_starts,
)
from meshrec_motionbert.refine import LAYOUTS, RefinerNetwork, load_refiner_network

__all__ = ["MotionBERT", "estimate_translation"]

MAX_CLIP = 243
H36M_REGRESSORS = ("J_regressor_h36m_correct.npy", "J_regressor_h36m.npy")


def _image_size(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.replace("x", ",").split(",")
    size = tuple(float(v) for v in value)
    if len(size) != 2 or not all(v > 0 for v in size):
        raise ValueError(f"image_size must be (W, H), two positive numbers; got {value!r}")
    return size


def _clip_len(value: Any) -> int:
    value = int(value)
    if not 1 <= value <= MAX_CLIP:
        raise ValueError(f"clip_len must be in [1, {MAX_CLIP}] (the temporal embedding's length), got {value}")
    return value


def _overlap(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"window_overlap must be a whole number of frames, got {value}")
    return int(value)


def default_overlap(clip_len: int) -> int:
    """Frames shared by consecutive windows when ``window_overlap`` is not given: 27 for 243."""
    return min(27, clip_len // 3)


def estimate_translation(joints: torch.Tensor, keypoints: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-frame translation t (B, 3) that best projects ``joints + t`` onto ``keypoints``.

    Args:
        joints: (B, J, 3) 3D joints in metres (root-free model frame).
        keypoints: (B, J, 3) observed pixels and confidence (the weights).
        intrinsics: (B, 3, 3) pinhole K.

    Pinhole projection u = fx (X + tx) / (Z + tz) + cx is linear in t after multiplying by the
    depth: fx tx - (u - cx) tz = (u - cx) Z - fx X (and the same for y). The confidence-weighted
    least-squares solution (minimum-norm pseudo-inverse, so a frame without confident joints
    gets t = 0) is SPIN's ``estimate_translation`` without its weak-perspective prior: the depth
    comes from the size of the predicted body against the size of the 2D skeleton.
    """
    dtype = torch.float64
    joints, keypoints, intrinsics = joints.to(dtype), keypoints.to(dtype), intrinsics.to(dtype)
    f = torch.stack([intrinsics[:, 0, 0], intrinsics[:, 1, 1]], dim=-1)[:, None]  # (B, 1, 2)
    c = torch.stack([intrinsics[:, 0, 2], intrinsics[:, 1, 2]], dim=-1)[:, None]
    offset = keypoints[..., :2] - c  # (B, J, 2)
    weight = keypoints[..., 2].clamp(min=0).sqrt()[..., None]  # (B, J, 1)
    batch, count = joints.shape[:2]
    a = torch.zeros(batch, count, 2, 3, dtype=dtype, device=joints.device)
    a[..., 0, 0] = f[..., 0]
    a[..., 1, 1] = f[..., 1]
    a[..., :, 2] = -offset
    b = offset * joints[..., 2:3] - f * joints[..., :2]
    a = (a * weight[..., None]).reshape(batch, 2 * count, 3)
    b = (b * weight).reshape(batch, 2 * count, 1)
    return (torch.linalg.pinv(a) @ b).squeeze(-1)


class MotionBERT(meshrec.Method):
    """MotionBERT (Zhu et al., ICCV 2023), mesh recovery from 2D keypoint sequences.

    Per input: ``keypoint_sequence=`` (T, P, 17, 3) pixels and confidence of P people over T
    frames, H36M-17 order (or COCO-17 with ``keypoint_layout="coco17"``). Each person's sequence
    is normalised (``normalization``), cut into windows of at most ``clip_len`` frames overlapping
    by ``window_overlap`` frames (each frame is taken from the window where it is farthest from
    the ends), and regressed to SMPL rotations and betas per window (upstream: one set of betas
    per clip, so betas may change between windows).

    Output: one :class:`meshrec.Prediction` per input holding the T * P bodies frame-major
    (body ``t * P + p`` is person p in frame t), with ``extras["frames"] = T``,
    ``extras["people"] = P``, ``extras["joints_h36m"]`` (T * P, 17, 3) and
    ``extras["translation_estimated"]``. The model predicts no translation: with ``camera=``
    (or an image or ``image_size``, through :func:`meshrec.camera.default_intrinsics`) the
    camera-frame translation of each body is fitted to its 2D keypoints
    (:func:`estimate_translation`); otherwise ``transl`` is 0 and the bodies stand at the origin
    of the camera frame. Rotations are in the camera frame (as the training data).

    ``flip=True`` also runs the mirrored sequence, mirrors its rotations back and averages them
    as rotations (SVD projection of the mean, the geodesic midpoint), betas arithmetically, then
    runs SMPL once. Upstream's validation instead averages the axis-angle vectors and the
    vertices; the ``pw3d-motionbert`` evaluation does that to reproduce its table.
    """

    name = "motionbert"
    summary = "MotionBERT (DSTformer + SMPL head): video mesh recovery from 2D keypoint sequences"
    inputs = frozenset({meshrec.Input.KEYPOINT_SEQUENCE})
    optional_inputs = frozenset({meshrec.Input.IMAGE, meshrec.Input.CAMERA})
    needs_checkpoint = True
    checkpoint_help = (
        "meshrec-motionbert reads MotionBERT's mesh checkpoint checkpoint/mesh/FT_MB_release_MB_ft_pw3d/"
        "best_epoch.bin (Walter0807/MotionBERT, docs/mesh.md; also Hugging Face walterzhu/MotionBERT). It also needs "
        "SMPL_NEUTRAL.pkl and J_regressor_h36m_correct.npy (or J_regressor_h36m.npy) in the body-model folder."
    )
    body_model_type = "smpl"
    batch_size = 8
    joint_names = SMPL_OUTPUT_JOINT_NAMES
    options = (
        meshrec.Option("normalization", "bbox", "keypoint normalisation: 'bbox' (upstream's in-the-wild crop_scale "
                       "over the whole sequence) or 'image' (x / W * 2 - 1, y / W * 2 - H / W, as upstream's training "
                       "data)", choices=("bbox", "image")),
        meshrec.Option("image_size", None, "(W, H) in pixels for normalization='image' and default intrinsics "
                       "(default: the input image's size)", type=_image_size),
        meshrec.Option("keypoint_layout", "h36m17", "layout of the keypoints: 'h36m17', or 'coco17' (converted: "
                       "pelvis, thorax, spine and head top made from midpoints)", choices=("h36m17", "coco17")),
        meshrec.Option("flip", False, "test-time augmentation: average with the mirrored sequence (rotations "
                       "averaged on SO(3))"),
        meshrec.Option("clip_len", MAX_CLIP, "longest window in frames (1..243; upstream's wild inference 243, its "
                       "training 16)", type=_clip_len),
        meshrec.Option("window_overlap", None, "frames shared by consecutive windows of sequences longer than "
                       "clip_len (0..clip_len-1; default min(27, clip_len // 3))", type=_overlap),
        meshrec.Option("refine_layout", "consistent", "refiner checkpoint only: 6D encoding of the refined "
                       "method's rotations: 'consistent' (a zero residual returns the input) or 'upstream' (upstream's "
                       "row-layout encoding, which its released refiner was trained with)", choices=LAYOUTS),
        meshrec.Option("trust_checkpoint", False, "unpickle the checkpoint fully (only for files you trust)"),
    )

    @classmethod
    def build(cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device,
              **options: Any) -> "MotionBERT":
        if body_model is None:
            raise ValueError("method 'motionbert' needs the SMPL body model")
        if options["window_overlap"] is None:
            options["window_overlap"] = default_overlap(options["clip_len"])
        if not 0 <= options["window_overlap"] < options["clip_len"]:
            raise ValueError(f"window_overlap must be in [0, clip_len={options['clip_len']}), got "
                             f"{options['window_overlap']}")
        # the regressor first: a missing file is named before the slow checkpoint load
        location = body_model.model_file.parent if getattr(body_model, "model_file", None) else None
        regressor_path = find_body_model_file(H36M_REGRESSORS, location)
        content = load_checkpoint(checkpoint, trust=options["trust_checkpoint"])
        state = content.get("model", content) if isinstance(content, dict) else {}
        refiner = any(k.endswith("head.fc2.weight") and getattr(v, "dim", lambda: 0)() == 3 for k, v in state.items())
        if refiner:
            network = load_refiner_network(checkpoint, layout=options["refine_layout"], checkpoint=content)
        else:
            network = load_mesh_network(checkpoint, checkpoint=content)
        dtype = body_model.v_template.dtype
        regressor = JointRegressor(load_joint_regressor(regressor_path.name, regressor_path.parent), dtype=dtype)
        network.set_body_model(body_model, regressor)
        network = network.to(device).eval()
        method = cls(network, body_model, device, **options)
        method.h36m_regressor = regressor
        return method

    # -- checks -----------------------------------------------------------------------------------
    def check_sample(self, sample: meshrec.Sample) -> None:
        sequence = sample.keypoint_sequence
        if sequence is None:
            raise meshrec.MissingInputError(
                f"method 'motionbert' needs keypoint_sequence=... (T, P, 17, 3) pixels + confidence for "
                f"{sample.source}")
        if sequence.ndim != 4 or sequence.shape[-1] != 3:
            raise ValueError(f"keypoint_sequence of {sample.source} must be (T, P, 17, 3), got {sequence.shape}")
        frames, people, joints = sequence.shape[:3]
        if frames == 0 or people == 0:
            raise ValueError(f"keypoint_sequence of {sample.source} has {frames} frames and {people} people; "
                             "it needs at least one of each")
        if joints != 17:
            raise ValueError(f"keypoint_sequence of {sample.source} has {joints} joints per person; MotionBERT takes "
                             "17 (H36M-17, or COCO-17 with keypoint_layout='coco17')")
        if not np.isfinite(sequence).all():
            raise ValueError(f"keypoint_sequence of {sample.source} contains NaN or infinite values; give missing "
                             "keypoints confidence 0 and any finite position")
        if self.options["normalization"] == "image" and self._image_size(sample) is None:
            raise meshrec.MissingInputError(
                f"normalization='image' needs the image size for {sample.source}: pass image_size=(W, H) to "
                "load_method, or the image")

    def _image_size(self, sample: meshrec.Sample) -> tuple[float, float] | None:
        if self.options["image_size"] is not None:
            return self.options["image_size"]
        if sample.has(meshrec.Input.IMAGE):
            height, width = sample.image().shape[:2]
            return float(width), float(height)
        return None

    def _intrinsics(self, sample: meshrec.Sample) -> torch.Tensor | None:
        if sample.camera is not None:
            return torch.as_tensor(sample.camera, dtype=torch.float64)
        size = self._image_size(sample)
        if size is None:
            return None
        from meshrec.camera import default_intrinsics

        return default_intrinsics(int(round(size[1])), int(round(size[0])), torch.float64)

    # -- network ----------------------------------------------------------------------------------
    def _keypoints(self, sample: meshrec.Sample) -> np.ndarray:
        """(T, P, 17, 3) H36M-17 pixels + confidence."""
        sequence = np.asarray(sample.keypoint_sequence, dtype=np.float64)
        return coco_to_h36m(sequence) if self.options["keypoint_layout"] == "coco17" else sequence

    def _windows(self, frames: int) -> tuple[list[int], int, torch.Tensor, torch.Tensor]:
        """How a sequence of ``frames`` is cut: window starts, window length, and for every frame the
        window (T,) whose result it takes and its index (T,) in that window."""
        clip_len, overlap = self.options["clip_len"], self.options["window_overlap"]
        overlap = default_overlap(clip_len) if overlap is None else overlap
        starts = window_starts(frames, clip_len, overlap)
        length = min(clip_len, frames)
        owner = torch.as_tensor(frame_owners(frames, length, starts), device=self.device)
        index = torch.arange(frames, device=self.device) - torch.as_tensor(starts, device=self.device)[owner]
        return starts, length, owner, index

    def regress_sequence(self, clip: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """One person's normalised (T, 17, 3) sequence -> rotations (T, 24, 3, 3) and betas (T, 10),
        through windows (and the flipped pass with ``flip``)."""
        starts, length, owner, index = self._windows(len(clip))
        x = torch.as_tensor(clip, dtype=next(self.model.parameters()).dtype, device=self.device)
        windows = torch.stack([x[s:s + length] for s in starts])  # (W, L, 17, 3)
        out = self.model.regress(windows)
        rotmat, betas = out["rotmat"], out["betas"]
        if self.options["flip"]:
            mirrored = self.model.regress(flip_keypoints(windows))
            rotmat = average_rotations(rotmat, flip_rotations(mirrored["rotmat"]))
            betas = (betas + mirrored["betas"]) / 2
        return rotmat[owner, index], betas[owner, index]

    @property
    def is_refiner(self) -> bool:
        return isinstance(self.model, RefinerNetwork)

    def predict_batch(self, samples: list[meshrec.Sample]) -> list[meshrec.Prediction]:
        if self.is_refiner:
            raise ValueError("this motionbert method holds the refiner checkpoint, which refines another method's "
                             "predictions: pass it as refine=meshrec.load_method('motionbert', checkpoint=REFINER) "
                             "to meshrec.predict")
        return [self._predict(sample) for sample in samples]

    # -- refiner ----------------------------------------------------------------------------------
    def refine_sequence(self, clip: np.ndarray, rotmat: torch.Tensor) -> torch.Tensor:
        """One person's normalised (T, 17, 3) keypoints and input rotations (T, 24, 3, 3) ->
        refined rotations (T, 24, 3, 3), through windows (and the mirrored pass with ``flip``)."""
        starts, length, owner, index = self._windows(len(clip))
        dtype = next(self.model.parameters()).dtype
        x = torch.as_tensor(clip, dtype=dtype, device=self.device)
        rotmat = rotmat.to(self.device, dtype)
        windows = torch.stack([x[s:s + length] for s in starts])
        poses = torch.stack([rotmat[s:s + length] for s in starts])
        refined = self.model.refine(windows, poses)
        if self.options["flip"]:
            mirrored = self.model.refine(flip_keypoints(windows), flip_rotations(poses))
            refined = average_rotations(refined, flip_rotations(mirrored))
        return refined[owner, index]

    def refine(self, samples: list[meshrec.Sample], predictions: list[meshrec.Prediction]) -> list[meshrec.Prediction]:
        """Refines other methods' predictions with the refiner checkpoint.

        Either every sample has ``keypoint_sequence`` (T, P, 17, 3) and its prediction T * P
        bodies frame-major (as ``motionbert`` and ``fit`` give for sequences), or every sample is a
        frame with ``keypoints`` (P, 17, 3) and a prediction of P people, and the batch's frames
        are taken as one sequence in order (so ``batch_size`` sets the temporal context). Betas
        and translations are kept; rotations are refined; SMPL runs again.
        """
        with torch.inference_mode():  # meshrec.predict calls refine outside inference mode (for optimisers)
            return self._refine(samples, predictions)

    def _refine(self, samples: list[meshrec.Sample], predictions: list[meshrec.Prediction]) -> list[meshrec.Prediction]:
        if not self.is_refiner:
            raise ValueError("refining with motionbert needs MotionBERT's refiner checkpoint (checkpoint/mesh/"
                             "FT_MB_release_MB_ft_pw3d_refine_hybrik/best_epoch.bin); this method holds the mesh model")
        if all(s.keypoint_sequence is not None for s in samples):
            return [self._refine_one(self._keypoints(s), p, s) for s, p in zip(samples, predictions)]
        if all(s.keypoints is not None for s in samples):
            people = {len(s.keypoints) for s in samples} | {p.num_people for p in predictions}
            if len(people) != 1:
                raise ValueError(f"refining frames as a sequence needs the same people in every frame, in the same "
                                 f"order (keypoints and predictions); found counts {sorted(people)}")
            stacked = np.stack([np.asarray(s.keypoints, dtype=np.float64) for s in samples])
            if self.options["keypoint_layout"] == "coco17":
                stacked = coco_to_h36m(stacked)
            merged = meshrec.Prediction(**{name: torch.cat([getattr(p, name) for p in predictions]) for name in
                                           ("vertices", "joints", "global_orient", "body_pose", "betas", "transl",
                                            "scores")}, faces=predictions[0].faces, method=predictions[0].method)
            refined = self._refine_one(stacked, merged, samples[0])
            owner = torch.arange(len(samples), device=refined.vertices.device).repeat_interleave(people.pop())
            parts = refined.split(owner, len(samples), shared=("frames", "people", "refined_from"))
            for part, sample in zip(parts, samples):
                part.source = sample.source
                part.extras["frames"] = 1  # each part is one frame of the refined sequence
            return parts
        raise meshrec.MissingInputError("refining with motionbert needs keypoint_sequence=... (T, P, 17, 3) for every "
                                        "input, or keypoints=... (P, 17, 3) for every frame")

    def _refine_one(self, keypoints: np.ndarray, prediction: meshrec.Prediction,
                    sample: meshrec.Sample) -> meshrec.Prediction:
        frames, people = keypoints.shape[:2]
        if keypoints.shape[2] != 17:
            raise ValueError(f"{sample.source}: the refiner takes 17 keypoints per person, got {keypoints.shape[2]}")
        if prediction.num_people != frames * people:
            raise ValueError(f"{sample.source}: {prediction.num_people} predicted bodies for {frames} frames x "
                             f"{people} people; give one body per person and frame, frame-major")
        rotations = torch.cat([prediction.global_orient[:, None], prediction.body_pose], 1).reshape(
            frames, people, 24, 3, 3)
        size = self._image_size(sample)
        refined = torch.stack([self.refine_sequence(normalize(keypoints[:, p], self.options["normalization"], size),
                                                    rotations[:, p]) for p in range(people)], dim=1).flatten(0, 1)
        dtype = self.body_model.v_template.dtype
        refined = refined.to(dtype)
        betas = prediction.betas.to(self.device, dtype)[:, :10]
        transl = prediction.transl.to(self.device, dtype)
        body = self.body_model(betas=betas, global_orient=refined[:, :1], body_pose=refined[:, 1:], pose2rot=False)
        return meshrec.Prediction(
            vertices=body.vertices + transl[:, None], joints=body.joints + transl[:, None], global_orient=refined[:, 0],
            body_pose=refined[:, 1:], betas=betas, transl=transl, scores=prediction.scores.to(self.device),
            faces=self.body_model.faces_tensor, joint_names=self.joint_names, method=f"{prediction.method}+motionbert",
            extras={"frames": frames, "people": people, "refined_from": prediction.method,
                    "joints_h36m": self.h36m_regressor(body.vertices) + transl[:, None]},
        )

    def _predict(self, sample: meshrec.Sample) -> meshrec.Prediction:
        keypoints = self._keypoints(sample)
        frames, people = keypoints.shape[:2]
        size = self._image_size(sample)
        rotmats, betas = [], []
        for person in range(people):
            clip = normalize(keypoints[:, person], self.options["normalization"], size)
            rotmat, beta = self.regress_sequence(clip)
            rotmats.append(rotmat)
            betas.append(beta)
        rotmat = torch.stack(rotmats, dim=1).flatten(0, 1)  # (T * P, 24, 3, 3), frame-major
        beta = torch.stack(betas, dim=1).flatten(0, 1)
        dtype = self.body_model.v_template.dtype
        rotmat, beta = rotmat.to(dtype), beta.to(dtype)
        body = self.body_model(betas=beta, global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], pose2rot=False)
        h36m = self.h36m_regressor(body.vertices)
        observed = torch.as_tensor(keypoints, device=self.device).flatten(0, 1)  # (T * P, 17, 3)
        intrinsics = self._intrinsics(sample)
        if intrinsics is not None:
            transl = estimate_translation(h36m, observed, intrinsics.to(self.device).expand(len(h36m), 3, 3))
            transl = transl.to(dtype)
        else:
            transl = torch.zeros(len(h36m), 3, dtype=dtype, device=self.device)
        scores = observed[..., 2].clamp(0, 1).mean(dim=-1).to(dtype)
        return meshrec.Prediction(
            vertices=body.vertices + transl[:, None], joints=body.joints + transl[:, None],
            global_orient=rotmat[:, 0], body_pose=rotmat[:, 1:], betas=beta, transl=transl, scores=scores,
            faces=self.body_model.faces_tensor, joint_names=self.joint_names,
            extras={"frames": frames, "people": people, "joints_h36m": h36m + transl[:, None],
                    "translation_estimated": intrinsics is not None},
        )
