"""SMPLify-style fitting of SMPL to 2D keypoints: a staged, batched optimisation.

Stage 1 places each body: translation and global orientation only, from the torso keypoints
(shoulders, hips), with the depth kept near its initial guess. Stage 2 fits everything (global
orientation, body pose, betas, translation) to all keypoints under the priors, plus scene terms
and temporal smoothness when given. Every person of every frame is one body of one batch; the
bodies are independent except that frames of one person share betas and are tied by the
smoothness term.

Units: keypoints in pixels, bodies in metres, angles in radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from meshrec.body import SMPL
from meshrec.body.keypoints import KeypointModel
from meshrec.rotations import matrix_to_axis_angle, rodrigues
from meshrec_fit.priors import (
    angle_limit_penalty,
    relaxed_pose,
    backward_limb_penalty,
    geman_mcclure,
    neutral_pose_penalty,
    shape_penalty,
)

__all__ = ["FitConfig", "FitInit", "FitResult", "SceneTerm", "fit_smpl", "initial_placement"]

# A rotation of pi about x: SMPL's canonical frame (y up, facing +z) upright in the camera frame
# (y down), facing the camera; a further pi about y turns it away.
FACING_CAMERA = (math.pi, 0.0, 0.0)
FACING_AWAY = (0.0, 0.0, math.pi)  # = rotation pi about x then pi about y
TORSO_HEIGHT = 0.5  # metres, shoulder midpoint to hip midpoint of an average adult

# Starting poses: (joint, axis-angle) pairs, the rest zero. Hip flexion is a negative rotation
# about x (the thigh swings forwards), knee flexion positive.
POSE_HYPOTHESES: dict[str, dict[str, tuple[float, float, float]]] = {
    "standing": {},
    "sitting": {"left_hip": (-1.5, 0.0, 0.0), "right_hip": (-1.5, 0.0, 0.0), "left_knee": (1.5, 0.0, 0.0),
                "right_knee": (1.5, 0.0, 0.0)},
    "crouching": {"left_hip": (-0.9, 0.0, 0.0), "right_hip": (-0.9, 0.0, 0.0), "left_knee": (1.2, 0.0, 0.0),
                  "right_knee": (1.2, 0.0, 0.0), "spine1": (0.3, 0.0, 0.0)},
}


def hypothesis_pose(name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(69,) axis-angle body pose of a named starting pose: the relaxed standing pose (arms down,
    elbows a little bent) with the hypothesis' joints set."""
    if name not in POSE_HYPOTHESES:
        raise ValueError(f"unknown pose hypothesis {name!r}; known: {sorted(POSE_HYPOTHESES)}")
    from meshrec.body import SMPL_JOINT_NAMES

    pose = relaxed_pose(dtype).view(23, 3).clone()
    for joint, angles in POSE_HYPOTHESES[name].items():
        pose[SMPL_JOINT_NAMES.index(joint) - 1] = torch.tensor(angles, dtype=dtype)
    return pose.reshape(69)


@dataclass
class FitConfig:
    """Schedule and weights. Weights multiply terms in these units: reprojection in pixels^2
    (after Geman-McClure with ``sigma`` pixels, times the keypoint's confidence), pose terms in
    rad^2, betas unitless, scene terms in metres^2, smoothness in rad^2 and metres^2.

    The defaults fit a person 2-5 m from a camera of focal length ~1000 px; "fast" in
    :meth:`schedule` trades accuracy for speed (CI, previews).
    """

    optimizer: str = "lbfgs"  # or "adam"
    placement_steps: int = 15  # stage 1 (L-BFGS iterations; Adam takes 10x as many)
    body_steps: int = 60  # stage 2, per robustness level
    learning_rate: float = 1.0  # L-BFGS step scale (Adam: 0.02 used instead)
    # Geman-McClure scales (pixels) of stage 2, annealed: a wide one first, so that keypoints far
    # from the initial pose still pull (a narrow one saturates for them), then the narrow one that
    # makes outliers harmless.
    sigmas: tuple[float, ...] = (1000.0, 300.0, 100.0)
    # Starting poses tried for each person when no initial body is given (see POSE_HYPOTHESES):
    # a foreshortened thigh looks the same bent forwards or backwards, and from a standing start
    # the optimiser can settle on the wrong one. Each is fitted through stage 1 and the first
    # robustness level; the best (lowest cost) per person continues.
    pose_hypotheses: tuple[str, ...] = ("standing", "sitting", "crouching")
    depth_weight: float = 100.0
    neutral_pose_weight: float = 10.0
    angle_limit_weight: float = 3e4
    limb_direction_weight: float = 3e4
    shape_weight: float = 100.0
    smoothness_weight: float = 1e4
    penetration_weight: float = 1e5  # scene terms named "*penetration"
    contact_weight: float = 1e4  # scene terms named "*contact"

    @classmethod
    def schedule(cls, name: str) -> "FitConfig":
        if name == "default":
            return cls()
        if name == "fast":
            return cls(placement_steps=8, body_steps=12)
        raise ValueError(f"unknown fit schedule {name!r}; use 'default' or 'fast'")

    def __post_init__(self) -> None:
        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")


@dataclass
class FitInit:
    """A starting point, e.g. another method's prediction (B bodies, rotations as matrices)."""

    global_orient: torch.Tensor  # (B, 3, 3)
    body_pose: torch.Tensor  # (B, 23, 3, 3)
    betas: torch.Tensor  # (B, NB)
    transl: torch.Tensor  # (B, 3)


@dataclass
class FitResult:
    """Fitted bodies in the camera frame, metres. Rotations as matrices."""

    global_orient: torch.Tensor  # (B, 3, 3)
    body_pose: torch.Tensor  # (B, 23, 3, 3)
    betas: torch.Tensor  # (B, NB)
    transl: torch.Tensor  # (B, 3)
    vertices: torch.Tensor  # (B, V, 3)
    joints: torch.Tensor  # (B, 45, 3)
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # final per-body value of each term


# A scene term maps posed vertices (B, V, 3) and joints (B, J, 3) to a per-body cost (B,) in
# metres^2; terms named "*contact" are weighted by FitConfig.contact_weight, others by
# FitConfig.penetration_weight.
SceneTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def initial_placement(keypoints: torch.Tensor, intrinsics: torch.Tensor, torso: list[int], layout_names: tuple[str, ...]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Translation (B, 3) and global orientation (B, 3) from the 2D torso.

    Depth: an average torso (shoulder midpoint to hip midpoint, 0.5 m) spans its image length;
    without a visible torso, the keypoints' vertical extent is taken as 1.5 m. Orientation:
    facing the camera when the left shoulder (or hip) appears right of the right one.
    """
    points, confidence = keypoints[..., :2], keypoints[..., 2]
    focal = intrinsics[:, 1, 1]
    visible = confidence > 0
    weights = confidence.clamp(min=0)
    centre = (points * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-9)

    def midpoint(names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
        index = [layout_names.index(n) for n in names]
        both = visible[:, index].all(dim=1)
        return points[:, index].mean(dim=1), both

    shoulders, has_shoulders = midpoint(("left_shoulder", "right_shoulder"))
    hips, has_hips = midpoint(("left_hip", "right_hip"))
    torso_pixels = (shoulders - hips).norm(dim=-1)
    spread = torch.where(visible, points[..., 1], torch.nan)
    extent = (spread.nan_to_num(-1e9).amax(1) - spread.nan_to_num(1e9).amin(1)).clamp(min=1.0)
    use_torso = has_shoulders & has_hips & (torso_pixels > 1.0)
    depth = torch.where(use_torso, focal * TORSO_HEIGHT / torso_pixels.clamp(min=1.0), focal * 1.5 / extent)
    xy = (centre - intrinsics[:, :2, 2]) * depth[:, None] / intrinsics[:, [0, 1], [0, 1]]
    transl = torch.cat([xy, depth[:, None]], dim=1)

    left, right = layout_names.index("left_shoulder"), layout_names.index("right_shoulder")
    hip_left, hip_right = layout_names.index("left_hip"), layout_names.index("right_hip")
    facing = torch.where(visible[:, left] & visible[:, right], points[:, left, 0] - points[:, right, 0],
                         points[:, hip_left, 0] - points[:, hip_right, 0])
    orient = torch.tensor([FACING_CAMERA, FACING_AWAY], dtype=keypoints.dtype, device=keypoints.device)
    global_orient = orient[(facing < 0).long()]
    return transl, global_orient


class _Problem:
    """The variables and the loss of one fit."""

    def __init__(self, body_model, keypoint_model: KeypointModel, keypoints: torch.Tensor, intrinsics: torch.Tensor,
                 config: FitConfig, people: int, scene_terms: dict[str, SceneTerm], init: FitInit | None,
                 start_pose: torch.Tensor | None = None):
        self.body_model, self.keypoint_model, self.config = body_model, keypoint_model, config
        self.keypoints, self.intrinsics = keypoints, intrinsics
        self.people, self.frames = people, keypoints.shape[0] // people
        self.scene_terms = scene_terms
        self.sigma = config.sigmas[-1]
        dtype, device = keypoints.dtype, keypoints.device
        batch = keypoints.shape[0]
        layout = keypoint_model.layout
        if init is None:
            transl, global_orient = initial_placement(keypoints, intrinsics, layout.torso_indices, layout.keypoints)
            body_pose = (relaxed_pose(dtype, device).expand(batch, 69) if start_pose is None else start_pose)
            betas = torch.zeros(people, body_model.num_betas, dtype=dtype, device=device)
        else:
            transl = init.transl.to(dtype)
            global_orient = matrix_to_axis_angle(init.global_orient.to(dtype))
            body_pose = matrix_to_axis_angle(init.body_pose.to(dtype)).reshape(batch, 69)
            betas = init.betas.to(dtype).view(self.frames, people, -1).mean(0)  # one shape per person
        self.initial_depth = transl[:, 2].detach().clone()
        self.transl = transl.detach().clone().requires_grad_()
        self.global_orient = global_orient.detach().clone().requires_grad_()
        self.body_pose = body_pose.detach().clone().requires_grad_()
        self.betas = betas.detach().clone().requires_grad_()

    def body(self, mesh: bool = False):
        """vertices and joints of the current bodies. Unless ``mesh`` or scene terms (which read
        the whole mesh) ask for the mesh, a meshrec body model takes its joints-only path and
        ``vertices`` holds only those the keypoints read (None when they read none): the loss
        never reads the others, and computing them would cost most of the fit."""
        betas = self.betas.repeat(self.frames, 1)  # frame-major: body b is person b % people
        selective = not mesh and not self.scene_terms and isinstance(self.body_model, SMPL)
        extra = {}
        if selective:
            ids = self.keypoint_model.vertex_ids
            extra = {"return_verts": False} if ids is None else {"vertex_ids": ids}
        output = self.body_model(betas=betas, global_orient=self.global_orient, body_pose=self.body_pose,
                                 transl=self.transl, **extra)
        return output.vertices, output.joints

    def reprojection(self, vertices: torch.Tensor, joints: torch.Tensor, subset: list[int] | None) -> torch.Tensor:
        points = self.keypoint_model(vertices, joints)
        projected = points @ self.intrinsics.transpose(1, 2)
        pixels = projected[..., :2] / projected[..., 2:].clamp(min=1e-3)
        squared = ((pixels - self.keypoints[..., :2]) ** 2).sum(-1)
        cost = self.keypoints[..., 2].clamp(min=0) * geman_mcclure(squared, self.sigma)
        if subset is not None:
            cost = cost[:, subset]
        return cost.sum(dim=1)

    def terms(self, stage: int) -> dict[str, torch.Tensor]:
        vertices, joints = self.body()
        config = self.config
        if stage == 1:
            return {
                "reprojection": self.reprojection(vertices, joints, self.keypoint_model.layout.torso_indices),
                "depth": config.depth_weight * (self.transl[:, 2] - self.initial_depth) ** 2,
            }
        terms = {
            "reprojection": self.reprojection(vertices, joints, None),
            "neutral_pose": config.neutral_pose_weight * neutral_pose_penalty(self.body_pose),
            "angle_limits": config.angle_limit_weight * angle_limit_penalty(self.body_pose),
            "limb_directions": config.limb_direction_weight * backward_limb_penalty(joints),
            "shape": config.shape_weight * shape_penalty(self.betas).repeat(self.frames) / self.frames,
        }
        for name, term in self.scene_terms.items():
            weight = config.contact_weight if name.endswith("contact") else config.penetration_weight
            terms[name] = weight * term(vertices, joints)
        if self.frames > 1:
            pose = self.body_pose.view(self.frames, self.people, -1)
            moves = joints.view(self.frames, self.people, -1, 3)
            step = ((pose[1:] - pose[:-1]) ** 2).sum(-1) + ((moves[1:] - moves[:-1]) ** 2).sum((-1, -2))
            terms["smoothness"] = config.smoothness_weight * torch.cat(
                [step, torch.zeros_like(step[:1])]).reshape(-1)
        return terms

    def variables(self, stage: int) -> list[torch.Tensor]:
        if stage == 1:
            return [self.transl, self.global_orient]
        return [self.transl, self.global_orient, self.body_pose, self.betas]


def _optimise(problem: _Problem, stage: int, steps: int, bar: tqdm) -> None:
    config = problem.config
    variables = problem.variables(stage)
    if steps <= 0:
        return
    if config.optimizer == "adam":
        optimiser = torch.optim.Adam(variables, lr=0.02)
        for _ in range(steps * 10):
            optimiser.zero_grad()
            loss = sum(problem.terms(stage).values()).sum()
            loss.backward()
            optimiser.step()
            bar.update(0.1)
        return
    optimiser = torch.optim.LBFGS(variables, lr=config.learning_rate, max_iter=steps, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = sum(problem.terms(stage).values()).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    bar.update(steps)


def _best_hypothesis(body_model, keypoint_model, keypoints, intrinsics, config, people, scene_terms, hypotheses,
                     bar) -> FitInit:
    """Fits every starting pose for every person (one batch: hypotheses become extra people of
    each frame) through stage 1 and the first robustness level, and returns the best per person."""
    count = len(hypotheses)
    frames = keypoints.shape[0] // people
    expand = lambda t: t.view(frames, 1, people, *t.shape[1:]).expand(frames, count, people, *t.shape[1:]).reshape(
        frames * count * people, *t.shape[1:])
    starts = torch.stack([hypothesis_pose(name, keypoints.dtype) for name in hypotheses]).to(keypoints.device)
    start_pose = starts[None, :, None].expand(frames, count, people, 69).reshape(-1, 69)
    problem = _Problem(body_model, keypoint_model, expand(keypoints), expand(intrinsics), config, count * people,
                       scene_terms, None, start_pose)
    problem.sigma = config.sigmas[-1]
    _optimise(problem, 1, config.placement_steps, bar)
    problem.sigma = config.sigmas[0]
    _optimise(problem, 2, config.body_steps, bar)
    with torch.no_grad():
        cost = sum(problem.terms(2).values()).view(frames, count, people).sum(0)
        best = cost.argmin(0)  # (people,)
        pick = lambda t: t.view(frames, count, people, *t.shape[1:])[:, best, torch.arange(people)].reshape(
            frames * people, *t.shape[1:])
        betas = problem.betas.view(count, people, -1)[best, torch.arange(people)]
        return FitInit(global_orient=rodrigues(pick(problem.global_orient)),
                       body_pose=rodrigues(pick(problem.body_pose).view(-1, 23, 3)),
                       betas=betas.repeat(frames, 1), transl=pick(problem.transl))


def fit_smpl(
    body_model,
    keypoint_model: KeypointModel,
    keypoints: torch.Tensor,
    intrinsics: torch.Tensor,
    config: FitConfig | None = None,
    people: int | None = None,
    init: FitInit | None = None,
    scene_terms: dict[str, SceneTerm] | None = None,
    progress: bool = False,
) -> FitResult:
    """Fits SMPL to 2D keypoints.

    Args:
        body_model: a :class:`meshrec.body.SMPL` (create_transl=False is fine).
        keypoint_model: maps the body to the layout's keypoints.
        keypoints: (B, K, 3) pixels and confidence (0 = missing); B = frames x people, frame-major.
        intrinsics: (B, 3, 3) camera matrices.
        config: schedule and weights (defaults: :class:`FitConfig`).
        people: people per frame (B / people frames, sharing betas and smoothed in time); B when None.
        init: starting bodies (e.g. a network's prediction); stage 1 is then skipped.
        scene_terms: named per-body costs of the posed body (penetration, contact).
        progress: show a progress bar.
    """
    config = config or FitConfig()
    keypoints, intrinsics = keypoints.detach(), intrinsics.detach()  # observations, not variables
    batch = keypoints.shape[0]
    people = people or batch
    if batch % people:
        raise ValueError(f"{batch} bodies do not split into frames of {people} people")
    scene_terms = scene_terms or {}
    hypotheses = config.pose_hypotheses if init is None else ()
    total = (config.placement_steps if init is None else 0) + config.body_steps * (len(config.sigmas) + bool(scene_terms))
    with torch.enable_grad(), tqdm(total=total, disable=not progress, unit="step", desc="meshrec fit",
                                   leave=False) as bar:
        if len(hypotheses) > 1:
            init = _best_hypothesis(body_model, keypoint_model, keypoints, intrinsics, config, people, {},
                                    hypotheses, bar)
            levels = config.sigmas[1:]
        else:
            levels = config.sigmas
        start = hypothesis_pose(hypotheses[0], keypoints.dtype).to(keypoints.device).expand(batch, -1) if hypotheses else None
        # Scene terms join last (as PROX stages them): the pose converges on the keypoints first,
        # and the scene then moves it out of the scene and into contact. From the start they
        # would steer a still-wrong pose, and ambiguous limbs, in arbitrary directions.
        problem = _Problem(body_model, keypoint_model, keypoints, intrinsics, config, people, {}, init, start)
        if init is None:
            problem.sigma = config.sigmas[-1]
            _optimise(problem, 1, config.placement_steps, bar)
        for sigma in levels:
            problem.sigma = sigma
            _optimise(problem, 2, config.body_steps, bar)
        if scene_terms:
            problem.scene_terms = scene_terms
            _optimise(problem, 2, config.body_steps, bar)
        with torch.no_grad():
            losses = {name: value.detach() for name, value in problem.terms(2).items()}
            vertices, joints = problem.body(mesh=True)
    return FitResult(
        global_orient=rodrigues(problem.global_orient.detach()), body_pose=rodrigues(problem.body_pose.detach().view(batch, 23, 3)),
        betas=problem.betas.detach().repeat(problem.frames, 1), transl=problem.transl.detach(),
        vertices=vertices.detach(), joints=joints.detach(), losses=losses,
    )
