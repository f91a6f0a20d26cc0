"""The two-stage EgoHMR model: ``stage1`` (:class:`~meshrec_egohmr.stage1.ProHMRScene`) and
``stage2`` (:class:`~meshrec_egohmr.stage2.EgoHMRDenoiser`, None for ``prohmr-scene``), plus
the batched sampling pipeline both methods use.

Samples are batched: the S samples of every person go through the denoiser and SMPL together
(upstream runs one job per sample), and the image / scene encoders run once per person.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meshrec.rotations import matrix_from_6d_spin
from meshrec_egohmr.collision import COAPScore, coap_guidance
from meshrec_egohmr.diffusion import Diffusion, Generators, normal
from meshrec_egohmr.scene import GUIDED_JOINT_WEIGHTS, collision_score
from meshrec_egohmr.stage1 import ProHMRScene
from meshrec_egohmr.stage2 import EgoHMRDenoiser

__all__ = ["EgoHMRModel", "PersonInputs", "pad_points"]


def pad_points(clouds: list[torch.Tensor]) -> torch.Tensor:
    """Stacks point clouds of different sizes (B, N_max, 3) by repeating each cloud's first
    point: EgoHMR's PointNet max-pools over points, so duplicates change nothing."""
    size = max(len(cloud) for cloud in clouds)
    return torch.stack([torch.cat([cloud, cloud[:1].expand(size - len(cloud), 3)]) for cloud in clouds])


@dataclass
class PersonInputs:
    """Per-person network inputs (P people).

    crops: (P, 3, 224, 224) normalised crops; focal: (P,) fx px; principal: (P, 2) px;
    box_centre: (P, 2) px; box_size: (P,) px.
    """

    crops: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor
    box_centre: torch.Tensor
    box_size: torch.Tensor


class EgoHMRModel(nn.Module):
    """``stage1`` and (optionally) ``stage2`` with the upstream's parameter names."""

    def __init__(self, stage1: ProHMRScene, stage2: EgoHMRDenoiser | None = None):
        super().__init__()
        self.stage1 = stage1
        self.stage2 = stage2

    def run_stage1(self, person: PersonInputs, scenes: list[torch.Tensor], num_samples: int,
                   generator: Generators) -> dict[str, torch.Tensor]:
        """Stage 1 for P people; ``scenes`` holds each person's scene points (camera frame)."""
        return self.stage1(person.crops, pad_points(scenes), person.focal, person.principal, person.box_centre,
                           person.box_size, num_samples=num_samples, generator=generator)

    def run_stage2(self, person: PersonInputs, cubes: list[torch.Tensor], transl: torch.Tensor, visible: torch.Tensor,
                   num_samples: int, diffusion: Diffusion, generator: Generators,
                   diffuse_fuse: bool = True, body_model: nn.Module | None = None, guidance_weight: float = 0.0,
                   noise: torch.Tensor | None = None, coap: COAPScore | None = None) -> dict[str, torch.Tensor]:
        """Stage 2 for P people and S samples each.

        Args:
            cubes: each person's scene cube (camera frame, metres).
            transl: (P, 3) stage-1 translations; visible: (P, 24) bool.
            diffusion: the respaced process (:meth:`Diffusion.create`).
            generator: one generator, or a list of P (one per person: each person's draws
                then depend on its own generator only).
            body_model: SMPL for the collision guidance (needed when ``guidance_weight`` > 0).
            guidance_weight: 0 disables the collision guidance.
            noise: optional x_T (P * S, 144), person-major.
            coap: guide with COAP's collision loss (:mod:`meshrec_egohmr.collision`) instead of
                meshrec's inside-mesh score.

        Returns ``x0`` (P, S, 144) normalised, ``rotmat`` (P, S, 24, 3, 3), ``betas`` (P, 10).
        """
        stage2 = self.stage2
        people = len(transl)
        condition = stage2.condition(person.crops, pad_points(cubes), transl, person.focal, person.principal,
                                     person.box_centre, person.box_size)
        rows = {key: condition[key].repeat_interleave(num_samples, 0) for key in ("image", "rest")}
        visible_rows = visible.repeat_interleave(num_samples, 0)
        batch = people * num_samples
        if noise is None:
            noise = normal((batch, 144), generator, transl.dtype, transl.device)

        def denoise(x: torch.Tensor, step: int) -> torch.Tensor:
            steps = torch.full((batch,), step, dtype=torch.long, device=x.device)
            return stage2.denoise(x, steps, rows, visible_rows, diffuse_fuse)

        guidance = None
        if guidance_weight > 0:
            if body_model is None:
                raise ValueError("collision guidance needs the SMPL body model")
            local = [cube - t for cube, t in zip(cubes, transl)]
            betas = condition["betas"].repeat_interleave(num_samples, 0)
            if coap is None:
                guidance = _collision_guidance(stage2, body_model, betas, local, num_samples)
            else:
                weights = torch.tensor(GUIDED_JOINT_WEIGHTS, dtype=transl.dtype, device=transl.device)
                guidance = coap_guidance(stage2.Xmean, stage2.Xstd, body_model, coap, betas.detach(), local, num_samples,
                                         weights.repeat_interleave(6), _row_seeds(generator, people, num_samples))
        x0 = diffusion.sample(denoise, noise, generator=generator, guidance=guidance, guidance_weight=guidance_weight)
        return {"x0": x0.reshape(people, num_samples, 144),
                "rotmat": stage2.decode(x0).reshape(people, num_samples, 24, 3, 3), "betas": condition["betas"]}


def _row_seeds(generator: Generators, people: int, num_samples: int) -> list[int]:
    """One seed per row (P * S) for COAP's point sampling, drawn from the generator(s)."""
    if isinstance(generator, (list, tuple)):
        draws = [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in generator]
        return [draw + k for draw in draws for k in range(num_samples)]
    device = "cpu" if generator is None else generator.device
    return torch.randint(0, 2**62, (people * num_samples,), generator=generator, device=device).tolist()


def _collision_guidance(stage2: EgoHMRDenoiser, body_model: nn.Module, betas: torch.Tensor,
                        local_cubes: list[torch.Tensor], num_samples: int):
    """g(x_t, step) = d(-sum_b score_b)/d pose with the lower-body joint weights of EgoHMR's
    ``guide_coll``; score_b = :func:`collision_score` of sample b's body (neutral SMPL, betas of
    the model, no translation) against its person's cube relative to the translation. As
    upstream, the gradient is taken with respect to the de-normalised pose
    (x_t * Xstd + Xmean), not x_t: its guidance weights were tuned that way."""
    weights = torch.tensor(GUIDED_JOINT_WEIGHTS, dtype=betas.dtype, device=betas.device).repeat_interleave(6)
    faces = body_model.faces_tensor

    def guidance(x_t: torch.Tensor, step: int) -> torch.Tensor:
        # predict_batch runs under inference_mode: autograd needs ordinary tensors (clones).
        with torch.inference_mode(False), torch.enable_grad():
            x = (x_t.clone() * stage2.Xstd.clone() + stage2.Xmean.clone()).detach().requires_grad_(True)
            rotmat = matrix_from_6d_spin(x.reshape(len(x), 24, 6))
            dtype = body_model.v_template.dtype
            body = body_model(betas=betas.clone().to(dtype), global_orient=rotmat[:, :1].to(dtype),
                              body_pose=rotmat[:, 1:].to(dtype), pose2rot=False)
            total = x.new_zeros(())
            for index in range(len(x)):
                points = local_cubes[index // num_samples].clone().to(dtype)
                total = total + collision_score(body.vertices[index], faces, points).to(x.dtype)
            if not total.requires_grad:
                return torch.zeros_like(x_t)
            (grad,) = torch.autograd.grad(-total, x)
        return (grad * weights).detach()

    return guidance
