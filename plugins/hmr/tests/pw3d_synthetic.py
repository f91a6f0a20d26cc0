"""A small synthetic 3DPW test set in mmhuman3d's HumanData layout, images written on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_synthetic_pw3d(root: Path, frames: int = 6, seed: int = 0) -> Path:
    """Writes ``root/imageFiles/<sequence>/image_XXXXX.jpg`` and ``root/pw3d_test.npz`` with the
    keys, shapes and object-array dicts of mmhuman3d's ``pw3d_test.npz``. Returns ``root``."""
    rng = np.random.default_rng(seed)
    image_paths, boxes, cam_params = [], [], []
    for index in range(frames):
        sequence = f"downtown_synthetic_{index % 2:02d}"
        relative = f"imageFiles/{sequence}/image_{index:05d}.jpg"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (270, 480, 3), dtype=np.uint8)).save(root / relative)
        image_paths.append(relative)
        x, y = rng.uniform(40, 200), rng.uniform(10, 60)
        boxes.append([x, y, rng.uniform(80, 150), rng.uniform(150, 200), 1.0])
        cam_params.append({"H": 270, "W": 480, "in_mat": [[960.0, 0, 240], [0, 960.0, 135], [0, 0, 1]]})
    smpl = {
        "global_orient": np.concatenate([np.full((frames, 1), np.pi), rng.normal(0, 0.2, (frames, 2))], 1),
        "body_pose": rng.normal(0, 0.25, (frames, 23, 3)),
        "betas": rng.normal(0, 1, (frames, 10)),
    }
    meta = {"gender": np.array(["m" if i % 3 else "f" for i in range(frames)])}
    np.savez_compressed(root / "pw3d_test.npz", __key_strict__=False, __temporal_len__=frames,
                        __keypoints_compressed__=False, image_path=image_paths, bbox_xywh=np.array(boxes),
                        smpl=smpl, meta=meta, cam_param=cam_params, config="3dpw")
    return root
