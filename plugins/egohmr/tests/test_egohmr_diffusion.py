"""Schedule values, respacing, the DDPM / DDIM samplers against hand-written loops, the scene
cube, the collision score and the guidance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from meshrec_egohmr.diffusion import Diffusion, cosine_betas, space_timesteps
from meshrec_egohmr.scene import GUIDED_JOINT_WEIGHTS, collision_score, crop_scene_cube


def test_cosine_schedule_values():
    betas = cosine_betas(50).numpy()
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = np.array([min(1 - f((i + 1) / 50) / f(i / 50), 0.999) for i in range(50)])
    assert np.abs(betas - expected).max() < 1e-15
    assert betas[-1] == 0.999  # the last step is clipped
    assert abs(betas[0] - (1 - f(0.02) / f(0.0))) < 1e-15
    assert np.all(np.diff(betas) > 0)


def test_respacing_by_name():
    assert space_timesteps(50, "ddim5") == {0, 10, 20, 30, 40}
    assert Diffusion.create("ddim5").timestep_map.tolist() == [0, 10, 20, 30, 40]
    assert Diffusion.create("ddim5").ddim and not Diffusion.create("ddpm").ddim
    assert Diffusion.create("ddpm").timestep_map.tolist() == list(range(50))
    assert space_timesteps(50, "ddim10") == set(range(0, 50, 5))
    assert sorted(space_timesteps(50, "5")) == [0, 12, 24, 37, 49]
    with pytest.raises(ValueError, match="ddim12"):
        Diffusion.create("ddim12")
    with pytest.raises(ValueError):
        Diffusion.create("")


def test_respaced_betas_keep_the_cumulative_products():
    full, spaced = Diffusion.create("ddpm"), Diffusion.create("ddim5")
    for index, step in enumerate([0, 10, 20, 30, 40]):
        assert abs(float(spaced.alphas_cumprod[index]) - float(full.alphas_cumprod[step])) < 1e-14
    abar = torch.cumprod(1 - cosine_betas(50), 0)
    expected_beta_1 = 1 - abar[10] / abar[0]
    assert abs(float(spaced.betas[1]) - float(expected_beta_1)) < 1e-15
    # posterior quantities from their definitions
    b, ab, abp = spaced.betas, spaced.alphas_cumprod, spaced.alphas_cumprod_prev
    assert torch.allclose(spaced.posterior_variance, b * (1 - abp) / (1 - ab), rtol=0, atol=1e-15)
    assert spaced.posterior_log_variance_clipped[0] == torch.log(spaced.posterior_variance[1])


def _toy_denoiser(weight: torch.Tensor):
    calls = []

    def denoise(x, step):
        calls.append(step)
        return torch.tanh(x @ weight) * (1 + step / 100)

    return denoise, calls


def test_ddim_matches_hand_loop():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 6, generator=generator, dtype=torch.float64) * 0.5
    noise = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    diffusion = Diffusion.create("ddim5")
    denoise, calls = _toy_denoiser(weight)
    result = diffusion.sample(denoise, noise)
    assert calls == [40, 30, 20, 10, 0]  # the denoiser sees the original steps
    # independent loop (DDIM eta = 0 from x0 predictions), float64
    abar_full = np.cumprod(1 - cosine_betas(50).numpy())
    steps = [0, 10, 20, 30, 40]
    x = noise.clone()
    x0 = None
    for k in reversed(range(5)):
        x0 = torch.tanh(x @ weight) * (1 + steps[k] / 100)
        a = abar_full[steps[k]]
        a_prev = abar_full[steps[k - 1]] if k > 0 else 1.0
        eps = (x / math.sqrt(a) - x0) / math.sqrt(1 / a - 1)
        x = x0 * math.sqrt(a_prev) + math.sqrt(1 - a_prev) * eps
    assert (result - x0).abs().max() < 1e-12


def test_ddpm_matches_hand_loop_and_is_reproducible():
    weight = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.5
    noise = torch.randn(2, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    diffusion = Diffusion.create("ddpm")
    denoise, _ = _toy_denoiser(weight)
    first = diffusion.sample(denoise, noise, generator=torch.Generator().manual_seed(3))
    second = diffusion.sample(denoise, noise, generator=torch.Generator().manual_seed(3))
    other = diffusion.sample(denoise, noise, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, second) and not torch.equal(first, other)
    betas = cosine_betas(50).numpy()
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    generator = torch.Generator().manual_seed(3)
    x = noise.clone()
    for t in reversed(range(50)):
        x0 = torch.tanh(x @ weight) * (1 + t / 100)
        mean = (betas[t] * math.sqrt(abar_prev[t]) / (1 - abar[t])) * x0 + \
            ((1 - abar_prev[t]) * math.sqrt(1 - betas[t]) / (1 - abar[t])) * x
        if t > 0:
            variance = betas[t] * (1 - abar_prev[t]) / (1 - abar[t])
            x = mean + math.sqrt(variance) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    assert (first - x0).abs().max() < 1e-12


def test_ddpm_guidance_shifts_the_posterior_mean_in_the_last_steps():
    diffusion = Diffusion.create("ddpm")
    seen = []

    def guidance(x, step):
        seen.append(step)
        return torch.ones_like(x)

    noise = torch.zeros(1, 4, dtype=torch.float64)
    plain = diffusion.sample(lambda x, t: x * 0.5, noise, generator=torch.Generator().manual_seed(0))
    guided = diffusion.sample(lambda x, t: x * 0.5, noise, generator=torch.Generator().manual_seed(0),
                              guidance=guidance, guidance_weight=2.0)
    assert seen == list(range(10, -1, -1))
    assert (guided - plain).min() > 0  # moved along the gradient


def _scene_box():
    """A floor (y = +1, below the camera-frame body) and a block of points around the legs."""
    generator = torch.Generator().manual_seed(5)
    floor = torch.rand(4000, 3, generator=generator, dtype=torch.float64) * torch.tensor([6.0, 0.0, 6.0]) + \
        torch.tensor([-3.0, 1.0, 0.0])
    return floor


def test_scene_cube_crop():
    generator = torch.Generator().manual_seed(6)
    points = torch.rand(30000, 3, generator=generator, dtype=torch.float64) * torch.tensor([8.0, 4.0, 8.0]) + \
        torch.tensor([-4.0, -2.0, 0.0])
    centre = torch.tensor([0.5, 0.0, 3.0], dtype=torch.float64)
    cube = crop_scene_cube(points, centre, size=2.0, num_points=500)
    assert 1 <= len(cube) <= 500
    relative = cube - centre
    assert relative[:, 0].abs().max() <= 1.0 and relative[:, 2].abs().max() <= 1.0
    # height measured along up = -y: at most 2 m above the lowest kept point (largest y)
    in_window = points[((points - centre)[:, [0, 2]].abs() <= 1.0).all(1)]
    lowest = in_window[:, 1].max()
    assert (cube[:, 1] >= lowest - 2.0).all()
    # every k-th point of the window, in input order
    kept = in_window[in_window[:, 1] >= lowest - 2.0]
    step = len(kept) // 500
    assert torch.equal(cube, kept[::step][:500])
    with pytest.raises(ValueError, match="nearest scene point"):
        crop_scene_cube(points, torch.tensor([50.0, 0.0, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        crop_scene_cube(points[:, :2], centre)


@pytest.mark.slow
def test_collision_score_counts_depth_of_points_inside(body_models_dir):
    from meshrec.body import SMPL

    smpl = SMPL(body_models_dir, gender="neutral", create_transl=False).double()
    vertices = smpl(betas=torch.zeros(1, 10, dtype=torch.float64)).vertices[0].detach()
    centre = vertices.mean(0)
    outside = centre + torch.tensor([[3.0, 0.0, 0.0]], dtype=torch.float64)
    assert collision_score(vertices, smpl.faces_tensor, outside) == 0
    score = collision_score(vertices, smpl.faces_tensor, torch.cat([outside, centre[None]]))
    from meshrec.ops.metrics import nearest_points

    assert abs(float(score) - float(nearest_points(centre[None], vertices).distance[0])) < 1e-12
    vertices = vertices.clone().requires_grad_(True)
    collision_score(vertices, smpl.faces_tensor, centre[None]).backward()
    assert vertices.grad.abs().sum() > 0


@pytest.mark.slow
def test_guided_sampling_lowers_the_collision_score(body_models_dir):
    """A denoiser that keeps its input (x0 = x_t) and a scene block crossing the legs: the
    guided DDPM ends with less penetration than the same draw without guidance."""
    from meshrec.body import SMPL
    from meshrec.rotations import matrix_to_6d_spin
    from meshrec_egohmr.model import _collision_guidance
    from meshrec_egohmr.stage2 import EgoHMRDenoiser

    smpl = SMPL(body_models_dir, gender="neutral", create_transl=False).double()
    holder = torch.nn.Module()
    holder.Xmean = torch.zeros(144, dtype=torch.float64)
    holder.Xstd = torch.full((144,), 0.3, dtype=torch.float64)
    holder.decode = lambda x: EgoHMRDenoiser.decode(holder, x)
    rest = matrix_to_6d_spin(torch.eye(3, dtype=torch.float64).expand(24, 3, 3)).reshape(144) / 0.3
    body = smpl(betas=torch.zeros(1, 10, dtype=torch.float64)).vertices[0].detach()
    knee_height = float(body[:, 1].min()) + 0.35 * float(body[:, 1].max() - body[:, 1].min())
    generator = torch.Generator().manual_seed(7)
    block = torch.rand(3000, 3, generator=generator, dtype=torch.float64)
    low, high = body.amin(0), body.amax(0)
    block = low + block * (high - low)
    block = block[block[:, 1] < knee_height]  # scene points through the lower legs
    betas = torch.zeros(4, 10, dtype=torch.float64)
    guidance = _collision_guidance(holder, smpl, betas, [block], num_samples=4)
    noise = rest + 0.05 * torch.randn(4, 144, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    # keep the noise small: a denoiser returning its input, scaled so the chain stays near rest
    diffusion = Diffusion.create("ddpm")

    def denoise(x, step):
        return rest + 0.2 * (x - rest)

    def scores(x0):
        rot = holder.decode(x0)
        with torch.no_grad():
            verts = smpl(betas=betas, global_orient=rot[:, :1], body_pose=rot[:, 1:], pose2rot=False).vertices
            return torch.stack([collision_score(v, smpl.faces_tensor, block) for v in verts])

    plain = diffusion.sample(denoise, noise, generator=torch.Generator().manual_seed(9))
    guided = diffusion.sample(denoise, noise, generator=torch.Generator().manual_seed(9), guidance=guidance,
                              guidance_weight=30.0)
    before, after = scores(plain), scores(guided)
    assert float(before.sum()) > 0
    assert float(after.sum()) < float(before.sum())
    # only lower-body joints moved (EgoHMR's gradient mask)
    moved = (guided - plain).reshape(4, 24, 6).abs().amax((0, 2))
    frozen = [j for j, w in enumerate(GUIDED_JOINT_WEIGHTS) if w == 0]
    assert moved[frozen].max() < 1e-12 < moved[[4, 5]].max()
