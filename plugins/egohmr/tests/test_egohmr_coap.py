"""collision_score='coap': the optional COAP guidance, wired to a fake ``coap`` module with a known
analytic occupancy (the real package needs pytorch3d and COAP's weights), and the error when
COAP is not installed."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

import meshrec
from meshrec.rotations import matrix_from_6d_spin, rodrigues
from meshrec.testing import synthetic_smpl
from meshrec_egohmr.collision import COAP_BATCH_MEAN, COAPScore, coap_guidance, read_coap_weights
from meshrec_egohmr.scene import GUIDED_JOINT_WEIGHTS

smplx = pytest.importorskip("smplx")


def occupancy(points: torch.Tensor, vertices: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The fake COAP's occupancy: a Gaussian bump of width ``radius`` around the body's vertex
    centroid. points (B, N, 3), vertices (B, V, 3) -> (B, N)."""
    centre = vertices.mean(1, keepdim=True)
    return torch.exp(-((points - centre) ** 2).sum(-1) / radius**2)


class FakeCOAP(nn.Module):
    """Stands in for ``coap.COAPBodyModel``: records what it is given; ``radius`` is its one
    learned weight (so that loading the weights file is checked)."""

    def __init__(self, body):
        super().__init__()
        self.radius = nn.Parameter(torch.tensor(1.0))
        self.body_type = type(body)
        self.calls: list[dict[str, torch.Tensor]] = []
        self.cache_resets = 0

    def detach_cache(self):
        self.cache_resets += 1

    def collision_loss(self, points, smpl_output, ret_collision_mask=False):
        # COAP samples points on the mesh with the global generator: the draw shows whether
        # meshrec seeds it per row and leaves the caller's generator alone
        self.calls.append({"points": points.detach().clone(), "vertices": smpl_output.vertices.detach().clone(),
                           "joints": smpl_output.joints.detach().clone(),
                           "full_pose": smpl_output.full_pose.detach().clone(), "draw": torch.rand(())})
        loss = torch.relu(occupancy(points, smpl_output.vertices, self.radius) - 0.5)
        return loss.sum(-1) if ret_collision_mask is None else (loss.sum(-1), loss > 0)


@pytest.fixture
def fake_coap(monkeypatch):
    module = types.ModuleType("coap")
    module.attached = []

    def attach_coap(parametric_body, pretrained=True, device=None):
        assert not pretrained, "meshrec must never let COAP download its weights"
        parametric_body.coap = FakeCOAP(parametric_body)
        module.attached.append(parametric_body.coap)
        return parametric_body

    module.attach_coap = attach_coap
    monkeypatch.setitem(sys.modules, "coap", module)
    return module


def _weights(path, radius=0.35, prefix=""):
    torch.save({"state_dict": {prefix + "radius": torch.tensor(radius)}}, path)
    return path


def test_not_installed_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "coap", None)  # import coap -> ImportError
    with pytest.raises(ImportError, match=r"pip install git\+https://github.com/markomih/COAP.git"):
        COAPScore(synthetic_smpl(), _weights(tmp_path / "coap.ckpt"))


def test_weights_from_coap_or_egohmr_checkpoint(tmp_path, fake_coap):
    assert read_coap_weights(_weights(tmp_path / "a.ckpt", 0.3))["radius"] == pytest.approx(0.3)
    assert read_coap_weights(_weights(tmp_path / "b.pt", 0.2, prefix="smpl.coap."))["radius"] == pytest.approx(0.2)
    torch.save({"state_dict": {"smpl.v_template": torch.zeros(3)}}, tmp_path / "c.pt")
    with pytest.raises(meshrec.CheckpointError, match="smpl.coap"):
        read_coap_weights(tmp_path / "c.pt")
    with pytest.raises(meshrec.CheckpointError, match="do not exist"):
        read_coap_weights(tmp_path / "missing.ckpt")
    score = COAPScore(synthetic_smpl(), tmp_path / "b.pt")
    assert float(score.module.radius) == pytest.approx(0.2)
    assert score.module.body_type is smplx.SMPL  # COAP only accepts smplx's classes
    torch.save({"state_dict": {"other": torch.zeros(2)}}, tmp_path / "d.ckpt")
    with pytest.raises(meshrec.CheckpointError, match="do not fit"):
        COAPScore(synthetic_smpl(), tmp_path / "d.ckpt")


def test_guidance_calls_coap_with_the_bodies_and_box_points_and_its_gradient_flows(tmp_path, fake_coap):
    body_model = synthetic_smpl()
    score = COAPScore(body_model, _weights(tmp_path / "coap.ckpt", radius=0.35))
    people, samples = 2, 2
    mean, std = torch.zeros(144), torch.full((144,), 0.5)

    identity = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(24)  # R[:, :2] row-major = identity
    generator = torch.Generator().manual_seed(0)
    x_t = (identity - mean) / std + 0.2 * torch.randn(people * samples, 144, generator=generator)
    betas = 0.3 * torch.randn(people, 10, generator=generator).repeat_interleave(samples, 0)
    # cubes relative to the translation: points around the body (SMPL's origin) and far ones
    cubes = [torch.rand(3000, 3, generator=generator) * torch.tensor([1.6, 2.4, 1.0]) - torch.tensor([0.8, 1.4, 0.5])
             for _ in range(people)]
    cubes[1] = torch.cat([cubes[1], torch.tensor([[5.0, 5.0, 5.0]])])
    weights = torch.tensor(GUIDED_JOINT_WEIGHTS).repeat_interleave(6)
    guidance = coap_guidance(mean, std, body_model, score, betas, cubes, samples, weights, row_seeds=[11, 12, 13, 14])

    state = torch.random.get_rng_state()
    grad = guidance(x_t, 3)
    assert torch.equal(torch.random.get_rng_state(), state)  # COAP's sampling ran on a forked generator
    calls = score.module.calls
    assert len(calls) == people * samples and score.module.cache_resets == people * samples

    # independent recomputation: de-normalise, decode, SMPL, box selection, analytic loss,
    # d(-sum / 5)/d pose (EgoHMR differentiates with respect to the de-normalised pose)
    x = (x_t * std + mean).requires_grad_(True)
    rotmat = matrix_from_6d_spin(x.reshape(-1, 24, 6))
    out = body_model(betas=betas, global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], pose2rot=False)
    total = x.new_zeros(())
    for row in range(people * samples):
        vertices = out.vertices[row]
        low, high = vertices.detach().amin(0), vertices.detach().amax(0)
        cube = cubes[row // samples]
        points = cube[((cube >= low) & (cube <= high)).all(-1)]
        call = calls[row]
        assert torch.equal(call["points"][0], points)  # the cube points inside the body's box, all of them
        assert torch.allclose(call["vertices"][0], vertices.detach(), atol=1e-6)
        assert call["joints"].shape == (1, out.joints.shape[1], 3)
        assert torch.allclose(rodrigues(call["full_pose"].reshape(24, 3)), rotmat[row].detach(), atol=1e-5)  # axis-angle
        total = total + torch.relu(occupancy(points[None], vertices[None], torch.tensor(0.35)) - 0.5).sum()
    assert float(total.detach()) > 0  # the scene collides
    (expected,) = torch.autograd.grad(-total / COAP_BATCH_MEAN, x)
    expected = expected * weights
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-7)
    per_joint = grad.reshape(-1, 24, 6).abs().sum((0, 2))
    assert bool((per_joint[[0, 3, 6, 9] + list(range(12, 24))] == 0).all()) and float(per_joint[[1, 2, 4, 5]].sum()) > 0

    # COAP's point sampling is seeded per row and step: the same call draws the same numbers
    draws = [call["draw"] for call in calls]
    again = guidance(x_t, 3)
    assert torch.equal(again, grad) and [c["draw"] for c in calls[-4:]] == draws
    guidance(x_t, 2)
    assert [c["draw"] for c in calls[-4:]] != draws


@pytest.mark.slow
def test_egohmr_with_coap_guidance(tmp_path, egohmr_release, body_models_dir, fake_coap, monkeypatch):
    from meshrec_egohmr.checkpoint import STAGE2_FILE
    from test_egohmr_predict import BOX, CAMERA, _image, _scene

    common = dict(checkpoint=egohmr_release / STAGE2_FILE, body_model=body_models_dir, device="cpu",
                  timestep_respacing="ddim5", num_samples=2, cube_points=2000, stage1_scene_points=3000)
    method = meshrec.load_method("egohmr", collision_score="coap", coap_checkpoint=_weights(tmp_path / "c.ckpt", 0.5),
                                 **common)
    assert method.guidance_weight == 2.0 and float(method.coap.module.radius) == 0.5
    plain = meshrec.load_method("egohmr", guidance=False, **common)
    box = np.array([[110.0, 20.0, 210.0, 220.0]])
    sample = meshrec.Sample(index=0, source="frame", image_source=_image(), bbox=box, camera=CAMERA, scene=_scene())
    with torch.inference_mode():
        guided = method.predict_batch([sample], seeds=[3])[0]
        unguided = plain.predict_batch([sample], seeds=[3])[0]
    assert fake_coap.attached[-1].calls, "COAP was not queried"
    assert torch.isfinite(guided.samples).all()
    assert not torch.allclose(guided.samples, unguided.samples)  # the gradient moved the samples
    # the weights default to the stage-2 checkpoint's smpl.coap.* entries (COAP's real names,
    # which the fake module does not have)
    with pytest.raises(meshrec.CheckpointError, match="best_model_mpjpe_vis.pt do not fit") as error:
        meshrec.load_method("egohmr", collision_score="coap", **common)
    assert "encoder.layer0.weight" in str(error.value)
    monkeypatch.setitem(sys.modules, "coap", None)
    with pytest.raises(ImportError, match="markomih/COAP"):
        meshrec.load_method("egohmr", collision_score="coap", coap_checkpoint=tmp_path / "c.ckpt", **common)
    assert meshrec.load_method("egohmr", collision_score="coap", guidance=False, **common).coap is None


def test_meshrec_score_gradient_is_taken_with_respect_to_the_denormalised_pose():
    """Both scores follow guide_coll: d(-score)/d(x_t * Xstd + Xmean), not d/dx_t."""
    from meshrec_egohmr.model import _collision_guidance
    from meshrec_egohmr.scene import collision_score

    body_model = synthetic_smpl()
    holder = nn.Module()
    holder.Xmean = 0.05 * torch.randn(144, generator=torch.Generator().manual_seed(1))
    holder.Xstd = torch.where(torch.arange(144) % 2 == 0, torch.tensor(0.6), torch.tensor(0.2))
    identity = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(24)
    x_t = (identity - holder.Xmean) / holder.Xstd + 0.1 * torch.randn(2, 144, generator=torch.Generator().manual_seed(2))
    rest = body_model(betas=torch.zeros(1, 10)).vertices[0]
    low, high = rest.amin(0), rest.amax(0)
    cube = low + torch.rand(4000, 3, generator=torch.Generator().manual_seed(3)) * (high - low)
    betas = torch.zeros(2, 10)
    grad = _collision_guidance(holder, body_model, betas, [cube], num_samples=2)(x_t, 3)
    pose = (x_t * holder.Xstd + holder.Xmean).requires_grad_(True)
    rotmat = matrix_from_6d_spin(pose.reshape(2, 24, 6))
    out = body_model(betas=betas, global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], pose2rot=False)
    total = sum(collision_score(v, body_model.faces_tensor, cube) for v in out.vertices)
    assert float(total.detach()) > 0
    (expected,) = torch.autograd.grad(-total, pose)
    expected = expected * torch.tensor(GUIDED_JOINT_WEIGHTS).repeat_interleave(6)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-7) and float(grad.abs().max()) > 0
    assert not torch.allclose(grad, expected * holder.Xstd, rtol=1e-2)  # the d/dx_t convention differs
