"""The ``fit`` method: SMPL fitted to each input's 2D keypoints, alone or refining a prediction."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import meshrec
from meshrec.errors import spell
from meshrec.body import SMPL_OUTPUT_JOINT_NAMES, load_joint_regressor
from meshrec.camera import default_intrinsics
from meshrec_fit.fitting import FitConfig, FitInit, SceneTerm, fit_smpl
from meshrec.body.keypoints import KeypointModel, get_layout
from meshrec_fit.scene_terms import GroundPlane, SceneSDF

__all__ = ["Fit"]

def _float_tuple(value: Any) -> tuple[float, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(float(item) for item in value)


def _fit_config_options() -> tuple[meshrec.Option, ...]:
    """One option per FitConfig field (weights, iterations, optimizer); None keeps the schedule's value."""
    defaults = FitConfig()
    options = []
    for f in fields(FitConfig):
        if f.name == "pose_hypotheses":
            continue
        default = getattr(defaults, f.name)
        options.append(meshrec.Option(
            f.name, None, f"FitConfig.{f.name} (default: the schedule's; 'default' has {default!r})",
            type=_float_tuple if isinstance(default, tuple) else type(default)))
    return tuple(options)


class Fit(meshrec.Method):
    """SMPLify-style fitting (see :mod:`meshrec_fit.fitting`).

    Per input: ``keypoints=`` (P, K, 3) pixels and confidence in the chosen layout, or
    ``keypoint_sequence=`` (T, P, K, 3) for a video (betas shared, poses smoothed in time).
    Intrinsics: ``camera=``, else :func:`meshrec.camera.default_intrinsics` of the image (an
    image, or a camera, is then required). Without a refined prediction each person starts
    upright, placed from the 2D torso (:func:`meshrec_fit.fitting.initial_placement`).

    Options: see ``options`` below (``meshrec.load_method("fit", ..., option=value)``).
    """

    name = "fit"
    summary = "SMPL fitted to 2D keypoints (COCO-17, OpenPose-25, H36M-17) with priors and optional scene terms"
    inputs = frozenset()
    optional_inputs = frozenset({meshrec.Input.IMAGE, meshrec.Input.CAMERA, meshrec.Input.KEYPOINTS,
                                 meshrec.Input.KEYPOINT_SEQUENCE, meshrec.Input.SCENE})
    needs_checkpoint = False
    mannequin_fallback = True  # nothing here was learnt on SMPL: any SMPL-format body fits
    batch_size = 32
    joint_names = SMPL_OUTPUT_JOINT_NAMES
    options = (
        meshrec.Option("keypoint_layout", "coco17", "layout of the keypoints (h36m17 needs J_regressor_h36m.npy "
                       "next to the SMPL files)", choices=("coco17", "openpose25", "h36m17")),
        meshrec.Option("schedule", "default", "optimisation schedule ('fast': fewer iterations)",
                       choices=("default", "fast")),
        meshrec.Option("ground_plane", None, "(a, b, c, d): the floor a x + b y + c z + d = 0 in the camera frame, "
                       "(a, b, c) pointing up: adds floor penetration and foot contact terms"),
        meshrec.Option("scene_sdf", None, "(sdf (X, Y, Z), grid_min, grid_max): the scene's signed-distance grid "
                       "in the camera frame (PROX / SA-HMR layout): adds a scene penetration term"),
        meshrec.Option("progress", False, "show the optimisation's progress bar"),
        *_fit_config_options(),
    )

    @classmethod
    def build(cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device,
              keypoint_layout: str, schedule: str, ground_plane: Any, scene_sdf: Any, progress: bool,
              **weights: Any) -> "Fit":
        if checkpoint is not None:
            raise meshrec.CheckpointError("method 'fit' has no weights; do not pass a checkpoint")
        config = FitConfig.schedule(schedule)
        for key, value in weights.items():
            if value is not None:
                setattr(config, key, value)
        config.__post_init__()
        layout = get_layout(keypoint_layout)
        regressor = None
        if layout.uses_h36m_regressor:
            location = body_model.model_file.parent if getattr(body_model, "model_file", None) else None
            regressor = torch.as_tensor(load_joint_regressor("J_regressor_h36m.npy", location))
        keypoint_model = KeypointModel(layout, regressor).to(device)
        method = cls(keypoint_model, body_model, device, keypoint_layout=layout.name, schedule=schedule,
                     ground_plane=ground_plane, scene_sdf=scene_sdf, progress=progress, **weights)
        method.fit_config = config
        method.scene = [GroundPlane.from_coefficients(ground_plane)] if ground_plane is not None else []
        if scene_sdf is not None:
            method.scene.append(SceneSDF.from_option(scene_sdf))
        return method

    @classmethod
    def demo(cls, out: Path, fast: bool = False, body_model: Any = None, progress: bool | None = None,
             photo: Path | bool | None = None, detector: str | None = None, camera: Any = None) -> dict[str, Any]:
        """``meshrec demo``: see :mod:`meshrec_fit.demo`. With ``photo`` (a path, or True for
        ultralytics' bus.jpg): ``meshrec demo --photo``, see :mod:`meshrec_fit.demo_photo`."""
        if photo is not None and photo is not False:
            from meshrec_fit.demo_photo import run_photo_demo

            return run_photo_demo(None if photo is True else photo, out=out, fast=fast, body_model=body_model,
                                  progress=progress, detector=detector, camera=camera)
        from meshrec_fit.demo import run_demo

        return run_demo(out=out, fast=fast, body_model=body_model, progress=progress)

    # -- checks -----------------------------------------------------------------------------------
    def check_sample(self, sample: meshrec.Sample) -> None:
        layout = self.model.layout
        observed = sample.keypoint_sequence if sample.keypoint_sequence is not None else sample.keypoints
        if observed is None:
            raise meshrec.MissingInputError(
                f"method 'fit' needs {spell('keypoints')} (P, K, 3) or {spell('keypoint_sequence')} (T, P, K, 3) "
                f"for {sample.source}")
        if observed.shape[-2] != len(layout):
            raise ValueError(
                f"keypoints of {sample.source} have {observed.shape[-2]} points per person but the layout "
                f"{layout.name!r} has {len(layout)}; pick the layout with {spell('keypoint_layout', 'NAME')} (coco17: 17, "
                "openpose25: 25, h36m17: 17)")
        people_confidence = observed[..., 2].reshape(-1, observed.shape[-2])
        if np.any(people_confidence.max(axis=1) <= 0):
            raise ValueError(f"keypoints of {sample.source}: a person has no keypoint with confidence > 0; "
                             "drop that person or give confidences")
        if sample.camera is None and not sample.has(meshrec.Input.IMAGE):
            raise meshrec.MissingInputError(
                f"method 'fit' needs {spell('camera', 'K')} (3x3 intrinsics) for {sample.source}, or the image, whose size "
                "gives default intrinsics (focal length = image diagonal)")

    # -- fitting ----------------------------------------------------------------------------------
    def _intrinsics(self, sample: meshrec.Sample, dtype: torch.dtype) -> torch.Tensor:
        if sample.camera is not None:
            return torch.as_tensor(sample.camera, dtype=dtype, device=self.device)
        height, width = sample.image().shape[:2]
        return default_intrinsics(height, width, dtype).to(self.device)

    def _scene_terms(self) -> dict[str, SceneTerm]:
        terms: dict[str, SceneTerm] = {}
        for part in self.scene:
            terms.update(part.terms())
        return terms

    def _fit(self, keypoints: torch.Tensor, intrinsics: torch.Tensor, people: int | None, init: FitInit | None):
        return fit_smpl(self.body_model, self.model, keypoints, intrinsics, self.fit_config, people=people,
                        init=init, scene_terms=self._scene_terms(), progress=self.options["progress"])

    def _predictions(self, result, owners: list[int], count: int) -> list[meshrec.Prediction]:
        everyone = meshrec.Prediction(
            vertices=result.vertices, joints=result.joints, global_orient=result.global_orient,
            body_pose=result.body_pose, betas=result.betas, transl=result.transl,
            scores=torch.exp(-result.losses["reprojection"] / (len(self.model.layout) * 100.0)),
            faces=self.body_model.faces_tensor, joint_names=self.joint_names,
            extras={"fit_losses": dict(result.losses)},
        )
        return everyone.split(torch.as_tensor(owners, device=self.device), count)

    def predict_batch(self, samples: list[meshrec.Sample]) -> list[meshrec.Prediction]:
        # Fitting optimises with autograd, which meshrec.predict's inference mode would forbid.
        with torch.inference_mode(False):
            return self._predict(samples)

    def _predict(self, samples: list[meshrec.Sample]) -> list[meshrec.Prediction]:
        dtype = self.body_model.v_template.dtype
        predictions: dict[int, meshrec.Prediction] = {}
        singles = [s for s in samples if s.keypoint_sequence is None]
        if singles:
            keypoints, intrinsics, owners = [], [], []
            for index, sample in enumerate(singles):
                observed = torch.as_tensor(sample.keypoints, dtype=dtype, device=self.device)
                keypoints.append(observed)
                intrinsics.append(self._intrinsics(sample, dtype).expand(len(observed), 3, 3))
                owners += [index] * len(observed)
            result = self._fit(torch.cat(keypoints), torch.cat(intrinsics), None, None)
            for sample, prediction in zip(singles, self._predictions(result, owners, len(singles))):
                predictions[sample.index] = prediction
        for sample in samples:
            if sample.keypoint_sequence is None:
                continue
            sequence = torch.as_tensor(sample.keypoint_sequence, dtype=dtype, device=self.device)
            frames, people = sequence.shape[:2]
            intrinsics = self._intrinsics(sample, dtype).expand(frames * people, 3, 3)
            result = self._fit(sequence.reshape(frames * people, *sequence.shape[2:]), intrinsics, people, None)
            prediction = self._predictions(result, [0] * (frames * people), 1)[0]
            prediction.extras["frames"] = frames
            predictions[sample.index] = prediction
        return [predictions[sample.index] for sample in samples]

    def refine(self, samples: list[meshrec.Sample], predictions: list[meshrec.Prediction]) -> list[meshrec.Prediction]:
        dtype = self.body_model.v_template.dtype
        keypoints, intrinsics, owners, inits = [], [], [], []
        for index, (sample, prediction) in enumerate(zip(samples, predictions)):
            if sample.keypoints is None:
                raise meshrec.MissingInputError(f"refining with 'fit' needs {spell('keypoints')} for {sample.source}")
            if len(sample.keypoints) != prediction.num_people:
                raise ValueError(f"{sample.source}: {len(sample.keypoints)} keypoint sets for {prediction.num_people} "
                                 "predicted people; give one set per predicted person, in the same order")
            observed = torch.as_tensor(sample.keypoints, dtype=dtype, device=self.device)
            keypoints.append(observed)
            intrinsics.append(self._intrinsics(sample, dtype).expand(len(observed), 3, 3))
            owners += [index] * len(observed)
            inits.append(prediction)
        init = FitInit(
            global_orient=torch.cat([p.global_orient for p in inits]).to(self.device, dtype),
            body_pose=torch.cat([p.body_pose for p in inits]).to(self.device, dtype),
            betas=torch.cat([p.betas for p in inits]).to(self.device, dtype),
            transl=torch.cat([p.transl for p in inits]).to(self.device, dtype),
        )
        result = self._fit(torch.cat(keypoints), torch.cat(intrinsics), None, init)
        refined = self._predictions(result, owners, len(samples))
        for before, after in zip(predictions, refined):
            after.extras["refined_from"] = before.method
            after.method = f"{before.method}+fit"
        return refined
