"""`meshrec predict --method motionbert` on a frame with a keypoint sequence in the annotations JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from meshrec.cli import main


@pytest.mark.slow
def test_predict_command_on_annotated_sequence(plugin_manager, motionbert_checkpoint, motionbert_body_models,
                                               tmp_path, capsys):
    from meshrec_motionbert import plugin

    plugin_manager.register(plugin, name="motionbert")
    images = tmp_path / "video"
    images.mkdir()
    Image.new("RGB", (640, 480)).save(images / "frame_000.jpg")
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(200, 400, (4, 1, 17, 2)), rng.uniform(0.5, 1, (4, 1, 17, 1))], axis=-1)
    annotations = tmp_path / "keypoints.json"
    annotations.write_text(json.dumps({"frame_000.jpg": {"keypoint_sequence": kp.tolist()}}))
    out = tmp_path / "out"
    code = main(["predict", str(images), "--method", "motionbert", "--checkpoint", str(motionbert_checkpoint),
                 "--annotations", str(annotations), "--body-models", str(motionbert_body_models), "--out", str(out),
                 "--device", "cpu", "--option", "clip_len=16", "--option", "normalization=image"])
    assert code == 0, capsys.readouterr().err
    with np.load(out / "frame_000.npz") as saved:
        assert saved["vertices"].shape == (4, 6890, 3) and str(saved["method"]) == "motionbert"
        assert int(saved["extras/frames"]) == 4
        assert bool(saved["extras/translation_estimated"])  # default intrinsics of the 640 x 480 frame
        assert np.all(saved["transl"][:, 2] != 0)
    # image normalisation took the size from the frame; a bad option value is refused with its name
    code = main(["predict", str(images), "--method", "motionbert", "--checkpoint", str(motionbert_checkpoint),
                 "--annotations", str(annotations), "--body-models", str(motionbert_body_models), "--out", str(out),
                 "--device", "cpu", "--option", "clip_len=300"])
    assert code != 0 and "clip_len" in capsys.readouterr().err
