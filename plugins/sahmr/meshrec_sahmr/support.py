"""SA-HMR's support files and the METRO template built from them and the user's SMPL.

Module 2 starts from a template: the zero-pose, zero-shape neutral SMPL turned upside down
(global orient 3.1416 rad about x: camera y-down), made relative to its H36M pelvis, as 14 H36M
joints and 431 coarse vertices (GraphCMR's mesh downsampling 6890 -> 1723 -> 431), plus each
coarse vertex's body part. These come from files of the zju3dv/SA-HMR repository that meshrec
does not ship (they derive from SMPL's topology):

- ``mesh_downsampling.npz`` (``lib/networks/pose/sahmr/data/``): the selection matrices ``D``.
- ``seg_part_info.npy`` (``lib/utils/body_model/``): ``verts431_pids`` (431,) part ids 0..7.
- ``J_regressor_h36m_correct.npy`` (``lib/networks/pose/sahmr/data/``); when absent meshrec's
  ``J_regressor_h36m.npy`` (body-model folder) is used.

They are searched in ``support_dir``, the checkpoint's folder, then the body-model folders
(argument, ``MESHREC_BODY_MODELS``, ``~/.cache/meshrec/body_models``). The two pickled files are
read with meshrec's restricted unpickler (:mod:`meshrec.io.safe_pickle`: array data only, bounded).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch

from meshrec.io.safe_pickle import restricted_load, to_plain

__all__ = ["H36M_J17_TO_J14", "SupportFileError", "build_template", "find_support_file", "load_downsampling",
           "load_part_ids", "load_pickle", "read_object_npy"]

H36M_J17_TO_J14 = (3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10)
H36M_PELVIS = 0
TEMPLATE_ORIENT = 3.1416  # upstream's value (not pi)

WHERE = {
    "mesh_downsampling.npz": "lib/networks/pose/sahmr/data/mesh_downsampling.npz",
    "seg_part_info.npy": "lib/utils/body_model/seg_part_info.npy",
    "J_regressor_h36m_correct.npy": "lib/networks/pose/sahmr/data/J_regressor_h36m_correct.npy",
    "J_regressor_h36m.npy": "lib/networks/pose/sahmr/data/J_regressor_h36m_correct.npy, or SPIN's "
                            "J_regressor_h36m.npy in the body-model folder",
}


class SupportFileError(FileNotFoundError):
    """A support file of SA-HMR is missing or unreadable."""


def find_support_file(name: str, folders: list[Path | str | None], required: bool = True) -> Path | None:
    """The first ``folders[i] / name`` that exists (None entries skipped), then the body-model folders."""
    from meshrec.body.files import body_model_search_dirs

    candidates = [Path(f).expanduser() for f in folders if f] + body_model_search_dirs()
    for folder in candidates:
        if (folder / name).is_file():
            return folder / name
    if not required:
        return None
    raise SupportFileError(
        f"SA-HMR needs {name} (zju3dv/SA-HMR: {WHERE.get(name, name)}); searched "
        f"{', '.join(str(f) for f in candidates)}. Copy it into one of these folders or pass the option "
        "support_dir=FOLDER."
    )


def read_object_npy(data: bytes, source: str) -> Any:
    """An .npy file holding a pickled object array, read with the restricted unpickler."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
        if dtype != object:
            stream.seek(0)
            return np.load(stream, allow_pickle=False)
        value = restricted_load(stream, source=source)
    except (ValueError, pickle.UnpicklingError, EOFError) as error:
        raise SupportFileError(f"{source}: not a readable SA-HMR support file ({error})") from None
    return _plain(value)


def _plain(value: Any) -> Any:
    """numpy / scipy objects in place of the restricted unpickler's stand-ins, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        out = np.empty(value.shape, dtype=object)
        for index, item in np.ndenumerate(value):
            out[index] = _plain(item)
        return out
    return to_plain("", value)


def load_pickle(path: str | Path) -> Any:
    """A pickle file of arrays / containers / sparse matrices (dataset metas, SMPL-X -> SMPL-H
    transfer), read with meshrec's restricted unpickler."""
    try:
        return _plain(restricted_load(Path(path).read_bytes(), source=str(path)))
    except (ValueError, pickle.UnpicklingError, EOFError) as error:
        raise SupportFileError(f"{path}: not a readable pickle of arrays ({error})") from None


def load_downsampling(path: str | Path) -> list[torch.Tensor]:
    """GraphCMR's downsampling matrices from ``mesh_downsampling.npz``: [D0 (1723, 6890), D1 (431, 1723)]
    as sparse COO float64 tensors (one non-zero per row)."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = archive.read("D.npy")
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise SupportFileError(f"{path}: expected GraphCMR's mesh_downsampling.npz with a 'D' entry ({error})") from None
    matrices = read_object_npy(data, str(path))
    out = []
    for matrix in np.asarray(matrices, dtype=object).ravel():
        if not scipy.sparse.issparse(matrix):
            raise SupportFileError(f"{path}: 'D' holds {type(matrix).__name__}, expected sparse matrices")
        coo = matrix.tocoo()
        shape, rows, cols, values = coo.shape, coo.row, coo.col, coo.data
        out.append(torch.sparse_coo_tensor(np.stack([rows, cols]), torch.as_tensor(values, dtype=torch.float64),
                                           shape, check_invariants=True).coalesce())
    if [tuple(m.shape) for m in out[:2]] != [(1723, 6890), (431, 1723)]:
        raise SupportFileError(f"{path}: 'D' has shapes {[tuple(m.shape) for m in out]}, expected "
                               "(1723, 6890) and (431, 1723)")
    return out[:2]


def load_part_ids(path: str | Path) -> torch.Tensor:
    """(431,) int64 body-part ids 0..7 of the coarse vertices (``seg_part_info.npy``'s ``verts431_pids``)."""
    value = read_object_npy(Path(path).read_bytes(), str(path))
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    if not isinstance(value, dict) or "verts431_pids" not in value:
        raise SupportFileError(f"{path}: expected a dict with 'verts431_pids' (SA-HMR's seg_part_info.npy)")
    pids = torch.as_tensor(np.asarray(value["verts431_pids"])).long()
    if pids.shape != (431,) or int(pids.min()) < 0 or int(pids.max()) > 7:
        raise SupportFileError(f"{path}: verts431_pids must be 431 ids in 0..7")
    return pids


def build_template(body_model: torch.nn.Module, regressor: torch.Tensor, downsampling: list[torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """METRO's template tokens (SA-HMR's ``initialize_h36m_verts_and_joints14`` + downsampling).

    Args:
        body_model: meshrec SMPL (neutral), called with zero shape, zero body pose and global orient
            (3.1416, 0, 0) axis-angle.
        regressor: (17, 6890) H36M joint regressor.
        downsampling: [D0 (1723, 6890), D1 (431, 1723)].

    Returns: joints14 (14, 3) and verts431 (431, 3), pelvis-relative, float64.
    """
    device = regressor.device
    dtype = body_model.v_template.dtype if hasattr(body_model, "v_template") else torch.float32
    orient = torch.tensor([[TEMPLATE_ORIENT, 0.0, 0.0]], dtype=dtype, device=device)
    with torch.no_grad():
        out = body_model(betas=torch.zeros(1, 10, dtype=dtype, device=device), global_orient=orient,
                         body_pose=torch.zeros(1, 69, dtype=dtype, device=device))
    vertices = out.vertices[0].double()
    joints = regressor.double() @ vertices
    pelvis = joints[H36M_PELVIS]
    vertices = vertices - pelvis
    joints14 = joints[list(H36M_J17_TO_J14)] - pelvis
    d0, d1 = (m.to(device) for m in downsampling)
    verts431 = torch.sparse.mm(d1, torch.sparse.mm(d0, vertices))
    return joints14, verts431
