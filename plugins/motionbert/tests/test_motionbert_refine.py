"""The refiner: consistent 6D layout by default, upstream's as a compatibility mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import meshrec
from meshrec.rotations import matrix_from_6d_spin, matrix_to_6d_pytorch3d, rodrigues
from meshrec_motionbert.keypoints import normalize
from meshrec_motionbert.refine import load_refiner_network
from motionbert_small import small_method, small_refiner


def _keypoints(frames=5, people=1, seed=0):
    rng = np.random.default_rng(seed)
    kp = np.empty((frames, people, 17, 3))
    kp[..., :2] = rng.uniform(100, 500, (frames, people, 17, 2))
    kp[..., 2] = rng.uniform(0.3, 1.0, (frames, people, 17))
    return kp


def test_zero_residual_returns_the_input_in_the_consistent_layout(motionbert_body_models):
    network = small_refiner(motionbert_body_models, zero_residual=True).model
    x = torch.rand(2, 6, 17, 3, dtype=torch.float64) * 2 - 1
    rotmat = rodrigues(torch.randn(2, 6, 24, 3, dtype=torch.float64))
    with torch.no_grad():
        assert (network.refine(x, rotmat) - rotmat).abs().max() < 1e-12


def test_upstream_layout_does_not_return_the_input(motionbert_body_models):
    network = small_refiner(motionbert_body_models, layout="upstream", zero_residual=True).model
    x = torch.rand(1, 6, 17, 3, dtype=torch.float64) * 2 - 1
    rotmat = rodrigues(torch.randn(1, 6, 24, 3, dtype=torch.float64))
    with torch.no_grad():
        refined = network.refine(x, rotmat)
    assert (refined - rotmat).abs().max() > 0.1  # upstream's mismatch, kept by name
    assert (refined - matrix_from_6d_spin(matrix_to_6d_pytorch3d(rotmat))).abs().max() < 1e-12


def test_head_equals_functional_recomputation(motionbert_body_models):
    network = small_refiner(motionbert_body_models, seed=1).model
    head = network.head
    feat = torch.randn(2, 7, 17, 16, dtype=torch.float64)
    init = torch.randn(2, 7, 144, dtype=torch.float64)

    def bn(module, value):  # value (..., C) or (N, C, T) with the channels at dim 1
        shape = (1, -1, 1) if value.dim() == 3 else (1, -1)
        return ((value - module.running_mean.view(shape)) / torch.sqrt(module.running_var.view(shape) + 1e-5)
                * module.weight.view(shape) + module.bias.view(shape))

    def conv(module, value):  # (N, C, T), kernel 5, zero padding 2, explicit sum over taps
        padded = torch.nn.functional.pad(value, (2, 2))
        taps = torch.stack([padded[..., k:k + value.shape[-1]] for k in range(5)], -1)  # (N, C, T, 5)
        return torch.einsum("nctk,ock->not", taps, module.weight) + module.bias[None, :, None]

    a = torch.relu(bn(head.bn1, feat.reshape(14, -1) @ head.fc1.weight.T + head.fc1.bias))
    b = torch.relu(bn(head.bn2, conv(head.fc2, init.permute(0, 2, 1))))
    expected = conv(head.head_pose, torch.cat([a.reshape(2, 7, -1).permute(0, 2, 1), b], 1)) + init.permute(0, 2, 1)
    with torch.no_grad():
        assert (head(feat, init) - expected.permute(0, 2, 1)).abs().max() < 1e-10


def test_refine_a_sequence_prediction(motionbert_body_models):
    method = small_method(motionbert_body_models, seed=2, clip_len=24)
    refiner = small_refiner(motionbert_body_models, seed=3)
    kp = _keypoints(frames=5, people=2)
    plain = meshrec.predict(None, method=method, keypoint_sequence=kp)
    refined = meshrec.predict(None, method=method, refine=refiner, keypoint_sequence=kp)
    assert refined.method == "motionbert+motionbert" and refined.vertices.shape == (10, 6890, 3)
    x = torch.as_tensor(normalize(kp[:, 1], "bbox"))[None]
    rotations = torch.cat([plain.global_orient[:, None], plain.body_pose], 1)[1::2][None]
    with torch.no_grad():
        expected = refiner.model.refine(x, rotations)[0]
    assert (refined.global_orient[1::2] - expected[:, 0]).abs().max() < 1e-10
    assert torch.equal(refined.betas, plain.betas)


def test_refine_frames_of_a_batch_as_one_sequence(motionbert_body_models):
    method = small_method(motionbert_body_models, seed=2, clip_len=24)
    refiner = small_refiner(motionbert_body_models, seed=3)
    kp = _keypoints(frames=4, people=2, seed=2)
    sequence = meshrec.predict(None, method=method, keypoint_sequence=kp)
    whole = refiner.refine([meshrec.Sample(index=0, source="clip", keypoint_sequence=kp)], [sequence])[0]
    frames = sequence.split(torch.arange(4).repeat_interleave(2), 4, shared=("frames", "people"))
    samples = [meshrec.Sample(index=t, source=f"frame{t}", keypoints=kp[t]) for t in range(4)]
    parts = refiner.refine(samples, frames)
    assert [p.num_people for p in parts] == [2, 2, 2, 2] and parts[3].source == "frame3"
    assert (torch.cat([p.vertices for p in parts]) - whole.vertices).abs().max() < 1e-10
    with pytest.raises(ValueError, match="same people"):
        refiner.refine(samples[:2], [frames[0], frames[1].split(torch.tensor([0, 1]), 2)[0]])


def test_zero_residual_refiner_keeps_the_prediction(motionbert_body_models):
    method = small_method(motionbert_body_models, seed=2, clip_len=24)
    refiner = small_refiner(motionbert_body_models, zero_residual=True, flip=True)
    kp = _keypoints(frames=4, people=1, seed=1)
    plain = meshrec.predict(None, method=method, keypoint_sequence=kp)
    refined = meshrec.predict(None, method=method, refine=refiner, keypoint_sequence=kp)
    assert (refined.vertices - plain.vertices).abs().max() < 1e-9


def test_refiner_is_not_a_predictor_and_mesh_model_is_not_a_refiner(motionbert_body_models):
    refiner = small_refiner(motionbert_body_models)
    with pytest.raises(ValueError, match="refine="):
        meshrec.predict(None, method=refiner, keypoint_sequence=_keypoints())
    method = small_method(motionbert_body_models, clip_len=24)
    with pytest.raises(ValueError, match="refiner checkpoint"):
        meshrec.predict(None, method=method, refine=method, keypoint_sequence=_keypoints())


def test_refiner_checkpoint_layout_loads_strictly(tmp_path, motionbert_body_models):
    from motionbert_small import SMALL

    network = small_refiner(motionbert_body_models).model.float()
    state = {f"module.{k}": v for k, v in network.state_dict().items()}
    state["module.head.smpl.v_template"] = torch.zeros(6890, 3)
    path = tmp_path / "refine.bin"
    torch.save({"epoch": 1, "lr": [1e-4], "optimizer": {}, "model": state, "best_jpe": np.float64(68.8)}, path)
    loaded = load_refiner_network(path, layout="upstream", hidden_dim=8, **SMALL)
    assert loaded.layout == "upstream"
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in loaded.state_dict().items())
    head_keys = [k for k in loaded.state_dict() if k.startswith("head.")]
    assert len(head_keys) == 16 and "head.init_pose" not in head_keys
