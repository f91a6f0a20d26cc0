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


def test_numbers_equal_a_direct_computation(plugin_manager, pw3d, hmr_checkpoint, body_models_dir):
    """The protocol written out by hand: gendered ground truth, neutral prediction, H36M
    regressor, pelvis-aligned 14 joints, pooled, millimetres; PVE through the gendered model."""
    plugin_manager.register(plugin, name="hmr")
    method = meshrec.load_method("hmr", checkpoint=hmr_checkpoint, body_model=body_models_dir, device="cpu")
    result = meshrec.evaluate(method, "pw3d", pw3d, body_model=body_models_dir, batch_size=4)["metrics"]

    data = read_pw3d_humandata(pw3d / "pw3d_test.npz")
    regressor = torch.as_tensor(np.load(body_models_dir / "J_regressor_h36m.npy"))
    models = {g: SMPL(body_models_dir, gender=g, dtype=torch.float64) for g in ("neutral", "male", "female")}
    from meshrec_hmr.evaluation import _samples

    with torch.no_grad():
        out = method.regress(_samples(data, pw3d, 0, len(data)), bbox_scale=1.0)
    errors, pve = [], []
    for i in range(len(data)):
        gender = "male" if data.genders[i] == "m" else "female"
        rotmat, betas = out["rotmat"][i : i + 1].double(), out["betas"][i : i + 1].double()
        pred = models["neutral"](betas=betas, global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], pose2rot=False)
        pred_gendered = models[gender](betas=betas, global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], pose2rot=False)
        gt = models[gender](betas=torch.as_tensor(data.betas[i : i + 1]), global_orient=torch.as_tensor(data.global_orient[i : i + 1]),
                            body_pose=torch.as_tensor(data.body_pose[i : i + 1].reshape(1, 69)))
        p, g = regressor @ pred.vertices[0], regressor @ gt.vertices[0]
        p, g = (p - p[0])[list(H36M_TO_J14)], (g - g[0])[list(H36M_TO_J14)]
        errors.append((p - g).norm(dim=-1))
        pve.append((pred_gendered.vertices[0] - gt.vertices[0]).norm(dim=-1).mean())
    assert result["MPJPE"] == pytest.approx(1000 * torch.cat(errors).mean().item(), rel=1e-6)
    assert result["PVE"] == pytest.approx(1000 * torch.stack(pve).mean().item(), rel=1e-6)


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
