"""meshrec eval --method hmr --dataset pw3d on a synthetic HumanData file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import meshrec
from meshrec.body import SMPL
from meshrec.cli import main
from meshrec.metrics.protocols import H36M_TO_J14
from meshrec.rotations import rodrigues
from meshrec_hmr import plugin
from meshrec_hmr.pw3d import read_pw3d_humandata
from pw3d_synthetic import write_synthetic_pw3d


@pytest.fixture
def pw3d(tmp_path):
    return write_synthetic_pw3d(tmp_path / "pw3d", frames=7)


def test_eval_command_writes_the_protocol_results(plugin_manager, pw3d, hmr_checkpoint, body_models_dir, tmp_path, capsys):
    plugin_manager.register(plugin, name="hmr")
    out = tmp_path / "results.json"
    code = main(["eval", "--method", "hmr", "--dataset", "pw3d", "--data-root", str(pw3d), "--checkpoint",
                 str(hmr_checkpoint), "--body-models", str(body_models_dir), "--out", str(out), "--device", "cpu",
                 "--batch-size", "3"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    assert result["dataset"] == "pw3d" and metrics["num_samples"] == 7 and metrics["complete"]
    assert metrics["protocol"] == "3dpw-mmhuman3d"
    for key in ("MPJPE", "PA-MPJPE", "PVE"):
        assert np.isfinite(metrics[key]) and metrics[key] > 0
    assert metrics["PA-MPJPE"] <= metrics["MPJPE"]


class ScriptedNetwork(torch.nn.Module):
    """Stands in for HMR's network: returns known parameters, in order, one per crop it is given,
    so that the expected metrics follow from the test's own numbers alone."""

    def __init__(self, rotmat: torch.Tensor, betas: torch.Tensor):
        super().__init__()
        self.rotmat, self.betas, self.used = rotmat, betas, 0

    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        assert crops.shape[1:] == (3, 224, 224)
        take = slice(self.used, self.used + len(crops))
        self.used += len(crops)
        return {"rotmat": self.rotmat[take].float(), "betas": self.betas[take].float(),
                "cam": torch.tensor([[0.9, 0.0, 0.0]]).expand(len(crops), 3)}


def test_numbers_equal_a_direct_computation(plugin_manager, pw3d, hmr_checkpoint, body_models_dir):
    """The protocol written out by hand: gendered ground truth, neutral prediction, H36M
    regressor, pelvis-aligned 14 joints, pooled, millimetres; PVE through the gendered model."""
    plugin_manager.register(plugin, name="hmr")
    method = meshrec.load_method("hmr", checkpoint=hmr_checkpoint, body_model=body_models_dir, device="cpu")
    data = read_pw3d_humandata(pw3d / "pw3d_test.npz")
    generator = torch.Generator().manual_seed(3)
    axis_angles = 0.3 * torch.randn(len(data), 24, 3, generator=generator, dtype=torch.float64)
    rotmat = rodrigues(axis_angles).float().double()  # the values the network would give, float32
    betas = torch.randn(len(data), 10, generator=generator, dtype=torch.float64).float().double()
    method.model = ScriptedNetwork(rotmat, betas)
    result = meshrec.evaluate(method, "pw3d", pw3d, body_model=body_models_dir, batch_size=4)["metrics"]
    assert method.model.used == len(data)

    regressor = torch.as_tensor(np.load(body_models_dir / "J_regressor_h36m.npy"))
    models = {g: SMPL(body_models_dir, gender=g, dtype=torch.float64) for g in ("neutral", "male", "female")}
    errors, aligned, pve = [], [], []
    for i in range(len(data)):
        gender = "male" if data.genders[i] == "m" else "female"
        mine = dict(betas=betas[i : i + 1], global_orient=rotmat[i : i + 1, :1], body_pose=rotmat[i : i + 1, 1:],
                    pose2rot=False)
        pred, pred_gendered = models["neutral"](**mine), models[gender](**mine)
        gt = models[gender](betas=torch.as_tensor(data.betas[i : i + 1]), global_orient=torch.as_tensor(data.global_orient[i : i + 1]),
                            body_pose=torch.as_tensor(data.body_pose[i : i + 1].reshape(1, 69)))
        p, g = regressor @ pred.vertices[0], regressor @ gt.vertices[0]
        p, g = (p - p[0])[list(H36M_TO_J14)], (g - g[0])[list(H36M_TO_J14)]
        errors.append((p - g).norm(dim=-1))
        aligned.append((similarity_align(p, g) - g).norm(dim=-1))
        pve.append((pred_gendered.vertices[0] - gt.vertices[0]).norm(dim=-1).mean())
    assert result["MPJPE"] == pytest.approx(1000 * torch.cat(errors).mean().item(), rel=1e-6)
    assert result["PA-MPJPE"] == pytest.approx(1000 * torch.cat(aligned).mean().item(), rel=1e-6)
    assert result["PVE"] == pytest.approx(1000 * torch.stack(pve).mean().item(), rel=1e-6)


def similarity_align(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Umeyama's least-squares similarity of ``source`` onto ``target`` (J, 3), by SVD in numpy."""
    x, y = source.detach().numpy(), target.detach().numpy()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    u, singular, vt = np.linalg.svd(yc.T @ xc)
    sign = np.sign(np.linalg.det(u @ vt))
    d = np.diag([1.0, 1.0, sign])
    rotation = u @ d @ vt
    scale = (singular * np.diag(d)).sum() / (xc**2).sum()
    return torch.as_tensor(scale * xc @ rotation.T + my)


def test_missing_pieces_are_named(plugin_manager, pw3d, hmr_checkpoint, body_models_dir, tmp_path):
    plugin_manager.register(plugin, name="hmr")
    method = meshrec.load_method("hmr", checkpoint=hmr_checkpoint, body_model=body_models_dir, device="cpu")
    with pytest.raises(FileNotFoundError, match="pw3d_test.npz not found"):
        meshrec.evaluate(method, "pw3d", tmp_path, body_model=body_models_dir)
    with pytest.raises(meshrec.ImageReadError, match="does not exist"):
        (pw3d / "imageFiles" / "downtown_synthetic_00" / "image_00000.jpg").unlink()
        meshrec.evaluate(method, "pw3d", pw3d, body_model=body_models_dir)
    with pytest.raises(TypeError, match="takes annotations and limit"):
        meshrec.evaluate(method, "pw3d", pw3d, body_model=body_models_dir, split="val")


def test_limit_evaluates_a_prefix(plugin_manager, pw3d, hmr_checkpoint, body_models_dir):
    plugin_manager.register(plugin, name="hmr")
    result = meshrec.evaluate("hmr", "pw3d", pw3d, checkpoint=hmr_checkpoint, body_model=body_models_dir, device="cpu",
                              limit=2)["metrics"]
    assert result["num_samples"] == 2 and not result["complete"]
