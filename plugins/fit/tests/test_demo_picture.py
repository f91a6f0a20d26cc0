"""The demo's picture (two panels: without / with the scene terms) and how the demo names its body model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("meshrec_fit")

from meshrec.body.mannequin import mannequin_smpl  # noqa: E402
from meshrec.testing import synthetic_smpl_arrays, write_synthetic_smpl  # noqa: E402
from meshrec_fit import demo  # noqa: E402
from meshrec_fit.demo_scene import FloorAndBoxes, look_at  # noqa: E402


def _count(picture: np.ndarray, color) -> int:
    return int((picture == np.asarray(color, dtype=np.uint8)).all(axis=-1).sum())


@pytest.mark.slow
def test_picture_shows_both_fits_and_highlights_penetration_only_where_there_is_some(tmp_path):
    body = mannequin_smpl(create_transl=False)
    pose, orient, transl, box, pelvis = demo._ground_truth(body)
    eye = pelvis + torch.tensor([1.5, 1.1, 2.7])
    scene = FloorAndBoxes(*look_at(eye.double(), pelvis.double()), [box])
    world = body(body_pose=pose, global_orient=orient, transl=transl).vertices[0].detach().double()

    def fit(drop):  # the ground truth moved down by ``drop`` metres: a fit sunk into the box and floor
        moved = world - torch.tensor([0.0, drop, 0.0], dtype=torch.float64)
        return {"vertices": scene.to_camera(moved).numpy(), "inside": (scene.signed_distance(moved) < 0).numpy()}

    fits = {"without_scene": fit(0.08), "with_scene": fit(-0.01)}
    assert fits["without_scene"]["inside"].sum() > 300 and fits["with_scene"]["inside"].sum() == 0
    results = {name: {"mpjpe_mm": 70.0, "pa_mpjpe_mm": 30.0, "penetration_sum_mm": 1000.0 * (name == "without_scene"),
                      "penetrating_vertices": int(fits[name]["inside"].sum())} for name in fits}
    seconds = demo._picture(tmp_path / "demo.png", scene, scene.to_camera(world).numpy(), fits,
                            np.asarray(body.faces), results)
    assert len(seconds) == 2
    picture = np.asarray(Image.open(tmp_path / "demo.png").convert("RGB"))
    assert picture.shape == (demo.PANEL_SIZE[1], 2 * demo.PANEL_SIZE[0], 3)
    without, with_scene = picture[:, : demo.PANEL_SIZE[0]], picture[:, demo.PANEL_SIZE[0]:]
    red, green = demo.COLORS["inside the scene"], demo.COLORS["ground truth"]
    body_rows = slice(demo.TITLE_HEIGHT, demo.PANEL_SIZE[1] - demo.LEGEND_HEIGHT)  # no title text, no legend
    assert _count(without[body_rows], red) > 1000  # the penetrating vertices' dots
    assert _count(with_scene[body_rows], red) == 0
    for panel in (without, with_scene):
        assert _count(panel[body_rows], green) > 1000  # the ground truth's outline
        bluish = (panel[..., 2].astype(int) - panel[..., 0] > 60).sum()  # the fit, shaded blue
        assert bluish > 20_000
        assert len(np.unique(panel[body_rows].reshape(-1, 3), axis=0)) > 200  # shaded, not flat fills


@pytest.mark.slow
def test_demo_says_which_file_it_loaded_and_whether_it_is_the_mannequin(tmp_path):
    pickled = write_synthetic_smpl(tmp_path / "pkl")
    model, said = demo._body_model(tmp_path / "pkl")
    assert str(pickled) in said and "mannequin" in said and "not a licensed SMPL model" in said
    plain = write_synthetic_smpl(tmp_path / "npz", file_format="npz")  # no generator marker in an npz
    model, said = demo._body_model(tmp_path / "npz")
    assert str(plain) in said and "mannequin" in said
    # Different triangles: not the mannequin, so it is called an SMPL model, by its path.
    arrays = {key: (value.toarray() if hasattr(value, "toarray") else value)
              for key, value in synthetic_smpl_arrays().items() if not isinstance(value, (dict, str))}
    arrays["f"] = arrays["f"][:, [0, 2, 1]]
    other = tmp_path / "other" / "SMPL_NEUTRAL.npz"
    other.parent.mkdir()
    np.savez(other, **arrays)
    model, said = demo._body_model(tmp_path / "other")
    assert said == f"SMPL model {other}" and "mannequin" not in said


def test_demo_without_files_uses_the_mannequin_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    model, said = demo._body_model(tmp_path / "nothing-here")
    assert said.startswith("meshrec's synthetic mannequin") and "no SMPL files found" in said
    assert model.v_template.shape == (6890, 3)
