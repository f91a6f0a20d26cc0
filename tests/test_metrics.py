"""meshrec.metrics: functional metrics against numpy oracles, scene metrics, matching and PCRD,
and the evaluators of the named protocols on synthetic SMPL-format models."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import numpy_oracles as oracle
from meshrec import metrics
from meshrec.body import SMPL, load_joint_regressor
from meshrec.metrics import protocols as protocol_module
from meshrec.ops import reference
from meshrec.testing import synthetic_smpl_arrays

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture
def joints():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(40, 17, 3, generator=g, dtype=torch.float64)
    target = pred + 0.1 * torch.randn(40, 17, 3, generator=g, dtype=torch.float64)
    target[3] = pred[3] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # mirrored
    return pred, target


# ---- functional metrics


@pytest.mark.parametrize("root", [None, 0, (1, 4)])
def test_mpjpe_matches_numpy(joints, root):
    pred, target = joints
    expected = oracle.joint_errors(pred.numpy(), target.numpy(), root)
    np.testing.assert_allclose(metrics.mpjpe(pred, target, root=root).numpy(), expected.mean(-1), atol=1e-12)
    np.testing.assert_allclose(metrics.mpjpe(pred, target, root=root, per_joint=True).numpy(), expected, atol=1e-12)
    selected = list(metrics.H36M_TO_J14)
    np.testing.assert_allclose(metrics.mpjpe(pred, target, root=root, joints=selected).numpy(),
                               expected[:, selected].mean(-1), atol=1e-12)


def test_mpjpe_mask_and_empty_mask(joints):
    pred, target = joints
    mask = torch.rand(40, 17, generator=torch.Generator().manual_seed(1)) > 0.4
    mask[5] = False
    got = metrics.mpjpe(pred, target, mask=mask, root=0)
    expected = oracle.masked_sample_means(oracle.joint_errors(pred.numpy(), target.numpy(), 0), mask.numpy())
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    assert torch.isnan(got[5]) and torch.isfinite(got[torch.arange(40) != 5]).all()


def test_pa_mpjpe_matches_numpy_loop(joints):
    pred, target = joints
    expected = oracle.pa_errors(pred.numpy(), target.numpy())
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, target).numpy(), expected.mean(-1), atol=1e-10)
    selected = list(metrics.H36M_TO_J14)
    expected_14 = oracle.pa_errors(pred[:, selected].numpy(), target[:, selected].numpy())
    np.testing.assert_allclose(metrics.pa_mpjpe(pred, target, joints=selected).numpy(), expected_14.mean(-1), atol=1e-10)
    # root alignment first changes nothing
    np.testing.assert_allclose(metrics.pa_mpjpe(metrics.align_root(pred, pred, 0), target).numpy(),
                               expected.mean(-1), atol=1e-10)


def test_pa_mpjpe_alignment_weights(joints):
    pred, target = joints
    visible = torch.rand(40, 17, generator=torch.Generator().manual_seed(2)) > 0.3
    visible[:, :4] = True
    got = metrics.pa_mpjpe(pred, target, align_weights=visible, per_joint=True)
    expected = oracle.pa_errors(pred.numpy(), target.numpy(), visible.double().numpy())
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)
    masked = metrics.pa_mpjpe(pred, target, mask=visible)  # the mask also weights the alignment
    np.testing.assert_allclose(masked.numpy(), oracle.masked_sample_means(expected, visible.numpy()), atol=1e-10)


def test_pa_mpjpe_is_a_differentiable_loss(joints):
    pred, target = joints
    leaf = pred[:4].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: metrics.pa_mpjpe(p, target[:4]), (leaf,))
    exact = target[:2].clone().requires_grad_()  # zero error: the norm's subgradient, not NaN
    (grad,) = torch.autograd.grad(metrics.pa_mpjpe(exact, target[:2]).sum(), exact)
    assert torch.isfinite(grad).all()


def test_scale_aligned_mpjpe_matches_numpy(joints):
    pred, target = joints
    pr = pred - pred[:, :1]
    gt = target - target[:, :1]
    expected = np.linalg.norm(oracle.scale_aligned(pr.numpy(), gt.numpy()) - gt.numpy(), axis=-1).mean(-1)
    np.testing.assert_allclose(metrics.scale_aligned_mpjpe(pred, target, root=0).numpy(), expected, atol=1e-12)


def test_pve_roots_and_alignments():
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(6, 100, 3, generator=g, dtype=torch.float64)
    target = pred * 1.3 + 0.2
    np.testing.assert_allclose(metrics.pve(pred, target).numpy(),
                               np.linalg.norm(pred.numpy() - target.numpy(), axis=-1).mean(-1))
    assert metrics.pve(pred, target, alignment="procrustes").abs().max() < 1e-12
    roots = dict(pred_root=pred[:, 0], target_root=target[:, 0])
    np.testing.assert_allclose(metrics.pve(pred, target, **roots).numpy(),
                               np.linalg.norm((pred - pred[:, :1] - target + target[:, :1]).numpy(), axis=-1).mean(-1))
    assert metrics.pve(pred, target, **roots, alignment="scale").abs().max() < 1e-12
    with pytest.raises(ValueError, match="both pred_root and target_root"):
        metrics.pve(pred, target, pred_root=pred[:, 0])
    with pytest.raises(ValueError, match="alignment must be one of"):
        metrics.pve(pred, target, alignment="rigid")


@pytest.mark.parametrize("alignment", ["none", "scale", "procrustes"])
def test_pck_and_auc_match_numpy(joints, alignment):
    pred, target = joints
    pred_mm, target_mm = pred * 100, target * 100  # errors of tens of mm
    if alignment == "procrustes":
        errors = oracle.pa_errors(pred_mm.numpy(), target_mm.numpy())
    elif alignment == "scale":
        pr, gt = (pred_mm - pred_mm[:, :1]).numpy(), (target_mm - target_mm[:, :1]).numpy()
        errors = np.linalg.norm(oracle.scale_aligned(pr, gt) - gt, axis=-1)
    else:
        errors = oracle.joint_errors(pred_mm.numpy(), target_mm.numpy(), 0)
    np.testing.assert_allclose(metrics.pck(pred_mm, target_mm, 15.0, alignment=alignment, root=0).numpy(),
                               (errors < 15.0).mean(-1), atol=1e-12)
    thresholds = np.linspace(0, 150, 31)
    expected_auc = np.mean([(errors < t).mean(-1) for t in thresholds], axis=0)
    np.testing.assert_allclose(metrics.auc(pred_mm, target_mm, thresholds=thresholds, alignment=alignment, root=0).numpy(),
                               expected_auc, atol=1e-12)
    default = metrics.auc(pred_mm / 1000, target_mm / 1000, alignment=alignment, root=0)  # metres, 0..0.15
    np.testing.assert_allclose(default.numpy(), expected_auc, atol=1e-12)


def test_pck_is_strict():
    pred = torch.zeros(1, 2, 3, dtype=torch.float64)
    target = torch.tensor([[[0.15, 0, 0], [0.1499, 0, 0]]], dtype=torch.float64)
    assert metrics.pck(pred, target).item() == 0.5


def test_acceleration_error_matches_numpy_and_mask():
    g = torch.Generator().manual_seed(4)
    pred = torch.randn(2, 30, 14, 3, generator=g, dtype=torch.float64)
    target = torch.randn(2, 30, 14, 3, generator=g, dtype=torch.float64)
    got = metrics.acceleration_error(pred, target)
    assert got.shape == (2, 28)
    for b in range(2):
        np.testing.assert_allclose(got[b].numpy(), oracle.acceleration_errors(pred[b].numpy(), target[b].numpy()), atol=1e-12)
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[0, 10] = False
    masked = metrics.acceleration_error(pred, target, mask=valid)
    assert torch.isnan(masked[0, 8:11]).all() and torch.isfinite(masked[0, :8]).all() and torch.isfinite(masked[1]).all()
    with pytest.raises(ValueError, match="at least 3 frames"):
        metrics.acceleration_error(pred[:, :2], target[:, :2])


def test_diversity_matches_numpy():
    g = torch.Generator().manual_seed(5)
    samples = torch.randn(7, 5, 24, 3, generator=g, dtype=torch.float64)
    expected = [oracle.average_pairwise_distance(s) for s in samples.numpy()]
    np.testing.assert_allclose(metrics.average_pairwise_distance(samples).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(metrics.sample_std(samples).numpy(),
                               samples.numpy().std(axis=1, ddof=1).mean(axis=(-1, -2)), atol=1e-12)
    mask = torch.zeros(7, 24, dtype=torch.bool)
    mask[:, 3:9] = True
    expected_masked = [oracle.average_pairwise_distance(s[:, 3:9]) for s in samples.numpy()]
    np.testing.assert_allclose(metrics.average_pairwise_distance(samples, mask=mask).numpy(), expected_masked, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.average_pairwise_distance(samples[:, :1])


def test_root_positions():
    joints = torch.arange(12, dtype=torch.float64).view(1, 4, 3)
    torch.testing.assert_close(metrics.root_positions(joints, (1, 2)), joints[:, 1:3].mean(1))
    torch.testing.assert_close(metrics.root_positions(joints, None), torch.zeros(1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="joint index"):
        metrics.root_positions(joints, 7)
    with pytest.raises(ValueError, match="joint index"):
        metrics.root_positions(joints, ())


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: metrics.mpjpe(torch.zeros(0, 14, 3), torch.zeros(0, 14, 3)), ValueError, "empty batch"),
        (lambda: metrics.mpjpe(torch.zeros(2, 0, 3), torch.zeros(2, 0, 3)), ValueError, "at least 1"),
        (lambda: metrics.pa_mpjpe(torch.zeros(2, 14, 3), torch.zeros(2, 17, 3)), ValueError, "same shape"),
        (lambda: metrics.mpjpe(torch.zeros(2, 14, 2), torch.zeros(2, 14, 2)), ValueError, r"\(\.\.\., N, 3\)"),
        (lambda: metrics.mpjpe(np.zeros((2, 14, 3)), torch.zeros(2, 14, 3)), TypeError, "torch.Tensor"),
        (lambda: metrics.mpjpe(torch.zeros(2, 14, 3), torch.zeros(2, 14, 3), mask=torch.ones(2, 13)), ValueError,
         "mask must have shape"),
        (lambda: metrics.pck(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3), alignment="affine"), ValueError, "alignment"),
        (lambda: metrics.auc(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3), thresholds=[]), ValueError, "thresholds"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---- scene metrics


def floor_sdf(height=0.1):
    """Signed distance of a floor at y = height over [-1, 1] x [-1, 1] x [-1, 1]."""
    axis = torch.linspace(-1, 1, 21, dtype=torch.float64)
    return (axis[None, :, None] - height).expand(21, 21, 21).contiguous(), [-1.0] * 3, [1.0] * 3


def test_penetration_and_contact_fit_error_on_a_floor():
    sdf, lo, hi = floor_sdf()
    g = torch.Generator().manual_seed(6)
    vertices = torch.rand(3, 500, 3, generator=g, dtype=torch.float64) * 1.6 - 0.8
    depth = (0.1 - vertices[..., 1]).clamp_min(0)
    torch.testing.assert_close(metrics.penetration_error(vertices, sdf, lo, hi), depth.sum(-1))
    contact = torch.zeros(500, dtype=torch.bool)
    contact[:50] = True
    expected = depth[:, 50:].sum(-1) + (vertices[:, :50, 1] - 0.1).abs().sum(-1)
    torch.testing.assert_close(metrics.contact_fit_error(vertices, sdf, lo, hi, contact), expected)
    torch.testing.assert_close(metrics.contact_fit_error(vertices, sdf, lo, hi, None), depth.sum(-1))


def test_contact_distance_and_collision_ratio():
    arrays = synthetic_smpl_arrays()
    vertices = torch.tensor(arrays["v_template"])
    faces = torch.tensor(arrays["f"].astype(np.int64))
    g = torch.Generator().manual_seed(7)
    scene = torch.rand(2000, 3, generator=g, dtype=torch.float64) * 2 - 1
    distance = metrics.contact_distance(vertices, scene)
    brute = torch.cdist(vertices, scene).min()
    assert abs(distance.item() - brute.item()) < 1e-12
    torch.testing.assert_close(metrics.contact_distance(vertices, scene, squared=True), distance.square())
    ratio = metrics.collision_ratio(vertices, faces, scene)
    inside = reference.winding_number(scene[None], vertices[None], faces)[0].round() >= 1
    assert abs(ratio.item() - inside.double().mean().item()) < 1e-12
    half = torch.zeros(2000, dtype=torch.bool)
    half[:1000] = True
    assert abs(metrics.collision_ratio(vertices, faces, scene, mask=half).item() - inside[:1000].double().mean().item()) < 1e-12


# ---- matching, detection scores, relative depth


def test_hungarian_matching_is_optimal_and_gated():
    g = torch.Generator().manual_seed(8)
    target = torch.randn(4, 14, 2, generator=g, dtype=torch.float64) * 50 + torch.arange(4)[:, None, None] * 30
    pred = target[[2, 0, 3]] + torch.randn(3, 14, 2, generator=g, dtype=torch.float64)
    pred = torch.cat([pred, torch.randn(1, 14, 2, generator=g, dtype=torch.float64) * 5 + 1000])  # far away
    matching = metrics.match_people(pred, target, max_cost=20.0)
    assert {tuple(p) for p in matching.pairs.tolist()} == {(0, 2), (1, 0), (2, 3)}
    assert matching.false_positives.tolist() == [3] and matching.misses.tolist() == [1]
    scores = metrics.detection_scores(matching.true_positives, len(matching.false_positives), len(matching.misses))
    assert scores.precision == 0.75 and scores.recall == 0.75 and scores.f1 == 3 / (3 + 1)
    ungated = metrics.match_people(pred, target)
    assert ungated.true_positives == 4 and len(ungated.misses) == 0
    cost = torch.linalg.vector_norm(pred[:, None] - target[None], dim=-1).mean(-1)
    brute = min(sum(cost[i, j].item() for i, j in enumerate(perm)) for perm in itertools.permutations(range(4)))
    assert float(ungated.costs.sum()) == pytest.approx(brute)
    gated = metrics.match_people(pred, target, min_iou=0.1)
    assert gated.true_positives == 3
    empty = metrics.match_people(pred[:0], target)
    assert empty.true_positives == 0 and empty.misses.tolist() == [0, 1, 2, 3]
    masked = torch.ones(4, 14, dtype=torch.bool)
    masked[0, 7:] = False
    assert metrics.match_people(pred, target, target_mask=masked, max_cost=20.0).true_positives == 3


def test_hungarian_beats_greedy():
    # Greedy takes the cheapest pair (p0, g0) first and is left with an expensive pair.
    target = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]]], dtype=torch.float64)
    pred = torch.tensor([[[0.6, 0.0]], [[-0.5, 0.0]]], dtype=torch.float64)
    matching = metrics.match_people(pred, target)
    assert sorted(map(tuple, matching.pairs.tolist())) == [(0, 1), (1, 0)]


def test_detection_scores_edge_cases():
    assert metrics.detection_scores(0, 0, 0) == metrics.DetectionScores(0.0, 0.0, 0.0, 0, 0, 0)
    scores = metrics.detection_scores(8, 2, 4)
    assert scores.precision == 0.8 and scores.recall == 8 / 12 and scores.f1 == 8 / (8 + 3)
    with pytest.raises(ValueError, match="non-negative"):
        metrics.detection_scores(1, -1, 0)


def test_relative_depth_pairs_and_pcrd():
    depth = torch.tensor([2.0, 2.1, 3.0, 1.0, 5.0])
    layer = torch.tensor([1, 1, 2, 0, -1])  # the last is unknown
    correct, pairs = metrics.relative_depth_pairs(depth, layer, threshold=0.2)
    # pairs: (0,1) same: |0.1| < 0.2 ok; (0,2) 2 farther: 1.0 > 0.2 ok; (0,3) 0 closer: -1 ok;
    # (1,2) ok; (1,3) ok; (2,3) closer: -2 ok
    assert (correct, pairs) == (6, 6)
    correct, pairs = metrics.relative_depth_pairs(torch.tensor([2.0, 2.1]), torch.tensor([0, 1]))
    assert (correct, pairs) == (0, 1)  # farther by only 0.1
    assert metrics.pcrd(6, 6, missed_people=2) == 6 / (6 + 0.6)
    assert metrics.pcrd(0, 0) == 0.0


# ---- evaluators and protocols


@pytest.fixture(scope="module")
def body_models(tmp_path_factory):
    from meshrec.testing import write_synthetic_body_models

    folder = write_synthetic_body_models(tmp_path_factory.mktemp("metrics_models"))
    # The protocols from SA-HMR / MotionBERT name the corrected H36M regressor.
    shutil.copy(folder / "J_regressor_h36m.npy", folder / "J_regressor_h36m_correct.npy")
    return folder


def smpl_batch(seed: int, batch: int = 6):
    g = torch.Generator().manual_seed(seed)
    return {
        "betas": torch.randn(batch, 10, generator=g, dtype=torch.float64) * 0.5,
        "body_pose": torch.randn(batch, 69, generator=g, dtype=torch.float64) * 0.2,
        "global_orient": torch.randn(batch, 3, generator=g, dtype=torch.float64) * 0.3,
    }


def mmhuman3d_oracle(body_models, pred_params, target_params, genders):
    """The mmhuman3d 3DPW numbers, computed sample by sample in numpy from meshes."""
    regressor = load_joint_regressor("J_regressor_h36m.npy", body_models)
    models = {g: SMPL(body_models, gender=g, dtype=torch.float64) for g in ("neutral", "male", "female")}

    def mesh(params, i, gender):
        out = models[gender](**{k: v[i : i + 1] for k, v in params.items()})
        return out.vertices[0].detach().numpy()

    j14 = list(metrics.H36M_TO_J14)
    errors, pa, pve = [], [], []
    for i, g in enumerate(genders):
        gender = "male" if g == "m" else "female"
        gt_vertices, pred_vertices = mesh(target_params, i, gender), mesh(pred_params, i, "neutral")
        gt_joints, pred_joints = regressor @ gt_vertices, regressor @ pred_vertices
        gt_joints = (gt_joints - gt_joints[0])[j14] * 1000
        pred_joints = (pred_joints - pred_joints[0])[j14] * 1000
        errors.append(np.linalg.norm(pred_joints - gt_joints, axis=-1))
        aligned = oracle.similarity_transform(pred_joints, gt_joints)[0]
        pa.append(np.linalg.norm(aligned - gt_joints, axis=-1))
        pred_gendered = mesh(pred_params, i, gender)  # mmhuman3d's PVE quirk
        pve.append(np.linalg.norm(pred_gendered - gt_vertices, axis=-1).mean() * 1000)
    errors, pa = np.stack(errors), np.stack(pa)
    return {
        "MPJPE": errors.mean(), "PA-MPJPE": pa.mean(), "PVE": np.mean(pve),
        "3DPCK": (errors < 150).mean() * 100, "PA-3DPCK": (pa < 150).mean() * 100,
        "3DAUC": np.mean([(errors < t).mean() for t in np.linspace(0, 150, 31)]) * 100,
        "PA-3DAUC": np.mean([(pa < t).mean() for t in np.linspace(0, 150, 31)]) * 100,
    }


def test_3dpw_mmhuman3d_protocol(body_models):
    evaluator = metrics.evaluator("3dpw-mmhuman3d", body_model=body_models)
    genders = ["m", "f", "f", "m", "female", "m"]
    pred, target = smpl_batch(1), smpl_batch(2)
    evaluator.update_smpl(pred=pred, target=target, gender=genders)
    evaluator.update_smpl(pred=smpl_batch(3, 2), target=smpl_batch(4, 2), gender=["m", "f"])
    report = evaluator.compute()
    all_pred = {k: torch.cat([pred[k], smpl_batch(3, 2)[k]]) for k in pred}
    all_target = {k: torch.cat([target[k], smpl_batch(4, 2)[k]]) for k in target}
    expected = mmhuman3d_oracle(body_models, all_pred, all_target, ["m", "f", "f", "m", "f", "m", "m", "f"])
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-6), key
    assert report["num_samples"] == 8
    with pytest.raises(ValueError, match="pass gender"):
        evaluator.update_smpl(pred=pred, target=target)


def test_gendered_and_neutral_ground_truth_differ(body_models):
    pred, target = smpl_batch(5), smpl_batch(6)
    gendered = metrics.evaluator("standard", body_model=body_models)
    gendered.update_smpl(pred=pred, target=target, gender=["male"] * 6)
    neutral = metrics.evaluator("standard", body_model=body_models)
    neutral.update_smpl(pred=pred, target=target)
    assert gendered.compute()["MPJPE"] != pytest.approx(neutral.compute()["MPJPE"], abs=1e-3)


def test_3dpw_motionbert_protocol(body_models):
    evaluator = metrics.evaluator("3dpw-motionbert", body_model=body_models)
    pred, target = smpl_batch(7), smpl_batch(8)
    evaluator.update_smpl(pred=pred, target=target, gender=["m"] * 6)  # gender ignored: neutral GT
    report = evaluator.compute()
    regressor = load_joint_regressor("J_regressor_h36m_correct.npy", body_models)
    model = SMPL(body_models, gender="neutral", dtype=torch.float64)
    pv, tv = model(**pred).vertices.detach().numpy(), model(**target).vertices.detach().numpy()
    pj, tj = np.einsum("jv,bvc->bjc", regressor, pv), np.einsum("jv,bvc->bjc", regressor, tv)
    pj, tj = pj - pj[:, :1], tj - tj[:, :1]
    j14 = list(metrics.H36M_EVAL_14)
    mpve = np.linalg.norm((pv - np.einsum("jv,bvc->bjc", regressor, pv)[:, :1]) -
                          (tv - np.einsum("jv,bvc->bjc", regressor, tv)[:, :1]), axis=-1).mean() * 1000
    assert report["mpve"] == pytest.approx(mpve, abs=1e-6)
    assert report["mpjpe"] == pytest.approx(np.linalg.norm(pj[:, j14] - tj[:, j14], axis=-1).mean() * 1000, abs=1e-6)
    assert report["pa_mpjpe"] == pytest.approx(oracle.pa_errors(pj[:, j14], tj[:, j14]).mean() * 1000, abs=1e-6)
    assert report["mpjpe_17j"] == pytest.approx(np.linalg.norm(pj - tj, axis=-1).mean() * 1000, abs=1e-6)
    assert report["pa_mpjpe_17j"] == pytest.approx(oracle.pa_errors(pj, tj).mean() * 1000, abs=1e-6)


def test_standard_protocol_with_masks_sequences_and_units():
    g = torch.Generator().manual_seed(9)
    regressor = torch.rand(17, 50, generator=g, dtype=torch.float64)
    regressor /= regressor.sum(1, keepdim=True)
    pred = torch.randn(12, 50, 3, generator=g, dtype=torch.float64)
    target = pred + 0.05 * torch.randn(12, 50, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(12, 14, dtype=torch.bool)
    mask[0, :5] = False
    evaluator = metrics.evaluator("standard", joint_regressor=regressor)
    evaluator.update(pred_vertices=pred[:6], target_vertices=target[:6], mask=mask[:6], sequence=[0] * 6)
    evaluator.update(pred_vertices=pred[6:], target_vertices=target[6:], mask=mask[6:], sequence=[0, 0, 1, 1, 1, 1])
    report = evaluator.compute()
    pj, tj = regressor @ pred, regressor @ target
    errors = metrics.mpjpe(pj, tj, root=0, joints=metrics.H36M_TO_J14, per_joint=True) * 1000
    assert report["MPJPE"] == pytest.approx(float(torch.nanmean(metrics.masked_mean(errors, mask))), abs=1e-9)
    rel_p = (pj - pj[:, :1])[:, list(metrics.H36M_TO_J14)]
    rel_t = (tj - tj[:, :1])[:, list(metrics.H36M_TO_J14)]
    accel = np.concatenate([oracle.acceleration_errors(rel_p[:8].numpy(), rel_t[:8].numpy()),
                            oracle.acceleration_errors(rel_p[8:].numpy(), rel_t[8:].numpy())]) * 1000
    assert report["ACCEL"] == pytest.approx(accel.mean(), abs=1e-9)
    assert set(report) >= {"MPJPE", "PA-MPJPE", "PVE", "PA-PVE", "PCK", "AUC", "ACCEL", "num_samples"}
    in_mm = metrics.evaluator("standard", joint_regressor=regressor, input_unit="mm")
    in_mm.update(pred_vertices=pred * 1000, target_vertices=target * 1000, mask=mask)
    assert in_mm.compute()["MPJPE"] == pytest.approx(report["MPJPE"], abs=1e-6)


def test_scene_protocol_matches_sahmr_formulas():
    g = torch.Generator().manual_seed(10)
    regressor = torch.rand(17, 80, generator=g, dtype=torch.float64)
    regressor /= regressor.sum(1, keepdim=True)
    target = torch.rand(5, 80, 3, generator=g, dtype=torch.float64) * 1.2 - 0.6
    pred = target + 0.05 * torch.randn(5, 80, 3, generator=g, dtype=torch.float64) + 0.1
    sdf, lo, hi = floor_sdf()
    contact = torch.rand(80, generator=g) > 0.8
    evaluator = metrics.evaluator("rich-sahmr", joint_regressor=regressor.numpy())
    evaluator.update(pred, target, sdf=sdf, grid_min=lo, grid_max=hi, contact=contact)
    report = evaluator.compute()
    pj, tj = regressor @ pred, regressor @ target
    j14 = list(metrics.SAHMR_H36M_TO_J14)
    shift = (tj[:, :1] - pj[:, :1])
    assert report["GMPJPE"] == pytest.approx(float(torch.linalg.vector_norm(pj - tj, dim=-1)[:, j14].mean() * 1000))
    assert report["MPJPE"] == pytest.approx(float(torch.linalg.vector_norm(pj + shift - tj, dim=-1)[:, j14].mean() * 1000))
    assert report["GMPVE"] == pytest.approx(float(torch.linalg.vector_norm(pred - target, dim=-1).mean() * 1000))
    assert report["MPVE"] == pytest.approx(float(torch.linalg.vector_norm(pred + shift - target, dim=-1).mean() * 1000))
    values = pred[..., 1] - 0.1
    penetration = (-values).clamp_min(0)
    assert report["PenE"] == pytest.approx(float(penetration.sum(-1).mean()))
    confe = torch.where(contact, values.abs(), penetration).sum(-1).mean()
    assert report["ConFE"] == pytest.approx(float(confe))
    prox = metrics.evaluator("prox-sahmr", joint_regressor=regressor.numpy())
    prox.update(pred, target, sdf=sdf, grid_min=lo, grid_max=hi)
    assert prox.compute()["ConFE"] == pytest.approx(prox.compute()["PenE"])


def egohmr_oracle(pred, target, visible, pred_v, target_v, vertex_visible):
    """EgoHMR's test_egohmr.py formulas, frame by frame in numpy (written for this test)."""
    B, S, J, _ = pred.shape
    g_sum = m_sum = pa_sum = 0.0
    sums = {k: 0.0 for k in ("g-vis", "g-invis", "m-vis", "m-invis", "pa-vis", "pa-invis", "v-vis", "v-invis")}
    v2v = 0.0
    best_invis = 0.0
    apd, std = [], []
    for b in range(B):
        vis = visible[b]
        invis_errors = []
        for s in range(S):
            g = np.linalg.norm(pred[b, s] - target[b], axis=-1)
            pr, gt = pred[b, s] - pred[b, s, 0], target[b] - target[b, 0]
            m = np.linalg.norm(pr - gt, axis=-1)
            # alignment fitted on zeroed invisible joints, applied to all joints
            _, scale, R, t = oracle.similarity_transform(pr * vis[:, None], gt * vis[:, None])
            pa = np.linalg.norm(scale * pr @ R.T + t - gt, axis=-1)
            g_sum += g.mean(); m_sum += m.mean(); pa_sum += pa.mean()
            for name, e in (("g", g), ("m", m), ("pa", pa)):
                sums[name + "-vis"] += (e * vis).sum()
                sums[name + "-invis"] += (e * ~vis).sum()
            vv = vertex_visible[b]
            dv = np.linalg.norm((pred_v[b, s] - pred[b, s, 0]) - (target_v[b] - target[b, 0]), axis=-1)
            v2v += dv.mean()
            sums["v-vis"] += (dv * vv).sum()
            sums["v-invis"] += (dv * ~vv).sum()
            invis_errors.append((m * ~vis).sum())
        best_invis += min(invis_errors)
        rel = pred[b] - pred[b, :, :1]
        pairwise = np.linalg.norm(rel[None] - rel[:, None], axis=-1)
        apd.append(pairwise.sum() / J / S / (S - 1) / 2)
        std.append(rel.std(axis=0, ddof=1).mean())
    n = B * S
    vis_count, invis_count = visible.sum(), (~visible).sum()
    v_vis, v_invis = vertex_visible.sum(), (~vertex_visible).sum()
    return {
        "G-MPJPE": g_sum / n * 1000, "MPJPE": m_sum / n * 1000, "PA-MPJPE": pa_sum / n * 1000,
        "G-MPJPE-vis": sums["g-vis"] / vis_count / S * 1000, "G-MPJPE-invis": sums["g-invis"] / invis_count / S * 1000,
        "MPJPE-vis": sums["m-vis"] / vis_count / S * 1000, "MPJPE-invis": sums["m-invis"] / invis_count / S * 1000,
        "PA-MPJPE-vis": sums["pa-vis"] / vis_count / S * 1000, "PA-MPJPE-invis": sums["pa-invis"] / invis_count / S * 1000,
        "V2V": v2v / n * 1000, "V2V-vis": sums["v-vis"] / v_vis / S * 1000, "V2V-invis": sums["v-invis"] / v_invis / S * 1000,
        "MPJPE-invis-best-of-samples": best_invis / invis_count * 1000,
        "apd-joints": np.mean(apd) * 1000, "std-joints": np.mean(std) * 1000,
    }


def test_egobody_protocol_matches_egohmr_formulas():
    arrays = synthetic_smpl_arrays()
    template = torch.tensor(arrays["v_template"])
    faces = torch.tensor(arrays["f"].astype(np.int64))
    g = torch.Generator().manual_seed(11)
    B, S = 3, 4
    target = torch.randn(B, 24, 3, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([0, 0, 3.0], dtype=torch.float64)
    pred = target[:, None] + 0.05 * torch.randn(B, S, 24, 3, generator=g, dtype=torch.float64)
    target_v = template[None].expand(B, -1, -1) + target[:, :1]
    pred_v = template[None, None] + pred[:, :, :1] + 0.01 * torch.randn(B, S, 6890, 3, generator=g, dtype=torch.float64)
    visible = metrics.image_visibility(target, 1000.0, torch.tensor([[960.0, 540.0]] * B, dtype=torch.float64))
    visible[:, :5] = False  # some truncated joints
    vertex_visible = metrics.image_visibility(target_v, 1000.0, torch.tensor([[960.0, 540.0]] * B, dtype=torch.float64))
    vertex_visible[:, :1000] = False
    scene = torch.rand(B, 2000, 3, generator=g, dtype=torch.float64) * 2 - 1 + target[:, :1]
    evaluator = metrics.evaluator("egobody-egohmr")
    evaluator.update(pred, target, visible, pred_v, target_v, vertex_visible, scene_points=scene, faces=faces)
    report = evaluator.compute()
    expected = egohmr_oracle(pred.numpy(), target.numpy(), visible.numpy(), pred_v.numpy(), target_v.numpy(),
                             vertex_visible.numpy())
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
    # scene plausibility: collision over all scene points, contact on squared distances
    flat_v, flat_scene = pred_v.reshape(B * S, 6890, 3), scene[:, None].expand(B, S, 2000, 3).reshape(B * S, 2000, 3)
    inside = torch.stack([reference.winding_number(flat_scene[i:i + 1], flat_v[i:i + 1], faces)[0]
                          for i in range(0, B * S, 5)]).round() >= 1
    collision = metrics.collision_ratio(flat_v, faces, flat_scene)
    assert collision[::5].tolist() == pytest.approx(inside.double().mean(-1).tolist())
    assert report["collision-ratio"] == pytest.approx(float(collision.mean()))
    squared = torch.stack([torch.cdist(flat_v[i], flat_scene[i]).min() ** 2 for i in range(B * S)])
    assert report["contact-ratio"] == pytest.approx(float((squared < 0.02).double().mean()))


def test_image_visibility():
    points = torch.tensor([[[0.0, 0.0, 2.0], [5.0, 0.0, 2.0], [-0.97, -0.54, 1.0], [0.96, 0.0, 1.0]]], dtype=torch.float64)
    visible = metrics.image_visibility(points, 1000.0, torch.tensor([[960.0, 540.0]], dtype=torch.float64))
    assert visible.tolist() == [[True, False, False, False]]  # x = 1920 is outside: [0, 1920)


def test_evaluator_errors(body_models):
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        metrics.evaluator("3dpw-spin")
    evaluator = metrics.evaluator("standard", body_model=body_models)
    with pytest.raises(ValueError, match="no samples"):
        evaluator.compute()
    with pytest.raises(ValueError, match="give pred_joints or pred_vertices"):
        evaluator.update(target_joints=torch.zeros(2, 17, 3))
    bad = torch.zeros(2, 6890, 3)
    bad[1, 5, 0] = float("nan")
    with pytest.raises(ValueError, match=r"contains NaN \(samples \[1\]"):
        evaluator.update(pred_vertices=bad, target_vertices=torch.zeros(2, 6890, 3))
    with pytest.raises(ValueError, match="expects 6890 vertices"):
        evaluator.update(pred_vertices=torch.zeros(2, 100, 3), target_vertices=torch.zeros(2, 100, 3))
    with pytest.raises(ValueError, match="at least one sample"):
        evaluator.update(pred_joints=torch.zeros(0, 17, 3), target_joints=torch.zeros(0, 17, 3))
    with pytest.raises(ValueError, match="input_unit"):
        metrics.evaluator("standard", input_unit="cm")
    with pytest.raises(ValueError, match="gender must be one of"):
        evaluator.update_smpl(pred=smpl_batch(1, 1), target=smpl_batch(2, 1), gender=["x"])
    evaluator.update(pred_vertices=torch.zeros(2, 6890, 3), target_vertices=torch.zeros(2, 6890, 3))
    assert len(evaluator) == 2
    evaluator.reset()
    assert len(evaluator) == 0


def test_docs_table_lists_every_protocol():
    text = (REPOSITORY / "docs" / "metrics.md").read_text()
    lines = text.splitlines()
    headers = [line for line, below in zip(lines, lines[1:])
               if line.startswith("|") and set(below) <= set("|-: ") and "`standard`" in line]
    assert len(headers) == 1, "docs/metrics.md compares the protocols in one table"
    header = headers[0]
    for name in metrics.list_protocols():
        assert f"`{name}`" in header, name
    for protocol in metrics.PROTOCOLS.values():
        repository = re.match(r"([\w.-]+/[\w.-]+)", protocol.upstream)
        if repository:
            assert repository.group(1) in text, protocol.name
    assert set(protocol_module.PROTOCOLS) == set(metrics.list_protocols())
