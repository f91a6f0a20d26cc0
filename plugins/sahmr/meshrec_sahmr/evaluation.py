"""SA-HMR's RICH and PROX evaluations (``tools/dump_results.py`` + ``tools/eval_results.py``).

Readers for the released ``sahmr_support`` folders (Google Drive folder linked from
zju3dv/SA-HMR's README) and the two protocols of :mod:`meshrec.metrics` (``rich-sahmr``,
``prox-sahmr``): G-MPJPE, G-MPVE (world frame), MPJPE, MPVE (prediction translated by the pelvis
difference), in mm, and PenE, ConFE (SDF sampled at the predicted vertices, summed over the 6890
vertices, metres), each per frame and averaged over frames.

Ground truth is SMPL-X (10475 vertices). As upstream, it is mapped to SMPL(-H) topology with the
deformation-transfer matrix ``smplx2smplh_deftrafo_setup.pkl`` (vchoutas/smplx ``transfer_model``
data; its dense (6890, 10475) part): meshrec does not fit SMPL to it, so the comparison is
vertex-for-vertex the one upstream makes. Joints of both: ``J_regressor_h36m_correct`` (17 x 6890).

The network runs at batch 1 with upstream's inputs: RICH's pre-cut 224 crops with
``test_squared_bbx_lurb``; PROX's full frames flipped horizontally (mirrored Kinect) and cut with
the 1.15 square around ``img2gtbbx``. No scene point near the root falls back to the whole frustum,
as upstream.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import meshrec
from meshrec import distributed
from meshrec_sahmr.method import crop_square
from meshrec_sahmr.scene import points_in_frustum, square_box
from meshrec_sahmr.support import SupportFileError, find_support_file, load_pickle, read_object_npy

__all__ = ["RichFrame", "evaluate_prox", "evaluate_rich", "load_transfer", "read_prox", "read_rich", "run_network"]

TRANSFER = "smplx2smplh_deftrafo_setup.pkl"


def _support(root: str | Path, dataset: str) -> Path:
    root = Path(root).expanduser()
    for candidate in (root, root / "sahmr_support", root / "quantitative" / "sahmr_support"):
        if candidate.is_dir() and candidate.name == "sahmr_support":
            return candidate
    raise FileNotFoundError(f"{root}: no sahmr_support folder (SA-HMR's {dataset} evaluation data); pass the folder "
                            f"that contains it or the folder itself")


def load_transfer(path: str | Path | None, search: list[Path]) -> torch.Tensor:
    """(6890, 10475) dense SMPL-X -> SMPL-H vertex map (``mtx`` of smplx2smplh_deftrafo_setup.pkl)."""
    file = Path(path).expanduser() if path is not None else find_support_file(
        TRANSFER, [*search, *(p / "model_transfer" for p in search)])
    data = load_pickle(file)
    if not isinstance(data, dict) or "mtx" not in data:
        raise SupportFileError(f"{file}: expected a dict with 'mtx' (vchoutas/smplx transfer_model's {TRANSFER})")
    matrix = data["mtx"]
    dense = np.asarray(matrix.todense() if hasattr(matrix, "todense") else matrix, dtype=np.float32)[:, :10475]
    if dense.shape != (6890, 10475):
        raise SupportFileError(f"{file}: 'mtx' has shape {dense.shape}, expected (6890, >=10475)")
    return torch.from_numpy(dense)


def _apply(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ T[:3, :3].T + T[:3, 3]


def run_network(method: meshrec.Method, image: torch.Tensor, bbx_lurb: torch.Tensor, K: torch.Tensor,
                scene_camera: torch.Tensor) -> torch.Tensor:
    """(6890, 3) camera-frame mesh for one crop (3, 224, 224) in [0, 1] with SA-HMR's evaluation
    settings (upstream's empty-crop fallback; contact draw seeded by the method's contact_seed)."""
    model = method.model
    dtype, device = next(model.parameters()).dtype, method.device
    image, bbx_lurb, K = image.to(device, dtype)[None], bbx_lurb.to(device, dtype)[None], K.to(device, dtype)[None]
    frustum = points_in_frustum(scene_camera.to(device, dtype), bbx_lurb[0], K[0])
    if len(frustum) == 0:
        raise ValueError("no scene point in the frustum of the evaluation box")
    seed = method.options.get("contact_seed", 0)
    generator = None if seed < 0 else torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        rc = model.rcnet(image, bbx_lurb, K, [frustum])
        return model.mesh_from_root(image, rc, generator).pred_c_verts[0].float().cpu()


@dataclass
class RichFrame:
    img_key: str
    image: Path
    bbx_lurb: np.ndarray
    T_w2c: torch.Tensor
    K: torch.Tensor
    scan: str  # "<cap_name>/<scan_name>"
    gt_mesh: Path
    contact: Path


def _rich_cameras(scene_info: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    cameras = {}
    for file in sorted(scene_info.glob("*/calibration/*.xml")):
        tree = ET.parse(file)
        extrinsics = [float(s) for s in tree.find("./CameraMatrix/data").text.split()]
        intrinsics = [float(s) for s in tree.find("./Intrinsics/data").text.split()]
        T = torch.eye(4, dtype=torch.float64)
        T[:3] = torch.tensor(extrinsics, dtype=torch.float64).reshape(3, 4)
        cameras[f"{file.parts[-3]}_{int(file.stem)}"] = (T, torch.tensor(intrinsics, dtype=torch.float64).reshape(3, 3))
    return cameras


def read_rich(root: str | Path) -> tuple[Path, list[RichFrame]]:
    """The RICH test split of ``sahmr_support`` (``test_split/meta/test3116.npy``: 3116 frames over 5 scans)."""
    support = _support(root, "RICH")
    test = support / "test_split"
    metas = read_object_npy((test / "meta" / "test3116.npy").read_bytes(), str(test / "meta" / "test3116.npy"))
    cameras = _rich_cameras(support / "scene_info")
    frames = []
    for meta in np.asarray(metas, dtype=object).ravel():
        if meta["cam_key"] not in cameras:
            raise FileNotFoundError(f"{support / 'scene_info'}: no calibration for camera {meta['cam_key']}")
        T, K = cameras[meta["cam_key"]]
        contact = meta["contact_file"]
        frames.append(RichFrame(
            img_key=meta["img_key"], image=test / "image" / f"{meta['img_key']}.png",
            bbx_lurb=np.asarray(meta["test_squared_bbx_lurb"], dtype=np.float64), T_w2c=T, K=K,
            scan=f"{meta['cap_name']}/{meta['scan_name']}", gt_mesh=test / "gt_smplx_mesh" / f"{meta['img_key']}.ply",
            contact=test / "contact" / contact[contact.find("test_contact/") + len("test_contact/"):]))
    return support, frames


def _sdf(json_file: Path, npy_file: Path) -> tuple[torch.Tensor, list[float], list[float]]:
    info = json.loads(json_file.read_text())
    dim = int(info["dim"])
    grid = torch.from_numpy(np.load(npy_file, allow_pickle=False).reshape(dim, dim, dim)).double()
    return grid, [float(v) for v in info["min"]], [float(v) for v in info["max"]]


def _points(file: Path) -> torch.Tensor:
    data = read_object_npy(file.read_bytes(), str(file))
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
        data = data.item()
    return torch.as_tensor(np.asarray(data["points"] if isinstance(data, dict) else data), dtype=torch.float64)


def _image(path: Path) -> torch.Tensor:
    from meshrec.io.images import read_image

    return torch.from_numpy(np.ascontiguousarray(read_image(path))).permute(2, 0, 1).float() / 255.0


def _gt(path: Path, transfer: torch.Tensor) -> torch.Tensor:
    from meshrec.io.meshes import read_ply_points

    vertices = torch.from_numpy(read_ply_points(path)).float()
    if vertices.shape[0] != 10475:
        raise ValueError(f"{path}: expected an SMPL-X mesh (10475 vertices), got {vertices.shape[0]}")
    return (transfer @ vertices).double()


def _finish(evaluator, count: int, total: int, protocol: str) -> dict[str, Any]:
    return {**evaluator.compute(), "num_samples": count, "protocol": protocol, "complete": count == total}


def _frames(count: int, shard: tuple[int, int] | None, progress: bool, desc: str):
    """This rank's frame indices, one at a time (upstream runs batch 1), with one global
    progress bar; every rank yields as many times (empty steps padded, the bar's per-step
    collective matches up). ``shard``: (rank, world_size) or None for every frame."""
    rank, world_size = shard if shard is not None else (0, 1)
    with distributed.GlobalProgress(count, enabled=progress, unit="frame", desc=desc) as bar:
        for batch in distributed.padded_batches(distributed.shard_indices(count, rank, world_size), 1):
            yield from batch
            bar.update(len(batch))


def _merge(evaluator, count: int, shard: tuple[int, int] | None):
    """The ranks' per-frame values in frame order (:func:`meshrec.distributed.merge_evaluator`)."""
    if shard is None:
        return evaluator
    return distributed.merge_evaluator(evaluator, distributed.shard_indices(count, *shard))


def evaluate_rich(method: meshrec.Method, data_root: Path, body_model: Path | None = None, batch_size: int = 1,
                  progress: bool = False, transfer: str | Path | None = None, limit: int | None = None,
                  shard: tuple[int, int] | None = None, **options: Any) -> dict[str, Any]:
    """Runs ``method`` (sahmr) on SA-HMR's RICH test split and returns the rich-sahmr metrics.

    Args:
        data_root: RICH's folder holding ``sahmr_support`` (or that folder).
        body_model: searched (with data_root) for ``smplx2smplh_deftrafo_setup.pkl`` (also in
            ``model_transfer/``); ``transfer`` names the file directly.
        batch_size: ignored (upstream runs batch 1).
        limit: only the first ``limit`` frames (a quick check, not the protocol).
        shard: ``(rank, world_size)`` in a torchrun job (given by :func:`meshrec.evaluate`):
            this rank runs frames rank, rank + W, ...; the per-frame errors of all ranks are
            merged in frame order (:func:`meshrec.distributed.merge_evaluator`), so every rank
            returns the single-process numbers. The contact-point draw is seeded per frame
            (``contact_seed``), not per rank; with ``contact_seed=-1`` no two runs agree anyway.
    """
    if options:
        raise TypeError(f"the rich-sahmr evaluation takes transfer and limit, got {sorted(options)}")
    support, frames = read_rich(data_root)
    search = [p for p in (Path(data_root), support, Path(body_model) if body_model else None) if p is not None]
    matrix = load_transfer(transfer, search)
    evaluator = meshrec.metrics.evaluator("rich-sahmr", joint_regressor=method.regressor.double().cpu().numpy())
    scenes: dict[str, tuple] = {}
    count = len(frames) if limit is None else min(int(limit), len(frames))
    for index in _frames(count, shard, progress, "RICH"):
        frame = frames[index]
        if frame.scan not in scenes:
            base = support / "scene_info" / frame.scan
            scenes[frame.scan] = (_points(Path(f"{base}_world.npy")),
                                  _sdf(Path(f"{base}_mysdf.json"), Path(f"{base}_mysdf.npy")))
        world, (sdf, low, high) = scenes[frame.scan]
        pred = run_network(method, _image(frame.image), torch.from_numpy(frame.bbx_lurb), frame.K,
                           _apply(frame.T_w2c, world))
        pred_world = _apply(torch.linalg.inv(frame.T_w2c), pred.double())
        contact = torch.from_numpy(np.unpackbits(np.load(frame.contact, allow_pickle=False), count=6890).astype(bool))
        evaluator.update(pred_world[None], _gt(frame.gt_mesh, matrix)[None], sdf=sdf, grid_min=low, grid_max=high,
                         contact=contact)
    return _finish(_merge(evaluator, count, shard), count, len(frames), "rich-sahmr")


def read_prox(root: str | Path) -> tuple[Path, list[dict], dict, torch.Tensor, torch.Tensor]:
    """PROX quantitative from ``sahmr_support``: (folder, metas, img_key -> box, K (3, 3), T_c2w (4, 4))."""
    support = _support(root, "PROX")
    metas = load_pickle(support / "meta" / "mosh_mesh_test.pkl")
    boxes = load_pickle(support / "img2gtbbx" / "mosh_mesh.pkl")
    color = json.loads((support / "vicon" / "calibration" / "Color.json").read_text())
    K = torch.zeros(3, 3, dtype=torch.float64)  # as upstream: fx, fy, cx, cy only, K[2, 2] = 0
    K[0, 0], K[1, 1], K[0, 2], K[1, 2] = color["f"][0], color["f"][1], color["c"][0], color["c"][1]
    T_c2w = torch.tensor(json.loads((support / "vicon" / "calibration" / "cam2world_vicon.json").read_text()),
                         dtype=torch.float64)
    return support, list(metas), boxes, K, T_c2w


def evaluate_prox(method: meshrec.Method, data_root: Path, body_model: Path | None = None, batch_size: int = 1,
                  progress: bool = False, transfer: str | Path | None = None, limit: int | None = None,
                  shard: tuple[int, int] | None = None, **options: Any) -> dict[str, Any]:
    """Runs ``method`` on SA-HMR's PROX quantitative split and returns the prox-sahmr metrics
    (ConFE = PenE: PROX has no contact labels). Arguments (``shard`` too) as
    :func:`evaluate_rich`; ``data_root`` is PROX's ``quantitative`` folder (or its
    ``sahmr_support``)."""
    if options:
        raise TypeError(f"the prox-sahmr evaluation takes transfer and limit, got {sorted(options)}")
    support, metas, boxes, K, T_c2w = read_prox(data_root)
    search = [p for p in (Path(data_root), support, Path(body_model) if body_model else None) if p is not None]
    matrix = load_transfer(transfer, search)
    evaluator = meshrec.metrics.evaluator("prox-sahmr", joint_regressor=method.regressor.double().cpu().numpy())
    T_w2c = torch.linalg.inv(T_c2w)
    scene_camera = _apply(T_w2c, _points(support / "vicon" / "vicon_voxel_world.npy"))
    sdf, low, high = _sdf(support / "vicon" / "vicon.json", support / "vicon" / "vicon_sdf.npy")
    # K[2, 2] = 0 upstream: only fx, fy, cx, cy are used; the projection needs K[2, 2] = 1.
    K_net = K.clone()
    K_net[2, 2] = 1.0
    count = len(metas) if limit is None else min(int(limit), len(metas))
    for index in _frames(count, shard, progress, "PROX"):
        meta = metas[index]
        image_file, body_file = meta["img_file"], meta["body_file"]
        image = _image(support / "image" / image_file[image_file.find("recordings/") + len("recordings/"):])
        image = torch.flip(image, dims=[2])  # the Kinect recordings are mirrored
        lurb = square_box(torch.as_tensor(np.asarray(boxes[meta["img_key"]], dtype=np.float64)), 1.15)
        crop = crop_square(image, lurb.float())
        pred = run_network(method, crop, lurb, K_net, scene_camera)
        gt_camera = _gt(support / "gt_mosh_mesh" / body_file[body_file.find("mosh/") + len("mosh/"):], matrix)
        evaluator.update(_apply(T_c2w, pred.double())[None], _apply(T_c2w, gt_camera)[None], sdf=sdf,
                         grid_min=low, grid_max=high, contact=None)
    return _finish(_merge(evaluator, count, shard), count, len(metas), "prox-sahmr")
