"""The ``egohmr`` (both stages) and ``prohmr-scene`` (stage 1 alone) methods.

Inputs per image: the image, person boxes, the camera intrinsics (the true focal length: stage
1's translation is 2 f / (box * s)), and the scene as points (N, 3) in the camera frame (OpenCV
axes), metres. Optional: OpenPose BODY_25 keypoints (P, 25, 3) for stage 2's joint visibility.

Samples: ``Prediction.samples`` (P, S, 6890, 3) holds every sample (camera frame, translation
applied). ``prohmr-scene``: sample 0 is the flow's mode (z = 0) and the fields (vertices,
joints, global_orient, body_pose) are the mode. ``egohmr``: all samples are diffusion draws and
the fields are sample 0. ``method.generator`` (a ``torch.Generator``, seeded by the ``seed``
option) makes sampling reproducible. ``predict_batch(samples, seeds=[...])`` gives each input item
its own generator instead (results then do not depend on batching or sharding), and
``EgoHMR.predict_batch(samples, cubes=[...])`` takes precomputed stage-2 scene cubes (EgoHMR's
offline cubes) instead of cropping them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import meshrec
from meshrec.body import SMPL_OUTPUT_JOINT_NAMES
from meshrec.camera import project
from meshrec.nn import crop_boxes, square_boxes
from meshrec_egohmr.checkpoint import STAGE1_FILE, STAGE2_FILE, load_stage1, load_stage2, resolve_checkpoints
from meshrec_egohmr.collision import COAPScore
from meshrec_egohmr.diffusion import Diffusion
from meshrec_egohmr.model import EgoHMRModel, PersonInputs
from meshrec_egohmr.scene import crop_scene_cube
from meshrec_egohmr.stage2 import visibility_from_openpose

__all__ = ["EgoHMR", "ProHMRSceneMethod", "item_seed", "visibility_from_projection"]

CROP_SIZE = 224
ALWAYS_VISIBLE = (0, 3, 6, 9)  # pelvis and spine: EgoHMR forces OpenPose's mid-hip visible


def _seed(value: Any) -> int | None:
    return None if value is None else int(value)


def _positive_int(value: Any) -> int:
    value = int(value)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {value}")
    return value


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_path(value: Any) -> str | None:
    return None if value is None else str(value)


def item_seed(seed: int, index: int, person: int = 0) -> int:
    """The seed of one input item's (and person's) own generator: a hash of the method's seed,
    the item's index (``Sample.index``: its position in the whole input list or data set) and
    the person's position among the item's boxes."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(index), int(person)]).generate_state(1, np.uint64)[0] >> 1)


def _respacing(value: Any) -> str:
    value = str(value)
    Diffusion.create(value)  # raises ValueError naming what is accepted
    return value


def visibility_from_projection(joints: torch.Tensor, intrinsics: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(P, 24) bool: joints (P, 24, 3) (camera frame) that project into the image (width,
    height), pelvis and spine always visible: the fallback when no 2D keypoints are given
    (truncation only, like EgoHMR's evaluation mask)."""
    uv = torch.stack([project(points, k) for points, k in zip(joints, intrinsics)])
    width, height = image_size
    visible = (uv[..., 0] >= 0) & (uv[..., 0] < width) & (uv[..., 1] >= 0) & (uv[..., 1] < height) & (joints[..., 2] > 0)
    visible[:, list(ALWAYS_VISIBLE)] = True
    return visible


class _EgoHMRBase(meshrec.Method):
    inputs = frozenset({meshrec.Input.IMAGE, meshrec.Input.BBOX, meshrec.Input.CAMERA, meshrec.Input.SCENE})
    needs_checkpoint = True
    batch_size = 4
    joint_names = SMPL_OUTPUT_JOINT_NAMES

    def __init__(self, model: nn.Module, body_model: nn.Module | None, device: torch.device, **options: Any):
        super().__init__(model, body_model, device, **options)
        self.generator = torch.Generator(device=self.device)
        if options.get("seed") is not None:
            self.generator.manual_seed(int(options["seed"]))
        else:
            self.generator.seed()

    def to(self, device):
        super().to(device)
        state = self.generator.get_state()
        self.generator = torch.Generator(device=self.device)
        if self.device.type == "cpu":
            self.generator.set_state(state)
        return self

    def check_sample(self, sample: meshrec.Sample) -> None:
        scene = np.asarray(sample.scene)
        if scene.ndim != 2 or scene.shape[1] != 3 or len(scene) == 0:
            raise ValueError(f"scene for {sample.source} must be (N, 3) points in metres, camera frame; got shape {scene.shape}")
        if not (scene[:, 2] > 0).any():
            raise ValueError(f"scene for {sample.source} has no point in front of the camera (z > 0): it must be in "
                             "the camera frame (OpenCV axes: x right, y down, z forward), in metres")
        if sample.bbox is None or len(sample.bbox) == 0:
            raise ValueError(f"{sample.source}: EgoHMR needs a person box (bbox=) per person")
        if sample.keypoints is not None and np.asarray(sample.keypoints).shape[1:] != (25, 3):
            raise ValueError(f"keypoints for {sample.source} must be OpenPose BODY_25 (P, 25, 3) for the visibility mask, "
                             f"got {np.asarray(sample.keypoints).shape}")

    # ------------------------------------------------------------------ inputs
    def person_inputs(self, samples: list[meshrec.Sample]) -> tuple[PersonInputs, torch.Tensor, list[torch.Tensor], dict]:
        """Crops and camera data of every person box, the owner index (P,), each person's
        scene (camera frame; at most ``stage1_scene_points``, uniformly sub-sampled) and extras."""
        dtype = torch.float32
        crops, centres, sides, focal, principal, owners, scenes, sizes = [], [], [], [], [], [], [], []
        for index, sample in enumerate(samples):
            image = torch.from_numpy(sample.image()).to(self.device).permute(2, 0, 1)
            box_centres, box_sides = square_boxes(torch.as_tensor(sample.bbox, device=self.device, dtype=torch.float64),
                                                  self.options["bbox_scale"])
            crops.append(crop_boxes(image, box_centres, box_sides, CROP_SIZE))
            camera = torch.as_tensor(sample.camera, dtype=torch.float64, device=self.device)
            count = len(box_sides)
            centres.append(box_centres)
            sides.append(box_sides)
            focal.append(camera[0, 0].expand(count))
            principal.append(camera[:2, 2].expand(count, 2))
            owners.append(torch.full((count,), index, device=self.device, dtype=torch.long))
            scene = torch.as_tensor(sample.scene, dtype=dtype, device=self.device)
            limit = self.options["stage1_scene_points"]
            if len(scene) > limit:  # uniform down-sampling (every k-th point), as EgoHMR prepares its scenes
                scene = scene[:: len(scene) // limit][:limit]
            scenes += [scene] * count
            sizes += [(image.shape[-1], image.shape[-2])] * count
        person = PersonInputs(torch.cat(crops), torch.cat(focal).to(dtype), torch.cat(principal).to(dtype),
                              torch.cat(centres).to(dtype), torch.cat(sides).to(dtype))
        return person, torch.cat(owners), scenes, {"image_size": sizes}

    def generators(self, samples: list[meshrec.Sample], owner: torch.Tensor,
                   seeds: list[int] | None) -> torch.Generator | list[torch.Generator]:
        """``method.generator`` (seeds None), or one CPU generator per person seeded with
        :func:`item_seed` of its item's seed (``seeds``, one per sample) and its position."""
        if seeds is None:
            return self.generator
        if len(seeds) != len(samples):
            raise ValueError(f"seeds must hold one seed per sample ({len(samples)}), got {len(seeds)}")
        generators, first = [], {}
        for person, who in enumerate(owner.tolist()):
            first.setdefault(who, person)
            generators.append(torch.Generator().manual_seed(item_seed(seeds[who], samples[who].index, person - first[who])))
        return generators

    def intrinsics(self, person: PersonInputs) -> torch.Tensor:
        k = torch.zeros(len(person.focal), 3, 3, dtype=person.focal.dtype, device=person.focal.device)
        k[:, 0, 0] = k[:, 1, 1] = person.focal
        k[:, :2, 2] = person.principal
        k[:, 2, 2] = 1
        return k

    def bodies(self, rotmat: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SMPL vertices (P, S, V, 3) and joints (P, S, J, 3) of rotmat (P, S, 24, 3, 3), betas
        (P, 10) and translation (P, 3), all samples in one call."""
        people, count = rotmat.shape[:2]
        dtype = self.body_model.v_template.dtype
        flat = rotmat.reshape(people * count, 24, 3, 3).to(dtype)
        out = self.body_model(betas=betas.repeat_interleave(count, 0).to(dtype), global_orient=flat[:, :1],
                              body_pose=flat[:, 1:], pose2rot=False)
        shift = transl.to(dtype)[:, None, None]
        return (out.vertices.reshape(people, count, -1, 3) + shift, out.joints.reshape(people, count, -1, 3) + shift)

    def _split(self, owner, count, **fields) -> list[meshrec.Prediction]:
        prediction = meshrec.Prediction(method=self.name, faces=self.body_model.faces_tensor,
                                        joint_names=self.joint_names, **fields)
        return prediction.split(owner, count)


class ProHMRSceneMethod(_EgoHMRBase):
    """EgoHMR's first stage alone (ProHMR-scene): image + scene -> a flow over poses, betas and
    the body translation with the true focal length."""

    name = "prohmr-scene"
    summary = "ProHMR-scene (EgoHMR stage 1): scene-conditioned normalizing flow, metric translation from the true focal length"
    checkpoint_help = (
        "meshrec-egohmr reads EgoHMR's released stage-1 checkpoint checkpoints_egohmr/"
        f"{STAGE1_FILE.as_posix()} (sanweiliti/EgoHMR README, 'checkpoints' download).")
    options = (
        meshrec.Option("num_samples", 1, "poses per person; sample 0 is the mode (z = 0), the others draw z ~ N(0, I)",
                       type=_positive_int),
        meshrec.Option("seed", None, "seed of method.generator (None: random)", type=_seed),
        meshrec.Option("bbox_scale", 1.2, "crop side over the box's longer side (EgoHMR --add_bbox_scale)", type=float),
        meshrec.Option("stage1_scene_points", 20000, "scene points given to the scene encoder (uniform sub-sampling)",
                       type=_positive_int),
        meshrec.Option("trust_checkpoint", False, "unpickle the checkpoint fully (only for files you trust)"),
    )

    @classmethod
    def build(cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device,
              **options: Any) -> "ProHMRSceneMethod":
        if not options["bbox_scale"] > 0:
            raise ValueError(f"bbox_scale must be positive, got {options['bbox_scale']}")
        paths = resolve_checkpoints(checkpoint, need_stage2=False)
        model = EgoHMRModel(load_stage1(paths.stage1, trust=options["trust_checkpoint"])).to(device).eval()
        return cls(model, body_model, device, **options)

    def predict_batch(self, samples: list[meshrec.Sample], seeds: list[int] | None = None) -> list[meshrec.Prediction]:
        """``seeds``: optional, one per sample (see :meth:`generators`)."""
        person, owner, scenes, _ = self.person_inputs(samples)
        out = self.model.run_stage1(person, scenes, self.options["num_samples"], self.generators(samples, owner, seeds))
        vertices, joints = self.bodies(out["rotmat"], out["betas"], out["transl"])
        rotmat = out["rotmat"]
        return self._split(
            owner, len(samples), vertices=vertices[:, 0], joints=joints[:, 0], global_orient=rotmat[:, 0, 0],
            body_pose=rotmat[:, 0, 1:], betas=out["betas"], transl=out["transl"],
            scores=torch.ones(len(owner), device=self.device), samples=vertices,
            extras={"log_prob": out["log_prob"], "samples_global_orient": rotmat[:, :, 0],
                    "samples_body_pose": rotmat[:, :, 1:], "samples_joints": joints, "crop_camera": out["cam"],
                    "crop_centre": person.box_centre, "crop_size": person.box_size,
                    "intrinsics": self.intrinsics(person)})


class EgoHMR(_EgoHMRBase):
    """EgoHMR: stage 1 gives the body translation; stage 2 samples poses by scene-conditioned
    diffusion in the 2 m scene cube around it, with collision-score guidance."""

    name = "egohmr"
    summary = "EgoHMR: scene-conditioned pose diffusion (stage 2) on ProHMR-scene's translation, collision guidance"
    optional_inputs = frozenset({meshrec.Input.KEYPOINTS})
    checkpoint_help = (
        "meshrec-egohmr reads EgoHMR's released checkpoints (sanweiliti/EgoHMR README, 'checkpoints' download): pass "
        f"checkpoints_egohmr/{STAGE2_FILE.as_posix()}; stage 1 is read from ../{STAGE1_FILE.as_posix()} beside it "
        "(or the stage1_checkpoint option) and the statistics from preprocess_stats/preprocess_stats.npz.")
    options = (
        meshrec.Option("num_samples", 5, "diffusion samples per person (the paper reports 5)", type=_positive_int),
        meshrec.Option("seed", None, "seed of method.generator (None: random)", type=_seed),
        meshrec.Option("timestep_respacing", "ddpm", "'ddpm' (50 steps, upstream's test default) or 'ddimN' (e.g. ddim5)",
                       type=_respacing),
        meshrec.Option("guidance", True, "collision-score guidance in the last steps"),
        meshrec.Option("collision_score", "meshrec", "score the guidance differentiates: 'meshrec' (inside-mesh depth, no "
                       "extra package) or 'coap' (COAP's learned occupancy, as EgoHMR; needs the coap package)",
                       choices=("meshrec", "coap")),
        meshrec.Option("coap_checkpoint", None, "COAP's weights for collision_score='coap' (default: the smpl.coap.* "
                       "entries of the stage-2 checkpoint; or COAP's coap_smpl_neutral.ckpt); never downloaded",
                       type=_optional_path),
        meshrec.Option("guidance_weight", None, "weight of the collision gradient (None: 30 for 'meshrec', as "
                       "VolumetricSMPL's whose score ours follows; 2 for 'coap', EgoHMR's --cond_grad_weight)",
                       type=_optional_float),
        meshrec.Option("diffuse_fuse", True, "invisible joints from the scene-only denoiser (EgoHMR's test default)"),
        meshrec.Option("pelvis_vis_loosen", True, "hips take the knees' visibility (EgoHMR's test default)"),
        meshrec.Option("keypoint_layout", "openpose25", "layout of keypoints= (OpenPose BODY_25, as EgoBody's files; "
                       "also what a keypoint detector is asked for)", choices=("openpose25",)),
        meshrec.Option("bbox_scale", 1.2, "crop side over the box's longer side (EgoHMR --add_bbox_scale)", type=float),
        meshrec.Option("cube_size", 2.0, "side of the scene cube around the stage-1 translation, metres", type=float),
        meshrec.Option("cube_points", 20000, "points kept in the cube (uniform sub-sampling)", type=_positive_int),
        meshrec.Option("stage1_scene_points", 20000, "scene points given to stage 1's scene encoder", type=_positive_int),
        meshrec.Option("stage1_checkpoint", None, "stage-1 file when it is not at ../53618/best_model.pt",
                       type=lambda value: None if value is None else str(value)),
        meshrec.Option("trust_checkpoint", False, "unpickle the checkpoints fully (only for files you trust)"),
    )

    @classmethod
    def build(cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device, **options: Any) -> "EgoHMR":
        if not options["bbox_scale"] > 0 or not options["cube_size"] > 0:
            raise ValueError("bbox_scale and cube_size must be positive")
        paths = resolve_checkpoints(checkpoint, stage1=options["stage1_checkpoint"])
        trust = options["trust_checkpoint"]
        model = EgoHMRModel(load_stage1(paths.stage1, trust=trust), load_stage2(paths.stage2, paths.statistics, trust=trust))
        method = cls(model.to(device).eval(), body_model, device, **options)
        method.diffusion = Diffusion.create(options["timestep_respacing"])
        method.coap = None
        if options["guidance"] and options["collision_score"] == "coap":
            if body_model is None:
                raise ValueError("collision_score='coap' needs the SMPL body model (COAP is attached to it)")
            weights = options["coap_checkpoint"] if options["coap_checkpoint"] is not None else paths.stage2
            method.coap = COAPScore(body_model, weights, device, trust=trust)
        return method

    @property
    def guidance_weight(self) -> float:
        """The weight in use: the option, or the default of the collision score (30 / 2)."""
        if self.options["guidance_weight"] is not None:
            return float(self.options["guidance_weight"])
        return 2.0 if self.options["collision_score"] == "coap" else 30.0

    def to(self, device):
        super().to(device)
        if getattr(self, "coap", None) is not None:
            self.coap.to(self.device)
        return self

    def _given_cube(self, given: Any, sample: meshrec.Sample, position: int, people: int, transl: torch.Tensor) -> torch.Tensor:
        """A precomputed cube for one person, checked: (N, 3) finite metres, camera frame, near
        the person's stage-1 translation; at most ``cube_points`` (uniform sub-sampling)."""
        if isinstance(given, (list, tuple)):
            if len(given) != people:
                raise ValueError(f"{sample.source}: {len(given)} cubes for {people} person boxes")
            given = given[position]
        elif people != 1:
            raise ValueError(f"{sample.source}: one cube for {people} person boxes; pass a list with one cube per box")
        cube = torch.as_tensor(np.asarray(given), dtype=transl.dtype, device=self.device)
        if cube.dim() != 2 or cube.shape[1] != 3 or len(cube) == 0:
            raise ValueError(f"{sample.source}: a scene cube must be (N, 3) points, N > 0; got shape {tuple(cube.shape)}")
        if not bool(torch.isfinite(cube).all()):
            raise ValueError(f"{sample.source}: the scene cube has NaN or infinite coordinates")
        nearest = float((cube - transl).norm(dim=-1).min())
        if nearest > 2 * self.options["cube_size"]:
            raise ValueError(f"{sample.source}: the scene cube's nearest point is {nearest:.2f} m from the body "
                             f"translation {transl.tolist()}: cubes must be in the camera frame, metres, around the person")
        limit = self.options["cube_points"]
        if len(cube) > limit:
            cube = cube[:: len(cube) // limit][:limit]
        return cube

    def predict_batch(self, samples: list[meshrec.Sample], cubes: list[Any] | None = None,
                      seeds: list[int] | None = None) -> list[meshrec.Prediction]:
        """Args (beyond the samples): ``cubes``: optional, one per sample: that item's stage-2
        scene cube (N, 3) (camera frame, metres; a list of cubes, one per person box, for items
        with several people), e.g. EgoHMR's offline cubes, used instead of cropping the scene
        (None for an item: cropped); ``seeds``: optional, one per sample (see :meth:`generators`)."""
        if cubes is not None and len(cubes) != len(samples):
            raise ValueError(f"cubes must hold one entry per sample ({len(samples)}), got {len(cubes)}")
        person, owner, scenes, info = self.person_inputs(samples)
        generator = self.generators(samples, owner, seeds)
        first = self.model.run_stage1(person, scenes, 1, generator)
        transl = first["transl"]
        people = torch.bincount(owner, minlength=len(samples)).tolist()
        cubes_used, start = [], {}
        for index, (t, who) in enumerate(zip(transl, owner.tolist())):
            start.setdefault(who, index)
            given = None if cubes is None else cubes[who]
            if given is not None:
                cubes_used.append(self._given_cube(given, samples[who], index - start[who], people[who], t))
                continue
            full = torch.as_tensor(samples[who].scene, dtype=transl.dtype, device=self.device)
            try:
                cubes_used.append(crop_scene_cube(full, t, self.options["cube_size"], self.options["cube_points"]))
            except ValueError as error:
                raise ValueError(f"{samples[who].source}, person {index}: {error}") from None
        cubes = cubes_used
        visible = self._visibility(samples, owner, first, person, info)
        options = self.options
        second = self.model.run_stage2(
            person, cubes, transl, visible, options["num_samples"], self.diffusion, generator,
            diffuse_fuse=options["diffuse_fuse"], body_model=self.body_model,
            guidance_weight=self.guidance_weight if options["guidance"] else 0.0, coap=self.coap)
        rotmat, betas = second["rotmat"], second["betas"]
        vertices, joints = self.bodies(rotmat, betas, transl)
        return self._split(
            owner, len(samples), vertices=vertices[:, 0], joints=joints[:, 0], global_orient=rotmat[:, 0, 0],
            body_pose=rotmat[:, 0, 1:], betas=betas, transl=transl, scores=torch.ones(len(owner), device=self.device),
            samples=vertices,
            extras={"samples_global_orient": rotmat[:, :, 0], "samples_body_pose": rotmat[:, :, 1:],
                    "samples_joints": joints, "visible_joints": visible,
                    "cube_points": torch.tensor([len(c) for c in cubes], device=self.device),
                    "stage1_betas": first["betas"], "stage1_global_orient": first["rotmat"][:, 0, 0],
                    "stage1_body_pose": first["rotmat"][:, 0, 1:], "crop_camera": first["cam"],
                    "crop_centre": person.box_centre, "crop_size": person.box_size,
                    "intrinsics": self.intrinsics(person)})

    def _visibility(self, samples, owner, first, person, info) -> torch.Tensor:
        """EgoHMR's mask from OpenPose BODY_25 keypoints when every input has them; else the
        stage-1 mode's joints projected into the image (see :func:`visibility_from_projection`)."""
        if all(sample.keypoints is not None for sample in samples):
            keypoints = torch.cat([torch.as_tensor(np.asarray(sample.keypoints), dtype=torch.float32) for sample in samples])
            if len(keypoints) == len(owner):
                return visibility_from_openpose(keypoints.to(self.device), loosen=self.options["pelvis_vis_loosen"])
            warnings.warn("meshrec-egohmr: keypoints= do not hold one BODY_25 set per person box (in the boxes' "
                          "order); visibility falls back to projecting stage 1's joints", stacklevel=2)
        _, joints = self.bodies(first["rotmat"], first["betas"], first["transl"])
        masks = [visibility_from_projection(joints[i:i + 1, 0, :24], self.intrinsics(person)[i:i + 1], info["image_size"][i])
                 for i in range(len(owner))]
        return torch.cat(masks)
