"""3DPW test set as MotionBERT reports it (``meshrec eval --dataset pw3d-motionbert``).

Data: MotionBERT's preprocessed ``data/mesh/mesh_det_pw3d.pkl`` (docs/mesh.md), a pickle of
``{"train": {...}, "test": {...}}`` with per-frame arrays in sequence order, read here through
meshrec's restricted unpickler (numpy arrays and plain containers only; nothing in the file can
run code). Keys of a split:

===============  ===================  ==============================================
key              shape                meaning
===============  ===================  ==============================================
``joint_2d``     (N, 17, 2)           detected H36M-17 keypoints, pixels
``confidence``   (N, 17, 1)           detector confidence
``joint_cam``    (N, 17, 3)           unused (upstream does not read it)
``smpl_pose``    (N, 72)              ground-truth axis-angle, camera frame
``smpl_shape``   (N, 10)              ground-truth betas (neutral model)
``img_hw``       N tuples             image size (upstream normalises by 1920 x 1920)
``image_id``     N 1-element arrays   unused
``source``       N str                sequence + person id, e.g. courtyard_arguing_000
===============  ===================  ==============================================

Protocol (upstream ``train_mesh.py`` validate, ``lib/data/dataset_mesh.py``,
``lib/utils/utils_mesh.py`` evaluate_mesh; meshrec protocol ``3dpw-motionbert``):

- inputs: ``x / 1920 * 2 - 1`` and ``y / 1920 * 2 - 1``, confidence clipped to [0, 1];
- clips: non-overlapping 16-frame windows of each ``source``; the tail (< 16 frames) of each
  sequence is dropped; a sequence shorter than 16 frames is resampled to 16 frames (upstream
  resamples at random, seeded; here evenly, ``np.linspace``);
- flip test-time augmentation as upstream does it (``flip=True``): the mirrored clip's
  axis-angle is mirrored back, then theta (axis-angle), vertices and joints of both passes are
  averaged arithmetically;
- ground truth through the neutral SMPL model; joints from ``J_regressor_h36m_correct.npy``;
  pelvis = H36M joint 0; MPJPE / PA-MPJPE over the 14 joints {1..6, 8, 10..16} (and over all 17),
  MPVE over all vertices after subtracting each mesh's own pelvis; millimetres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import meshrec
from meshrec import distributed
from meshrec.io.safe_pickle import restricted_load
from meshrec.metrics import evaluator as make_evaluator
from meshrec.rotations import rodrigues
from meshrec_motionbert.keypoints import SMPL_FLIP_PAIRS, flip_keypoints

__all__ = ["PW3DMesh", "evaluate_pw3d_motionbert", "find_mesh_pickle", "read_mesh_pickle", "split_clips"]

PROTOCOL = "3dpw-motionbert"
FILE_NAME = "mesh_det_pw3d.pkl"
RESOLUTION = 1920.0  # upstream: DataReaderMesh(res=[1920, 1920]) for 3DPW
CLIP_LEN = 16


class PW3DMesh:
    """One split of ``mesh_det_pw3d.pkl``: keypoints (N, 17, 3) pixels + confidence,
    ``pose`` (N, 72), ``shape`` (N, 10), ``source`` (N,) sequence ids."""

    def __init__(self, keypoints: np.ndarray, pose: np.ndarray, shape: np.ndarray, source: list[str]):
        self.keypoints, self.pose, self.shape, self.source = keypoints, pose, shape, source

    def __len__(self) -> int:
        return len(self.source)


def find_mesh_pickle(data_root: Path, annotations: str | Path | None = None) -> Path:
    """``annotations`` if given, else ``mesh_det_pw3d.pkl`` in ``data_root`` or in
    ``data_root/data/mesh`` (MotionBERT's layout)."""
    if annotations is not None:
        path = Path(annotations).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"MotionBERT 3DPW pickle {path} does not exist")
        return path
    candidates = [data_root / FILE_NAME, data_root / "data" / "mesh" / FILE_NAME, data_root / "mesh" / FILE_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = "\n".join(f"  - {c}" for c in candidates)
    raise FileNotFoundError(f"{FILE_NAME} not found. Searched:\n{searched}\nDownload MotionBERT's data/mesh folder "
                            "(Walter0807/MotionBERT docs/mesh.md) or pass annotations=PATH.")


def read_mesh_pickle(path: str | Path, split: str = "test") -> PW3DMesh:
    """Reads one split of MotionBERT's mesh pickle with the restricted unpickler.

    Raises:
        ValueError: naming the missing split or keys, or arrays of inconsistent lengths.
        meshrec.UnsafePickleError: the file asks for anything beyond arrays and containers.
    """
    path = Path(path)
    with open(path, "rb") as stream:
        content = restricted_load(stream)
    if not isinstance(content, dict) or split not in content:
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"{path}: expected MotionBERT's mesh pickle {{'train': ..., 'test': ...}}, found {found}")
    data = content[split]
    missing = [k for k in ("joint_2d", "confidence", "smpl_pose", "smpl_shape", "source") if k not in data]
    if missing:
        raise ValueError(f"{path}: split {split!r} lacks {missing} (found {sorted(data)})")
    joints = np.asarray(data["joint_2d"], dtype=np.float64)[..., :2]
    count = len(joints)
    confidence = np.asarray(data["confidence"], dtype=np.float64).reshape(count, -1, 1)
    if joints.shape[1:] != (17, 2) or confidence.shape[1] != 17:
        raise ValueError(f"{path}: joint_2d must be (N, 17, 2) and confidence (N, 17, 1); got {joints.shape} and "
                         f"{confidence.shape}")
    pose = np.asarray(data["smpl_pose"], dtype=np.float64).reshape(count, 72)
    shape = np.asarray(data["smpl_shape"], dtype=np.float64).reshape(count, 10)
    source = [str(s) for s in data["source"]]
    if len(source) != count:
        raise ValueError(f"{path}: {len(source)} source ids for {count} frames")
    return PW3DMesh(np.concatenate([joints, confidence], axis=-1), pose, shape, source)


def split_clips(source: list[str], clip_len: int = CLIP_LEN, stride: int = CLIP_LEN) -> list[np.ndarray]:
    """Frame indices of the evaluated clips, as upstream's ``split_clips`` cuts them: windows of
    ``clip_len`` every ``stride`` frames within each sequence, the tail dropped; a sequence with
    no full window is resampled to ``clip_len`` frames (evenly here, at random upstream)."""
    clips = []
    start = 0
    for end in range(1, len(source) + 1):
        if end < len(source) and source[end] == source[start]:
            continue
        length = end - start
        if length >= clip_len:
            clips += [np.arange(s, s + clip_len) for s in range(start, end - clip_len + 1, stride)]
        else:
            clips.append(start + np.linspace(0, length, num=clip_len, endpoint=False).astype(np.int64))
        start = end
    return clips


def _flip_axis_angle(theta: torch.Tensor) -> torch.Tensor:
    """Upstream's ``flip_thetas_batch``: (..., 72) axis-angle, y and z negated, pairs swapped."""
    pose = theta.reshape(*theta.shape[:-1], 24, 3).clone()
    pose[..., 1:] = -pose[..., 1:]
    order = list(range(24))
    for a, b in SMPL_FLIP_PAIRS:
        order[a], order[b] = b, a
    return pose[..., order, :].reshape(theta.shape)


def upstream_outputs(network: torch.nn.Module, x: torch.Tensor, flip: bool) -> dict[str, torch.Tensor]:
    """``theta`` (N, T, 82), ``verts`` (N, T, 6890, 3) mm of a batch of clips, with upstream's
    flip averaging (axis-angle, vertices and joints averaged arithmetically)."""
    output = network(x)[0]
    if not flip:
        return output
    mirrored = network(flip_keypoints(x))[0]
    n, t = x.shape[:2]
    pose = _flip_axis_angle(mirrored["theta"][..., :72])
    betas = mirrored["theta"][..., 72:]
    rotmat = rodrigues(pose.reshape(-1, 24, 3))
    verts, joints = network.body(rotmat, betas.reshape(-1, 10))
    back = {"theta": torch.cat([pose, betas], dim=-1), "verts": verts.reshape(n, t, -1, 3),
            "kp_3d": joints.reshape(n, t, -1, 3)}
    return {key: (output[key] + back[key]) * 0.5 for key in output}


def evaluate_pw3d_motionbert(method: meshrec.Method, data_root: Path, body_model: Path | None, batch_size: int,
                             progress: bool, annotations: str | Path | None = None, limit: int | None = None,
                             flip: bool = True, shard: tuple[int, int] | None = None,
                             **options: Any) -> dict[str, Any]:
    """Runs ``method`` (a loaded ``motionbert``) on MotionBERT's 3DPW test clips.

    Args:
        method: the loaded method; its network runs on the dataset's own normalisation.
        data_root: folder holding ``mesh_det_pw3d.pkl`` (or MotionBERT's repository root).
        body_model: folder of SMPL_NEUTRAL.pkl and J_regressor_h36m_correct.npy (ground truth).
        batch_size: clips per batch.
        progress: show a progress bar.
        annotations: the pickle, if not in the usual places.
        limit: evaluate only the first ``limit`` clips (a quick check; not the protocol).
        flip: upstream's flip averaging (True in its config).
        shard: ``(rank, world_size)`` in a torchrun job (given by :func:`meshrec.evaluate`):
            this rank runs clips rank, rank + W, ...; the ranks' per-frame errors are merged in
            clip-then-frame order (:func:`meshrec.distributed.merge_evaluator`), so every rank
            returns the single-process numbers.

    Returns:
        ``mpve``, ``mpjpe``, ``pa_mpjpe``, ``mpjpe_17j``, ``pa_mpjpe_17j`` in mm, with counts.
    """
    if options:
        raise TypeError(f"the pw3d-motionbert evaluation takes annotations, limit and flip; got {sorted(options)}")
    network = method.model
    if not hasattr(network, "body"):
        raise TypeError(f"pw3d-motionbert evaluates the motionbert method, got {method.name!r}")
    path = find_mesh_pickle(Path(data_root), annotations)
    data = read_mesh_pickle(path)
    clips = split_clips(data.source)
    if limit is not None:
        clips = clips[:int(limit)]
    location = body_model if body_model is not None else (
        method.body_model.model_file.parent if getattr(method.body_model, "model_file", None) else None)
    evaluator = make_evaluator(PROTOCOL, body_model=location)
    inputs = data.keypoints.copy()
    inputs[..., :2] = inputs[..., :2] / RESOLUTION * 2 - 1
    inputs[..., 2] = np.clip(inputs[..., 2], 0, 1)
    dtype = next(network.parameters()).dtype
    rank, world_size = shard if shard is not None else (0, 1)
    mine = distributed.shard_indices(len(clips), rank, world_size)
    rows: list[int] = []  # global index of each evaluator row: clip c's frame t is row c * 16 + t
    # padded_batches / GlobalProgress: every rank runs as many batches (a collective per batch)
    with distributed.GlobalProgress(len(clips), enabled=progress, unit="clip", desc="3DPW (MotionBERT)") as bar:
        for batch in distributed.padded_batches(mine, batch_size):
            if batch:
                index = np.stack([clips[c] for c in batch])  # (B, 16)
                x = torch.as_tensor(inputs[index], dtype=dtype, device=method.device)
                with torch.inference_mode():
                    output = upstream_outputs(network, x, flip)
                target = {"global_orient": torch.as_tensor(data.pose[index.reshape(-1), :3]),
                          "body_pose": torch.as_tensor(data.pose[index.reshape(-1), 3:]),
                          "betas": torch.as_tensor(data.shape[index.reshape(-1)])}
                target_vertices, _ = evaluator.body_models.forward("neutral", **target)
                evaluator.update(pred_vertices=output["verts"].reshape(-1, 6890, 3).double().cpu() / 1000.0,
                                 target_vertices=target_vertices.cpu())
                rows += [c * CLIP_LEN + t for c in batch for t in range(CLIP_LEN)]
            bar.update(len(batch))
    if shard is not None:
        evaluator = distributed.merge_evaluator(evaluator, rows)
    metrics = evaluator.compute()
    return {**metrics, "num_clips": len(clips), "protocol": PROTOCOL, "annotations": str(path), "flip": flip,
            "complete": limit is None}
