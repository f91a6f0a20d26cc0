"""Defects a new user met in their first hour, each pinned by a test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import meshrec
from meshrec.body import SMPL, JointRegressor

REPOSITORY = Path(__file__).resolve().parents[1]


def test_joint_regressor_from_an_existing_file_path(body_models_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "my_regressor.npy"
    moved.parent.mkdir()
    moved.write_bytes((body_models_dir / "J_regressor_h36m.npy").read_bytes())
    regressor = JointRegressor.from_file(moved)
    assert regressor.num_joints == 17
    np.testing.assert_allclose(regressor.to_dense().double().numpy(), np.load(moved), rtol=1e-6, atol=1e-7)
    with pytest.raises(meshrec.BodyModelNotFoundError):
        JointRegressor.from_file(tmp_path / "elsewhere" / "missing.npy")


def test_a_file_of_another_gender_is_not_taken_silently(body_models_dir):
    with pytest.warns(UserWarning, match="SMPL_MALE.pkl is the male model, but gender='neutral'"):
        model = SMPL(body_models_dir / "SMPL_MALE.pkl", gender="neutral")
    assert model.gender == "male"
    male = SMPL(body_models_dir, gender="male")
    torch.testing.assert_close(model.v_template, male.v_template)


def test_gitignore_covers_the_quick_start_outputs():
    ignored = (REPOSITORY / ".gitignore").read_text().split()
    assert "/.venv/" in ignored and "/meshrec-demo/" in ignored


def test_body_models_help_names_the_whole_search_order(capsys):
    from meshrec.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "$MESHREC_BODY_MODELS" in text and "~/.cache/meshrec/body_models" in text
