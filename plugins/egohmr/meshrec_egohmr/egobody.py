"""Reader of EgoBody's egocentric annotations and EgoHMR's scene point clouds.

Layout under the data root (EgoBody release + EgoHMR's preprocessed scenes)::

    annotation_egocentric_smpl_npz/egocapture_{split}_smpl.npz
    egocentric_color/<recording>/<date>/PV/<timestamp>_frame_<id>.jpg
    transf_matrices_all_seqs.pkl
    Egohmr_scene_preprocess_s1_release/pcd_verts_dict_{split}.pkl, map_dict_{split}.pkl
    Egohmr_scene_preprocess_cube_s2_from_{pred,gt}_release/{split}/<recording>/<date>/<timestamp>_frame_<id>.npy
    data_info_release.csv                                        recording_name -> scene_name
    calibrations/<recording>/cal_trans/kinect12_to_world/<scene_name>.json   {"trans": 4x4}

The npz holds per frame: ``imgname``, ``center`` (2) and ``scale`` (box side / 200) of the person
box, ``pose`` (69) / ``shape`` (10) / ``global_orient_pv`` (3) / ``transl_pv`` (3) of the
interactee's SMPL in the HoloLens PV camera frame (OpenCV axes), intrinsics ``fx fy cx cy``,
OpenPose BODY_25 ``valid_keypoints`` (25, 3) and ``gender`` ('m' / 'f').

Scene points of stage 1 are stored in the master Kinect's frame every 15th frame
(``map_dict`` maps each frame to its stored key); they are brought into the PV frame as EgoHMR's
loader does: ``diag(1, -1, -1, 1) @ trans_world2pv[timestamp] @ trans_kinect2holo``. Pickles are
read with meshrec's restricted unpickler (arrays and plain containers only).

Stage 2's offline cubes (EgoHMR's ``DatasetEgobody`` with ``scene_type='cube'``): one ``.npy``
per frame, float64 (N, 3) (20000 in the release), metres, in the scene mesh's frame, named after the image (``<timestamp>_frame_<id>.jpg`` ->
``.npy``) under ``<split>/<recording>/<date>/`` (no ``PV/``). ``from_pred`` (test) is cropped
around EgoHMR's stage-1 translation (checkpoint 53618), ``from_gt`` (train / val, and test
too) around the ground-truth body. They are brought into the PV frame as upstream does:
``diag(1, -1, -1, 1) @ trans_world2pv[timestamp] @ trans_kinect2holo @ inv(kinect12_to_world)``,
the last from the recording's calibration json for its scene (``data_info_release.csv``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshrec.io.safe_pickle import load_npz, restricted_load

__all__ = ["CUBE_FOLDERS", "EgoBodyAnnotations", "EgoBodyCubes", "EgoBodyScenes", "annotation_file", "cube_file",
           "kinect_to_pv", "read_annotations"]

ADD_TRANS = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL-style HoloLens PV -> OpenCV
CUBE_FOLDERS = {"from_pred": "Egohmr_scene_preprocess_cube_s2_from_pred_release",
                "from_gt": "Egohmr_scene_preprocess_cube_s2_from_gt_release"}


def annotation_file(data_root: Path, split: str = "test") -> Path:
    return Path(data_root) / "annotation_egocentric_smpl_npz" / f"egocapture_{split}_smpl.npz"


@dataclass
class EgoBodyAnnotations:
    """Per-frame arrays (N frames); ``gender`` is 0 male, 1 female (EgoHMR's mapping)."""

    imgname: list[str]
    center: np.ndarray
    scale: np.ndarray
    pose: np.ndarray
    shape: np.ndarray
    global_orient: np.ndarray
    transl: np.ndarray
    fx: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    keypoints: np.ndarray
    gender: np.ndarray

    def __len__(self) -> int:
        return len(self.imgname)

    def boxes_xyxy(self) -> np.ndarray:
        """(N, 4) square boxes: centre +- scale * 200 / 2 (the method scales them by 1.2)."""
        half = self.scale[:, None] * 100.0
        return np.concatenate([self.center - half, self.center + half], 1)

    def intrinsics(self, index: int) -> np.ndarray:
        """K with fx on both axes, as EgoHMR projects (fy is ignored upstream)."""
        return np.array([[self.fx[index], 0.0, self.cx[index]], [0.0, self.fx[index], self.cy[index]], [0.0, 0.0, 1.0]])


def read_annotations(data_root: Path, split: str = "test") -> EgoBodyAnnotations:
    path = annotation_file(data_root, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: EgoBody's annotation_egocentric_smpl_npz folder must be in the data "
                                "root (EgoBody release, 'EgoSet' egocentric SMPL annotations)")
    data = load_npz(path)
    missing = [key for key in ("imgname", "center", "scale", "pose", "shape", "global_orient_pv", "transl_pv", "fx", "cx",
                               "cy", "valid_keypoints", "gender") if key not in data]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing} of EgoBody's egocentric SMPL annotations")
    gender = np.array([0 if str(g).lower().startswith("m") else 1 for g in data["gender"]])
    return EgoBodyAnnotations(
        imgname=[str(name) for name in data["imgname"]], center=np.asarray(data["center"], dtype=np.float64),
        scale=np.asarray(data["scale"], dtype=np.float64), pose=np.asarray(data["pose"], dtype=np.float64),
        shape=np.asarray(data["shape"], dtype=np.float64),
        global_orient=np.asarray(data["global_orient_pv"], dtype=np.float64),
        transl=np.asarray(data["transl_pv"], dtype=np.float64), fx=np.asarray(data["fx"], dtype=np.float64),
        cx=np.asarray(data["cx"], dtype=np.float64), cy=np.asarray(data["cy"], dtype=np.float64),
        keypoints=np.asarray(data["valid_keypoints"], dtype=np.float64), gender=gender)


def kinect_to_pv(transforms: dict, imgname: str) -> np.ndarray:
    """4 x 4 master Kinect -> the frame's PV camera (OpenCV axes), from
    ``transf_matrices_all_seqs.pkl``'s content."""
    parts = imgname.split("/")
    recording, timestamp = parts[-4], parts[-1].split("_")[0]
    if recording not in transforms or timestamp not in transforms[recording]["trans_world2pv"]:
        raise KeyError(f"transf_matrices_all_seqs.pkl has no transform for {imgname} (recording {recording}, "
                       f"timestamp {timestamp})")
    sequence = transforms[recording]
    world_to_pv = np.asarray(sequence["trans_world2pv"][timestamp], dtype=np.float64)
    return ADD_TRANS @ world_to_pv @ np.asarray(sequence["trans_kinect2holo"], dtype=np.float64)


def _load_pickle(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (EgoHMR's scene preprocessing release / EgoBody's transforms)")
    with open(path, "rb") as stream:
        return restricted_load(stream, source=str(path))


class EgoBodyScenes:
    """Stage-1 scene clouds (20000 points) of a split, in each frame's PV camera frame."""

    def __init__(self, data_root: Path, split: str = "test", transforms: dict | None = None):
        root = Path(data_root)
        self.transforms = transforms if transforms is not None else _load_pickle(root / "transf_matrices_all_seqs.pkl")
        folder = root / "Egohmr_scene_preprocess_s1_release"
        self.clouds = _load_pickle(folder / f"pcd_verts_dict_{split}.pkl")
        self.map = _load_pickle(folder / f"map_dict_{split}.pkl")

    def kinect_to_pv(self, imgname: str) -> np.ndarray:
        return kinect_to_pv(self.transforms, imgname)

    def points(self, imgname: str) -> np.ndarray:
        """(20000, 3) scene points in the PV camera frame (OpenCV axes), metres."""
        key = "/".join(imgname.split("/")[-5:])
        cloud = np.asarray(self.clouds[self.map[key]], dtype=np.float64)
        transform = self.kinect_to_pv(imgname)
        return cloud @ transform[:3, :3].T + transform[:3, 3]


def cube_file(data_root: Path, imgname: str, split: str = "test", source: str = "from_pred") -> Path:
    """Where EgoHMR's loader reads the stage-2 cube of ``imgname``
    (``egocentric_color/<recording>/<date>/PV/<timestamp>_frame_<id>.jpg``)."""
    if source not in CUBE_FOLDERS:
        raise ValueError(f"cube source must be one of {sorted(CUBE_FOLDERS)}, got {source!r}")
    parts = imgname.split("/")
    if len(parts) < 5:
        raise ValueError(f"image name {imgname!r} is not egocentric_color/<recording>/<date>/PV/<file>.jpg")
    recording, date, name = parts[-4], parts[-3], parts[-1]
    return Path(data_root) / CUBE_FOLDERS[source] / split / recording / date / Path(name).with_suffix(".npy").name


class EgoBodyCubes:
    """EgoHMR's offline stage-2 scene cubes of a split, in each frame's PV camera frame.

    Args:
        data_root: EgoBody's folder.
        split: "test" (or "train" / "val").
        source: "from_pred" (cropped around EgoHMR's stage-1 translation) or "from_gt".
        transforms: ``transf_matrices_all_seqs.pkl``'s content if already read.

    Raises:
        FileNotFoundError: the cube folder, ``data_info_release.csv`` or a calibration is missing
            (the message names the path and what to download).
    """

    def __init__(self, data_root: Path, split: str = "test", source: str = "from_pred", transforms: dict | None = None):
        if source not in CUBE_FOLDERS:
            raise ValueError(f"cube source must be one of {sorted(CUBE_FOLDERS)}, got {source!r}")
        self.root, self.split, self.source = Path(data_root), split, source
        self.folder = self.root / CUBE_FOLDERS[source] / split
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"{self.folder} does not exist: EgoHMR's offline stage-2 cubes ({CUBE_FOLDERS[source]}, from EgoBody's "
                f"download page, https://egobody.inf.ethz.ch) must be unpacked in the data root {self.root} with their "
                f"{split}/ folder; or evaluate with cubes='predict-time'")
        self.transforms = transforms if transforms is not None else _load_pickle(self.root / "transf_matrices_all_seqs.pkl")
        self.scene_names = self._scene_names(self.root / "data_info_release.csv")
        self._scene_to_kinect: dict[str, np.ndarray] = {}

    @staticmethod
    def _scene_names(path: Path) -> dict[str, str]:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: EgoBody's data_info_release.csv (recording -> scene) is needed "
                                    "to bring the offline cubes out of the scene mesh's frame")
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream))
        if not rows or "recording_name" not in rows[0] or "scene_name" not in rows[0]:
            raise ValueError(f"{path} must have the columns recording_name and scene_name (EgoBody's data_info_release.csv)")
        return {row["recording_name"]: row["scene_name"] for row in rows}

    def path(self, imgname: str) -> Path:
        return cube_file(self.root, imgname, self.split, self.source)

    def scene_to_kinect(self, recording: str) -> np.ndarray:
        """inv(kinect12_to_world): scene mesh -> master Kinect, from the recording's calibration."""
        if recording not in self._scene_to_kinect:
            if recording not in self.scene_names:
                raise KeyError(f"recording {recording} is not in {self.root / 'data_info_release.csv'}")
            path = (self.root / "calibrations" / recording / "cal_trans" / "kinect12_to_world" /
                    f"{self.scene_names[recording]}.json")
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: EgoBody's calibrations/ folder is needed for the cubes")
            with open(path) as stream:
                trans = np.asarray(json.load(stream)["trans"], dtype=np.float64)
            if trans.shape != (4, 4):
                raise ValueError(f"{path}: 'trans' must be a 4 x 4 matrix, got shape {trans.shape}")
            self._scene_to_kinect[recording] = np.linalg.inv(trans)
        return self._scene_to_kinect[recording]

    def points(self, imgname: str) -> np.ndarray:
        """(N, 3) float64 cube points of the frame in its PV camera frame (OpenCV axes), metres."""
        path = self.path(imgname)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: no offline cube for {imgname} in {self.folder} "
                                    f"(expected <recording>/<date>/<timestamp>_frame_<id>.npy there, as EgoHMR's release)")
        try:
            cube = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path}: not a plain .npy array ({error})") from None
        if cube.ndim != 2 or cube.shape[1] != 3 or len(cube) == 0 or not np.issubdtype(cube.dtype, np.floating):
            raise ValueError(f"{path}: a cube must be (N, 3) float points, N > 0; got {cube.dtype} {cube.shape}")
        if not np.isfinite(cube).all():
            raise ValueError(f"{path}: the cube has NaN or infinite coordinates")
        recording = imgname.split("/")[-4]
        transform = kinect_to_pv(self.transforms, imgname) @ self.scene_to_kinect(recording)
        return cube.astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
