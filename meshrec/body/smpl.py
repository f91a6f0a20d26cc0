"""SMPL and SMPL-H as torch modules: drop-in replacements for ``smplx.SMPL`` / ``smplx.SMPLH``.

Same constructor arguments that matter (``model_path``, ``gender``, ``num_betas``, ``dtype``,
``batch_size``, the ``create_*`` flags, ``age``/``kid_template_path``, ``joint_mapper``), same
forward keywords (``betas``, ``body_pose``, ``global_orient``, ``transl``, ``pose2rot``), same
output fields (``vertices``, ``joints`` with smplx's 45 joints, ``full_pose``, ...). Differences,
all on the side of clearer behaviour:

- ``model_path`` may be omitted: the file is searched in ``MESHREC_BODY_MODELS`` and
  ``~/.cache/meshrec/body_models``; ``.pkl`` files load without chumpy, ``.npz`` too.
- Inputs are checked: wrong shapes, dtypes, devices or non-finite values raise errors naming the
  argument; unknown keyword arguments raise instead of being ignored.
- Any argument with batch 1 is broadcast to the batch of the others.
- Axis-angle goes through the exact Rodrigues formula (smplx perturbs the angle by 1e-8).
- ``v_shaped`` is returned only with ``return_shaped=True`` (smplx's SMPL-X keyword).

The forward pass is one call of the SMPL op (:func:`meshrec.ops.smpl_lbs`: blend shapes,
kinematics, skinning, the vertex joints and the translation, with a backward for betas, poses,
translation and template), after the module has checked its inputs once. The op runs the fused
compiled kernels when the library is in use (:mod:`meshrec.extension`) and its pure-PyTorch
reference (:mod:`meshrec.ops.reference.smpl`) otherwise; the module itself has no second path.

The kernels read the model in their own layout (folded joint regressor, sparse skinning weights,
packed blend shapes), derived from the module's buffers. The derivation follows the buffers:
editing ``v_template``, ``shapedirs``, ``posedirs``, ``J_regressor``, ``lbs_weights``,
``parents`` or ``extra_joints_idxs`` in place (or replacing them, or ``load_state_dict``) is
seen at the next call, which re-derives what depends on the changed buffer. A ``v_template``
that requires a gradient (an ``nn.Parameter``) is differentiated through.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse
import torch
from torch import nn

from meshrec.body.constants import NUM_SMPL_VERTICES, SMPL_VERTEX_JOINTS
from meshrec.body.files import (
    PathLike,
    find_body_model_file,
    load_body_model_arrays,
    gender_of_file,
    smpl_file_names,
    smplh_file_names,
)
from meshrec.ops.smpl import (
    SMPLArrays,
    SparseRegressor,
    _fold_joint_shapedirs,
    _fold_joint_template,
    _joint_regression,
    _pack_blend_panels,
    _shape_rows,
    _smpl_lbs,
    _sparse_skinning,
    _vertex_selection,
)
from meshrec.rotations import _rodrigues_unchecked

__all__ = ["SMPL", "SMPLH", "SMPLHOutput", "SMPLOutput"]

# smplx's forward/constructor keywords that have no meaning here but appear in copied code.
_IGNORED_SMPLX_KEYWORDS = {"ext", "use_compressed"}


@dataclass
class SMPLOutput:
    """Result of :class:`SMPL`; also readable as a mapping (``out["vertices"]``).

    Attributes:
        vertices: (B, V, 3) posed mesh in metres, ``transl`` applied; None with return_verts=False.
        joints: (B, 45, 3): 24 kinematic joints, then the 21 vertex joints (nose, eyes, ears,
            toes, heels, fingertips), ``transl`` applied; after ``joint_mapper`` if one is set.
        betas: (B, NB) the shape coefficients used.
        global_orient, body_pose: the pose inputs as given (axis-angle or rotation matrices).
        full_pose: the concatenated pose, with return_full_pose=True.
        transl: (B, 3) the translation applied, or None.
        v_shaped: (B, V, 3) the shaped template before posing, with return_shaped=True.
    """

    vertices: torch.Tensor | None = None
    joints: torch.Tensor | None = None
    betas: torch.Tensor | None = None
    global_orient: torch.Tensor | None = None
    body_pose: torch.Tensor | None = None
    full_pose: torch.Tensor | None = None
    transl: torch.Tensor | None = None
    v_shaped: torch.Tensor | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def keys(self) -> Iterator[str]:
        return (f.name for f in fields(self))

    def values(self) -> Iterator[Any]:
        return (getattr(self, f.name) for f in fields(self))

    def items(self) -> Iterator[tuple[str, Any]]:
        return ((f.name, getattr(self, f.name)) for f in fields(self))


@dataclass
class SMPLHOutput(SMPLOutput):
    """Result of :class:`SMPLH`: :class:`SMPLOutput` plus the hand poses used (axis-angle)."""

    left_hand_pose: torch.Tensor | None = None
    right_hand_pose: torch.Tensor | None = None


def _dense(array: Any) -> np.ndarray:
    if scipy.sparse.issparse(array):
        return array.toarray()
    return np.asarray(array)


class SMPL(nn.Module):
    """The SMPL body model (6890 vertices, 24 joints).

    Args:
        model_path: an SMPL file (.pkl/.npz) or a folder holding ``SMPL_{GENDER}.pkl`` (or the
            official release names). None searches ``MESHREC_BODY_MODELS`` and
            ``~/.cache/meshrec/body_models``.
        gender: "neutral", "male" or "female" (chooses the file in a folder).
        num_betas: shape coefficients used (at most the file's: 10 for v1.0, 300 for v1.1).
        dtype: floating dtype of the arrays, torch.float32 or torch.float64.
        batch_size: batch of the default parameters created by the ``create_*`` flags.
        create_betas, create_global_orient, create_body_pose, create_transl: create
            ``nn.Parameter`` defaults used when forward() is not given that input (smplx
            semantics; with ``create_transl`` the translation parameter is always applied).
        betas, global_orient, body_pose, transl: initial values of those parameters.
        joint_mapper: optional callable mapping the (B, 45, 3) joints to another layout.
        age: "adult", or "kid" to add the SMIL kid-template offset as one extra beta (smplx).
        kid_template_path: the kid template (.npy, (6890, 3)) used with age="kid".
        v_template: optional (V, 3) template replacing the file's.
        vertex_ids: optional mapping from smplx's vertex-joint names to vertex ids.
        use_hands, use_feet_keypoints: include the fingertip / foot vertex joints (smplx).
        data_struct: arrays already loaded (mapping or object with attributes), instead of a file.
    """

    NUM_JOINTS = 23
    NUM_BODY_JOINTS = 23
    SHAPE_SPACE_DIM = 300
    _file_names: Callable[[str], list[str]] = staticmethod(smpl_file_names)

    def __init__(
        self,
        model_path: PathLike | None = None,
        gender: str = "neutral",
        num_betas: int = 10,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 1,
        create_betas: bool = True,
        betas: Any = None,
        create_global_orient: bool = True,
        global_orient: Any = None,
        create_body_pose: bool = True,
        body_pose: Any = None,
        create_transl: bool = True,
        transl: Any = None,
        joint_mapper: Callable[[torch.Tensor], torch.Tensor] | None = None,
        age: str = "adult",
        kid_template_path: PathLike | None = None,
        v_template: Any = None,
        vertex_ids: Mapping[str, int] | None = None,
        use_hands: bool = True,
        use_feet_keypoints: bool = True,
        data_struct: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        unknown = set(kwargs) - _IGNORED_SMPLX_KEYWORDS
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments: {sorted(unknown)}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if age not in ("adult", "kid"):
            raise ValueError(f"age must be 'adult' or 'kid', got {age!r}")
        self.gender = gender.lower()
        self.age = age
        self.dtype = dtype
        self.joint_mapper = joint_mapper

        if data_struct is None:
            self.model_file: Path | None = find_body_model_file(self._file_names(self.gender), model_path)
            named = gender_of_file(self.model_file)
            if named is not None and named != self.gender:
                warnings.warn(f"{self.model_file} is the {named} model, but gender={self.gender!r} was asked for; "
                              f"using the file (pass gender={named!r}, or the {self.gender} file or its folder)",
                              stacklevel=2)
                self.gender = named
            arrays = load_body_model_arrays(self.model_file)
        else:
            self.model_file = None
            arrays = dict(data_struct) if isinstance(data_struct, Mapping) else dict(vars(data_struct))
        self._check_arrays(arrays)

        file_betas = arrays["shapedirs"].shape[-1]
        if not isinstance(num_betas, int) or num_betas < 0:
            raise ValueError(f"num_betas must be a non-negative integer, got {num_betas!r}")
        if num_betas > file_betas:
            source = self.model_file or "the given arrays"
            raise ValueError(f"num_betas={num_betas} but {source} has only {file_betas} shape components")
        shapedirs = np.asarray(arrays["shapedirs"], dtype=np.float64)[:, :, :num_betas]
        template = np.asarray(arrays["v_template"], dtype=np.float64)
        if age == "kid":
            if kid_template_path is None:
                raise ValueError("age='kid' needs kid_template_path (the SMIL template, smpl_kid_template.npy)")
            kid_file = find_body_model_file([Path(kid_template_path).name], kid_template_path)
            kid = np.load(kid_file, allow_pickle=False)
            if kid.shape != template.shape:
                raise ValueError(f"kid template has shape {kid.shape}, the model's template {template.shape}")
            if not np.isfinite(kid).all():
                raise ValueError(f"{kid_file}: the kid template holds {int((~np.isfinite(kid)).sum())} NaN or "
                                 "infinite values; the file is damaged, get it again (smpl_kid_template.npy)")
            # As smplx: the centred kid template minus the (uncentred) adult one is one more beta.
            kid_offset = (kid - kid.mean(axis=0)) - template
            shapedirs = np.concatenate([shapedirs, kid_offset[:, :, None]], axis=2)
        self._num_betas = shapedirs.shape[-1]

        if v_template is not None:
            template = v_template.detach().cpu().numpy() if torch.is_tensor(v_template) else np.asarray(v_template)
            if template.shape != (arrays["v_template"].shape[0], 3):
                raise ValueError(f"v_template must have shape {arrays['v_template'].shape}, got {template.shape}")

        parents = np.asarray(arrays["kintree_table"][0]).astype(np.int64)
        parents[0] = -1
        num_joints = len(parents)
        posedirs = np.asarray(arrays["posedirs"], dtype=np.float64)
        num_vertices = template.shape[0]

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)

        self.register_buffer("v_template", tensor(template))
        self.register_buffer("shapedirs", tensor(shapedirs))
        self.register_buffer("posedirs", tensor(posedirs.reshape(num_vertices * 3, -1).T))
        self.register_buffer("J_regressor", tensor(_dense(arrays["J_regressor"])))
        self.register_buffer("lbs_weights", tensor(_dense(arrays["weights"])))
        self.register_buffer("parents", torch.as_tensor(parents))
        self.faces = np.asarray(arrays["f"]).astype(np.int64)
        self.register_buffer("faces_tensor", torch.as_tensor(self.faces))

        vertex_joints = dict(vertex_ids) if vertex_ids is not None else None
        selected = []
        for name, index in SMPL_VERTEX_JOINTS:
            group = "hands" if name.split("_")[-1] in {"thumb", "index", "middle", "ring", "pinky"} else (
                "feet" if name.split("_")[-1] in {"toe", "heel"} else "face")
            if (group == "hands" and not use_hands) or (group == "feet" and not use_feet_keypoints):
                continue
            selected.append(vertex_joints.get(name, index) if vertex_joints else index)
        if num_vertices != NUM_SMPL_VERTICES:
            selected = []  # vertex ids refer to SMPL's topology only
        self.register_buffer("extra_joints_idxs", torch.as_tensor(selected, dtype=torch.long))
        self.num_joints = num_joints
        self._source_keys: dict[str, tuple] = {}
        self._kernel_inputs_cache: tuple | None = None
        self._selection_cache: dict[tuple[int, ...] | None, tuple] = {}
        self._sync_kernel_arrays()

        def parameter(create: bool, name: str, value: Any, width: int) -> None:
            if not create:
                return
            if value is None:
                data = torch.zeros(batch_size, width, dtype=dtype)
            else:
                data = torch.as_tensor(value, dtype=dtype).detach().clone().reshape(-1, width)
            self.register_parameter(name, nn.Parameter(data, requires_grad=True))

        parameter(create_betas, "betas", betas, self._num_betas)
        parameter(create_global_orient, "global_orient", global_orient, 3)
        parameter(create_body_pose, "body_pose", body_pose, 3 * self.NUM_BODY_JOINTS)
        parameter(create_transl, "transl", transl, 3)

    # ------------------------------------------------------------------------------------------
    # The model in the kernels' layout, derived from the buffers above. The derived arrays are
    # non-persistent buffers (they follow .to() and stay out of the state dict); each buffer they
    # come from is fingerprinted (storage pointer, version counter, shape, strides) and
    # every eager call compares the fingerprints, so an in-place edit, a replaced buffer,
    # load_state_dict or .to() re-derives exactly what depends on what changed, and the arrays
    # can never go stale. The comparison costs a few microseconds.
    _SOURCES = {  # buffer -> the derived groups that depend on it
        "v_template": ("joint_template",),
        "shapedirs": ("shape", "joint_shapedirs", "panels"),
        "posedirs": ("panels",),
        "J_regressor": ("joint_template", "joint_shapedirs", "joint_regressor"),
        "lbs_weights": ("skinning",),
        "extra_joints_idxs": ("vertex_joints",),
        "parents": ("parents",),
    }
    # Trainable model arrays the kernels cannot differentiate (v_template can: see _templates).
    _FIXED_ARRAYS = ("shapedirs", "posedirs", "J_regressor", "lbs_weights")

    @staticmethod
    def _fingerprint(tensor: torch.Tensor) -> tuple:
        # A new dtype or device means new storage, so the pointer covers them.
        return tensor.data_ptr(), tensor._version, tensor.shape, tensor.stride()

    def _sync_kernel_arrays(self) -> bool:
        """Re-derives the kernel arrays whose source buffers changed; True when any did."""
        buffers, fingerprint = self._buffers, self._fingerprint
        keys = {name: fingerprint(buffers[name] if name in buffers else getattr(self, name)) for name in self._SOURCES}
        if keys == self._source_keys:
            return False
        groups = {group for name, key in keys.items() if self._source_keys.get(name) != key
                  for group in self._SOURCES[name]}
        # Outside inference mode, so that arrays derived during an inference-mode call can still
        # be saved for a backward pass later; without autograd, as they are constants.
        with torch.inference_mode(False), torch.no_grad():
            self._derive(groups)
        self._source_keys = keys
        self._kernel_inputs_cache = None
        self._selection_cache = {}
        return True

    def _derive(self, groups: set[str]) -> None:
        dtype, device = self.v_template.dtype, self.v_template.device

        def store(name: str, value: torch.Tensor) -> None:
            self.register_buffer(name, value, persistent=False)

        if "parents" in groups:
            parents = [int(p) for p in self.parents.tolist()]
            parents[0] = -1
            self._parents_tuple = tuple(parents)
        if "shape" in groups:
            store("_shapedirs_rows", _shape_rows(self.shapedirs).to(dtype))
        if "panels" in groups:
            store("_blend_panels", _pack_blend_panels(self._shapedirs_rows, self.posedirs.to(dtype).contiguous()))
        if "joint_template" in groups:
            store("_joint_template", _fold_joint_template(self.J_regressor, self.v_template).to(dtype))
        if "joint_shapedirs" in groups:
            store("_joint_shapedirs", _fold_joint_shapedirs(self.J_regressor, self.shapedirs).to(dtype))
        if "skinning" in groups:
            joints, weights = _sparse_skinning(self.lbs_weights)
            store("_skin_joints", joints)
            store("_skin_weights", weights.to(dtype))
        if "joint_regressor" in groups:
            # The kinematic joints' regressor, sparse, for templates given per call.
            sparse = SparseRegressor.from_dense(self.J_regressor, dtype=dtype, device=device)
            store("_joint_regressor_ids", sparse.vertex_ids)
            store("_joint_regressor_rows", sparse.rows)
            store("_joint_regressor_weights", sparse.weights)
        if "vertex_joints" in groups:
            picker = SparseRegressor.from_vertex_ids(self.extra_joints_idxs.tolist(), self.v_template.shape[0],
                                                     dtype=dtype, device=device)
            store("_vertex_joint_ids", picker.vertex_ids)
            store("_vertex_joint_rows", picker.rows)
            store("_vertex_joint_weights", picker.weights)

    def _kernel_inputs(self) -> tuple[SMPLArrays, SparseRegressor, SparseRegressor]:
        """The model as the kernels take it: arrays, the vertex joints' regressor and the kinematic
        joints' regressor (cached until a source buffer changes). Under torch.compile the
        fingerprints are not read (they are not traceable): the arrays are those of the last eager
        call, except the rest joints, which a compiled call regresses from ``v_template`` itself
        (see :meth:`_templates`). After editing another buffer, make one eager call."""
        compiling = torch.compiler.is_compiling()
        if not compiling:
            self._sync_kernel_arrays()
            if self._kernel_inputs_cache is not None:
                return self._kernel_inputs_cache
        num_vertices = int(self.v_template.shape[0])
        arrays = SMPLArrays(
            v_template=self.v_template, shapedirs=self._shapedirs_rows, posedirs=self.posedirs,
            blend_panels=self._blend_panels, joint_template=self._joint_template,
            joint_shapedirs=self._joint_shapedirs, skin_joints=self._skin_joints, skin_weights=self._skin_weights,
            parents=self._parents_tuple,
        )
        vertex_joints = SparseRegressor(self._vertex_joint_ids, self._vertex_joint_rows, self._vertex_joint_weights,
                                        num_rows=int(self._vertex_joint_ids.shape[0]), num_vertices=num_vertices)
        joint_regressor = SparseRegressor(self._joint_regressor_ids, self._joint_regressor_rows,
                                          self._joint_regressor_weights, num_rows=self.num_joints,
                                          num_vertices=num_vertices)
        inputs = (arrays, vertex_joints, joint_regressor)
        if not compiling:
            self._kernel_inputs_cache = inputs
        return inputs

    def _selected_inputs(self, vertex_ids: tuple[int, ...] | None, arrays: SMPLArrays, vertex_joints: SparseRegressor
                         ) -> tuple[SMPLArrays, SparseRegressor, torch.Tensor, torch.Tensor]:
        """The model restricted to the vertex joints' vertices plus ``vertex_ids`` (the joints-only
        path): its arrays and vertex-joint regressor, the selected vertices' ids in the full mesh
        (n,), and the position of each of ``vertex_ids`` among them. Cached per ``vertex_ids``
        until a source buffer changes (a few hundred microseconds to build)."""
        cached = self._selection_cache.get(vertex_ids)
        if cached is not None and not torch.compiler.is_compiling():
            return cached
        requested = torch.as_tensor(vertex_ids if vertex_ids is not None else (), dtype=torch.int64)
        union = torch.unique(torch.cat([vertex_joints.support(), requested]))  # ascending
        positions = torch.searchsorted(union, requested)
        device = arrays.v_template.device
        with torch.inference_mode(False), torch.no_grad():
            selected = (arrays.select_vertices(union), vertex_joints.select_vertices(union), union.to(device),
                        positions.to(device))
        if not torch.compiler.is_compiling():
            self._selection_cache[vertex_ids] = selected
        return selected

    def _templates(self, v_template: torch.Tensor | None, arrays: SMPLArrays,
                   joint_regressor: SparseRegressor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (1 or B, V, 3) vertex and (1 or B, J, 3) joint templates of this call."""
        if v_template is None and ((self.v_template.requires_grad and torch.is_grad_enabled())
                                   or torch.compiler.is_compiling()):
            # A learnt template's rest joints carry its gradient too; a compiled call cannot see
            # in-place edits of the template, so it regresses the rest joints each time (cheap).
            v_template = self.v_template.unsqueeze(0)
        if v_template is None:
            return arrays.v_template.unsqueeze(0), arrays.joint_template.unsqueeze(0)
        return v_template, _joint_regression(v_template, joint_regressor)

    def _check_arrays(self, arrays: dict[str, Any]) -> None:
        required = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
        missing = [key for key in required if key not in arrays]
        if missing:
            raise ValueError(f"{self.model_file or 'body model arrays'}: missing keys {missing} (not an SMPL-family file?)")
        num_vertices = np.asarray(arrays["v_template"]).shape[0]
        num_joints = np.asarray(arrays["kintree_table"]).shape[1]
        expected_joints = self.NUM_BODY_JOINTS + 1 + 2 * getattr(self, "NUM_HAND_JOINTS", 0)
        expected = {
            "v_template": (num_vertices, 3),
            "shapedirs": (num_vertices, 3, None),
            "posedirs": (num_vertices, 3, (num_joints - 1) * 9),
            "J_regressor": (num_joints, num_vertices),
            "weights": (num_vertices, num_joints),
            "kintree_table": (2, expected_joints),
        }
        for key, shape in expected.items():
            actual = tuple(np.shape(arrays[key])) if not scipy.sparse.issparse(arrays[key]) else arrays[key].shape
            if len(actual) != len(shape) or any(e is not None and a != e for a, e in zip(actual, shape)):
                raise ValueError(
                    f"{self.model_file or 'body model arrays'}: {key!r} has shape {actual}, expected "
                    f"{tuple('N' if e is None else e for e in shape)} for a {type(self).__name__} model"
                )
        parents = np.asarray(arrays["kintree_table"][0]).astype(np.int64)[1:]
        if np.any(parents >= np.arange(1, num_joints)) or np.any(parents < 0):
            raise ValueError("kintree_table: every joint's parent must come before it")

    @property
    def num_betas(self) -> int:
        return self._num_betas

    @property
    def num_expression_coeffs(self) -> int:
        return 0

    def name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        source = f", file={self.model_file}" if self.model_file else ""
        return f"gender={self.gender}, num_betas={self.num_betas}, dtype={self.dtype}{source}"

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _has_nonfinite(value: torch.Tensor) -> bool:
        """NaN or infinity in a CPU tensor. Not checked on a GPU, where it would synchronise the host
        with the device. A non-finite sum is confirmed element-wise (a huge finite sum overflows)."""
        return bool(value.device.type == "cpu" and value.numel() and not torch.compiler.is_compiling()
                    and not math.isfinite(value.sum().item()) and not bool(torch.isfinite(value).all()))

    def _check_input(self, name: str, value: torch.Tensor, finite: bool = True) -> torch.Tensor:
        if not torch.is_tensor(value):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype != self.v_template.dtype:
            raise TypeError(
                f"{name} has dtype {value.dtype} but the model holds {self.v_template.dtype} arrays; create "
                f"the model with dtype={value.dtype} or convert the input"
            )
        if value.device != self.v_template.device:
            raise ValueError(
                f"{name} is on {value.device} but the model is on {self.v_template.device}; move one of them "
                "(model.to(device) or tensor.to(device))"
            )
        if finite and self._has_nonfinite(value):
            raise ValueError(f"{name} contains NaN or infinite values")
        return value

    def _pose_tensor(self, name: str, value: torch.Tensor, joints: int, pose2rot: bool) -> torch.Tensor:
        """The pose as (B, joints, 3) axis-angle (pose2rot) or (B, joints, 3, 3) rotations, its shape,
        dtype and device checked (finiteness is checked on all poses at once by the caller)."""
        value = self._check_input(name, value, finite=False)
        batch = value.shape[0] if value.dim() else 0
        if pose2rot:
            if value.dim() == 2 and value.shape[1] == 3 * joints:
                return value.reshape(batch, joints, 3)
            if value.dim() == 3 and value.shape[1:] == (joints, 3):
                return value
            raise ValueError(
                f"{name} must be axis-angle of shape (B, {3 * joints}) or (B, {joints}, 3) with pose2rot=True, "
                f"got {tuple(value.shape)}"
            )
        if value.dim() == 4 and value.shape[1:] == (joints, 3, 3):
            return value
        if value.dim() == 2 and value.shape[1] == 9 * joints:
            return value.reshape(batch, joints, 3, 3)
        if joints == 1 and value.dim() == 3 and value.shape[1:] == (3, 3):
            return value.unsqueeze(1)
        raise ValueError(
            f"{name} must be rotation matrices of shape (B, {joints}, 3, 3) with pose2rot=False, got {tuple(value.shape)}"
        )

    @staticmethod
    def _broadcast(named: dict[str, torch.Tensor]) -> int:
        """The batch of the call: that of the inputs whose batch is not 1 (which may be 0, e.g.
        an empty batch with the module's batch-1 default parameters), else 1."""
        sizes = {name: value.shape[0] for name, value in named.items()}
        batches = {size for size in sizes.values() if size != 1}
        if len(batches) > 1:
            raise ValueError(f"batch sizes disagree: {sizes}; each input must have batch {max(batches)} or 1")
        return batches.pop() if batches else 1

    def _pose_parts(self, pose2rot: bool, **given: torch.Tensor) -> list[tuple[str, torch.Tensor, int, torch.Tensor]]:
        """(name, pose to rotate, joints, value reported in the output) in kinematic order."""
        return [
            ("global_orient", given["global_orient"], 1, given["global_orient"]),
            ("body_pose", given["body_pose"], self.NUM_BODY_JOINTS, given["body_pose"]),
        ]

    def _defaulted(self, name: str, value: torch.Tensor | None) -> torch.Tensor:
        if value is not None:
            return value
        default = getattr(self, name, None)
        if default is None:
            raise ValueError(f"{name} was not given and the model was created without a default for it (create_{name}=False)")
        return default

    def forward(
        self,
        betas: torch.Tensor | None = None,
        body_pose: torch.Tensor | None = None,
        global_orient: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        return_verts: bool = True,
        return_full_pose: bool = False,
        pose2rot: bool = True,
        v_template: torch.Tensor | None = None,
        return_shaped: bool = False,
        vertex_ids: Sequence[int] | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SMPLOutput:
        """Posed mesh and joints.

        Args:
            betas: (B, NB) shape coefficients; fewer than ``num_betas`` columns are zero-padded.
            body_pose: (B, 69) axis-angle (pose2rot=True) or (B, 23, 3, 3) rotation matrices.
            global_orient: (B, 3) axis-angle or (B, 1, 3, 3) / (B, 3, 3) rotation matrices.
            transl: (B, 3) translation in metres, added to vertices and joints.
            return_verts: compute the mesh. False takes the joints-only path: the kinematic
                joints plus only the vertices the vertex joints need, reading 63 of the 20,670
                blend-shape columns instead of all (a fitting loop whose loss reads joints);
                ``vertices`` is then None. Joints equal the full path's to rounding.
            vertex_ids: (n,) distinct vertex indices: joints-only path, plus these vertices,
                returned as ``vertices`` (B, n, 3) in this order (e.g. a joint regressor's
                support, contact vertices). Overrides ``return_verts``.
            return_full_pose: also return the concatenated pose.
            pose2rot: poses are axis-angle (True) or rotation matrices (False).
            v_template: optional (V, 3) or (B, V, 3) template replacing the model's (as smplx's
                layer classes), e.g. a per-subject template in shape fitting; differentiable.
            return_shaped: also return ``v_shaped``, the shaped template before posing.

        Any input left out takes the module's parameter (smplx semantics); an input of batch 1
        is broadcast to the batch of the others. Inputs on the CPU are checked for NaN and
        infinity; on a GPU that check would synchronise with the device, so it is skipped there
        (non-finite inputs then give non-finite outputs).

        Memory (compiled kernels): the outputs, about 83 KB per body in float32, plus a scratch
        of at most a few MB whatever the batch; with autograd, one more (B, V, 3) tensor is kept
        for the backward pass. Any batch works, e.g. all 35k frames of 3DPW in one call
        (2.9 GB of vertices in float32), where smplx needs ~30 GB.
        """
        return self._forward(betas, transl, return_verts, return_full_pose, pose2rot,
                             dict(global_orient=global_orient, body_pose=body_pose), v_template, return_shaped,
                             kwargs, vertex_ids)

    def _forward(self, betas, transl, return_verts, return_full_pose, pose2rot, poses, v_template, return_shaped,
                 kwargs, vertex_ids=None) -> SMPLOutput:
        if kwargs:
            unknown = set(kwargs) - _IGNORED_SMPLX_KEYWORDS
            if unknown:
                raise TypeError(f"{type(self).__name__}.forward() got unexpected keyword arguments: {sorted(unknown)}")
        given_poses = {name: self._defaulted(name, value) for name, value in poses.items()}
        betas = self._check_input("betas", self._defaulted("betas", betas))
        if betas.dim() != 2 or betas.shape[1] > self.num_betas:
            raise ValueError(f"betas must have shape (B, {self.num_betas}) (or fewer columns), got {tuple(betas.shape)}")
        if betas.shape[1] < self.num_betas:
            betas = torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[1]))
        apply_transl = transl is not None or hasattr(self, "transl")
        if transl is None and apply_transl:
            transl = self.transl
        if transl is not None:
            transl = self._check_input("transl", transl)
            if transl.dim() != 2 or transl.shape[1] != 3:
                raise ValueError(f"transl must have shape (B, 3), got {tuple(transl.shape)}")
        num_vertices = self.v_template.shape[0]
        if v_template is not None:
            v_template = self._check_input("v_template", v_template)
            if v_template.shape[-2:] != (num_vertices, 3) or v_template.dim() not in (2, 3):
                raise ValueError(f"v_template must have shape ({num_vertices}, 3) or (B, {num_vertices}, 3), "
                                 f"got {tuple(v_template.shape)}")
            if v_template.dim() == 2:
                v_template = v_template.unsqueeze(0)

        parts = self._pose_parts(pose2rot, **given_poses)
        poses_checked = [self._pose_tensor(name, value, joints, pose2rot) for name, value, joints, _ in parts]
        batched = {"betas": betas, **{part[0]: pose for part, pose in zip(parts, poses_checked)}}
        if transl is not None:
            batched["transl"] = transl
        if v_template is not None:
            batched["v_template"] = v_template
        batch = self._broadcast(batched)
        full_pose_tensor = torch.cat([pose.expand(batch, *pose.shape[1:]) for pose in poses_checked], dim=1)
        if self._has_nonfinite(full_pose_tensor):
            for (name, *_), pose in zip(parts, poses_checked):
                if self._has_nonfinite(pose):
                    raise ValueError(f"{name} contains NaN or infinite values")
        rotations = _rodrigues_unchecked(full_pose_tensor) if pose2rot else full_pose_tensor
        if betas.shape[0] != batch:
            betas = betas.expand(batch, -1)
        if transl is not None and transl.shape[0] != batch:
            transl = transl.expand(batch, 3)
        if torch.is_grad_enabled():
            trainable = [name for name in self._FIXED_ARRAYS if getattr(self, name).requires_grad]
            if trainable:
                raise ValueError(f"{type(self).__name__}: {', '.join(trainable)} require a gradient, which the SMPL op "
                                 "does not compute (it differentiates betas, poses, transl and v_template); freeze "
                                 "them (requires_grad_(False)) or learn a v_template offset instead")

        arrays, vertex_joints, joint_regressor = self._kernel_inputs()
        selection = union = None
        if vertex_ids is not None or not return_verts:
            if vertex_ids is None or (isinstance(vertex_ids, tuple) and vertex_ids in self._selection_cache):
                key = vertex_ids  # checked when it was cached: a fitting loop passes the same tuple each call
            else:
                key = tuple(_vertex_selection(vertex_ids, num_vertices).tolist())
            arrays, vertex_joints, union, selection = self._selected_inputs(key, arrays, vertex_joints)
            if vertex_ids is None:
                selection = None
        # The model's own template comes restricted with the arrays; a per-call one is restricted here.
        vertex_template, joint_template = self._templates(v_template, arrays, joint_regressor)
        if union is not None and vertex_template.shape[1] != arrays.v_template.shape[0]:
            vertex_template = vertex_template.index_select(1, union)
        mapped = self.joint_mapper is not None
        vertices, joints = _smpl_lbs(betas, rotations, arrays, None if mapped else transl, vertex_template,
                                     joint_template, vertex_joints)
        if selection is not None:
            vertices = vertices.index_select(1, selection)
        return_verts = return_verts or vertex_ids is not None
        if mapped:
            joints = self.joint_mapper(joints)
            if transl is not None:
                joints = joints + transl.unsqueeze(1)
                vertices = vertices + transl.unsqueeze(1)
        v_shaped = None
        if return_shaped:
            template = self.v_template if v_template is None else v_template
            v_shaped = template + torch.einsum("bl,vkl->bvk", betas, self.shapedirs)
        full_pose = None
        if return_full_pose:
            full_pose = torch.cat([value.expand(batch, *value.shape[1:]).flatten(1) for _, value, _, _ in parts], dim=1)
        return self._output(
            vertices=vertices if return_verts else None, joints=joints, betas=betas,
            full_pose=full_pose, transl=transl if apply_transl else None, v_shaped=v_shaped,
            **{name: reported for name, _, _, reported in parts},
        )

    def _output(self, **values: Any) -> SMPLOutput:
        return SMPLOutput(**values)

    def forward_shape(self, betas: torch.Tensor | None = None) -> SMPLOutput:
        """The shaped template (B, V, 3) in the rest pose, as smplx's ``forward_shape``."""
        betas = self._check_input("betas", self._defaulted("betas", betas))
        v_shaped = self.v_template + torch.einsum("bl,vkl->bvk", betas, self.shapedirs[:, :, : betas.shape[1]])
        return SMPLOutput(vertices=v_shaped, betas=betas, v_shaped=v_shaped)


class SMPLH(SMPL):
    """SMPL-H: SMPL's body (22 joints) plus articulated hands (2 x 15 joints), 52 joints.

    Extra arguments over :class:`SMPL` (smplx semantics): ``use_pca`` and ``num_pca_comps``
    (hand poses as PCA coefficients, default True and 6), ``flat_hand_mean`` (the hands' rest
    pose is flat instead of the file's mean), ``create_left_hand_pose``/``left_hand_pose`` and
    the right-hand counterparts. Joints are the 52 kinematic ones plus the 21 vertex joints.
    """

    NUM_BODY_JOINTS = 21
    NUM_HAND_JOINTS = 15
    NUM_JOINTS = NUM_BODY_JOINTS + 2 * NUM_HAND_JOINTS
    SHAPE_SPACE_DIM = 16
    _file_names = staticmethod(smplh_file_names)

    def __init__(
        self,
        model_path: PathLike | None = None,
        *,
        use_pca: bool = True,
        num_pca_comps: int = 6,
        flat_hand_mean: bool = False,
        create_left_hand_pose: bool = True,
        left_hand_pose: Any = None,
        create_right_hand_pose: bool = True,
        right_hand_pose: Any = None,
        batch_size: int = 1,
        data_struct: Any = None,
        **kwargs: Any,
    ) -> None:
        if data_struct is None:
            gender = kwargs.get("gender", "neutral").lower()
            path = find_body_model_file(smplh_file_names(gender), model_path)
            data_struct = load_body_model_arrays(path)
        else:
            path = None
            data_struct = dict(data_struct) if isinstance(data_struct, Mapping) else dict(vars(data_struct))
        super().__init__(model_path, batch_size=batch_size, data_struct=data_struct, **kwargs)
        self.model_file = path
        self.use_pca = use_pca
        self.num_pca_comps = num_pca_comps
        self.flat_hand_mean = flat_hand_mean
        for side, letter in (("left", "l"), ("right", "r")):
            if use_pca:
                components = np.asarray(data_struct[f"hands_components{letter}"], dtype=np.float64)
                if not 0 < num_pca_comps <= components.shape[0]:
                    raise ValueError(f"num_pca_comps must be in 1..{components.shape[0]}, got {num_pca_comps}")
                self.register_buffer(f"{side}_hand_components",
                                     torch.as_tensor(components[:num_pca_comps], dtype=self.dtype))
            mean = np.asarray(data_struct[f"hands_mean{letter}"], dtype=np.float64)
            self.register_buffer(f"{side}_hand_mean", torch.as_tensor(np.zeros_like(mean) if flat_hand_mean else mean,
                                                                      dtype=self.dtype))
        width = num_pca_comps if use_pca else 3 * self.NUM_HAND_JOINTS
        for side, create, value in (("left", create_left_hand_pose, left_hand_pose),
                                    ("right", create_right_hand_pose, right_hand_pose)):
            if create:
                data = (torch.zeros(batch_size, width, dtype=self.dtype) if value is None
                        else torch.as_tensor(value, dtype=self.dtype).detach().clone().reshape(-1, width))
                self.register_parameter(f"{side}_hand_pose", nn.Parameter(data, requires_grad=True))

    def _hand_axis_angle(self, side: str, value: torch.Tensor) -> torch.Tensor:
        """Hand pose as (B, 45) axis-angle, PCA coefficients expanded (the mean not yet added)."""
        value = self._check_input(f"{side}_hand_pose", value)
        if self.use_pca:
            components = getattr(self, f"{side}_hand_components")
            if value.dim() != 2 or value.shape[1] != components.shape[0]:
                raise ValueError(f"{side}_hand_pose must have shape (B, {components.shape[0]}) PCA coefficients, "
                                 f"got {tuple(value.shape)}")
            value = value @ components
        return value

    def _pose_parts(self, pose2rot: bool, **given: torch.Tensor) -> list[tuple[str, torch.Tensor, int, torch.Tensor]]:
        parts = super()._pose_parts(pose2rot, **given)
        for side in ("left", "right"):
            value = given[f"{side}_hand_pose"]
            if pose2rot:
                value = self._hand_axis_angle(side, value)
                parts.append((f"{side}_hand_pose", value + getattr(self, f"{side}_hand_mean"), self.NUM_HAND_JOINTS, value))
            else:
                parts.append((f"{side}_hand_pose", value, self.NUM_HAND_JOINTS, value))
        return parts

    def _output(self, **values: Any) -> SMPLHOutput:
        return SMPLHOutput(**values)

    def forward(
        self,
        betas: torch.Tensor | None = None,
        global_orient: torch.Tensor | None = None,
        body_pose: torch.Tensor | None = None,
        left_hand_pose: torch.Tensor | None = None,
        right_hand_pose: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        return_verts: bool = True,
        return_full_pose: bool = False,
        pose2rot: bool = True,
        v_template: torch.Tensor | None = None,
        return_shaped: bool = False,
        vertex_ids: Sequence[int] | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SMPLHOutput:
        """As :meth:`SMPL.forward`, with ``body_pose`` (B, 63) and hand poses: PCA coefficients
        (B, num_pca_comps) with use_pca, else (B, 45) axis-angle; with pose2rot=False the hand
        poses are (B, 15, 3, 3) rotation matrices and no hand mean is added."""
        poses = dict(global_orient=global_orient, body_pose=body_pose,
                     left_hand_pose=left_hand_pose, right_hand_pose=right_hand_pose)
        return self._forward(betas, transl, return_verts, return_full_pose, pose2rot, poses, v_template, return_shaped,
                             kwargs, vertex_ids)
