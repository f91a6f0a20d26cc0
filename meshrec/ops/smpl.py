"""SMPL-family ops: the fused linear-blend-skinning forward pass and sparse joint regressors.

>>> arrays = prepare_smpl_arrays(v_template, shapedirs, posedirs, J_regressor, parents, lbs_weights)
>>> vertices, joints = smpl_lbs(betas, rotations, arrays, transl=transl)      # (B, V, 3), (B, J, 3)
>>> h36m = SparseRegressor.from_dense(np.load("J_regressor_h36m.npy"))
>>> joints17 = joint_regression(vertices, h36m.to(vertices.device, vertices.dtype))   # (B, 17, 3)

:class:`meshrec.body.SMPL` and :class:`meshrec.body.JointRegressor` wrap these for everyday use.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import scipy.sparse
import torch

from meshrec.extension import use_compiled
from meshrec.ops import reference

__all__ = ["SMPLArrays", "SparseRegressor", "joint_regression", "prepare_smpl_arrays", "smpl_lbs"]

_MAX_JOINTS = 64  # the kernels keep a body's kinematic state in fixed arrays of this size
_PANEL_COLUMNS = 192  # columns of a packed blend panel (csrc/smpl/lbs.h, kPanelColumns)


def _to_numpy(array: Any) -> np.ndarray:
    if torch.is_tensor(array):
        return array.detach().cpu().numpy()
    if scipy.sparse.issparse(array):
        return array.toarray()
    return np.asarray(array)


class SMPLArrays(NamedTuple):
    """A body model's arrays in the layout the SMPL kernels read; build with :func:`prepare_smpl_arrays`.

    V vertices, J joints, NB shape components, P = 9 (J - 1) pose components. Floating arrays
    share one dtype and device; index arrays are int32.
    """

    v_template: torch.Tensor       #: (V, 3) template vertices, metres
    shapedirs: torch.Tensor        #: (NB, 3V) shape blend shapes, one flattened (V, 3) offset per row
    posedirs: torch.Tensor         #: (P, 3V) pose blend shapes (smplx's layout)
    blend_panels: torch.Tensor     #: (ceil(3V / 192), NB + P, 192) [shapedirs ; posedirs] packed in column panels
    joint_template: torch.Tensor   #: (J, 3) the joint regressor applied to v_template
    joint_shapedirs: torch.Tensor  #: (NB, 3J) the joint regressor applied to each shape blend shape
    skin_joints: torch.Tensor      #: (V, K) int32, the joints with non-zero weight per vertex (padding: joint 0)
    skin_weights: torch.Tensor     #: (V, K) their skinning weights (padding: 0)
    parents: tuple[int, ...]       #: J parent indices, -1 for the root, each parent before its children

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> SMPLArrays:
        """The same arrays on another device and/or floating dtype (indices stay int32)."""
        floating = {name: getattr(self, name).to(device=device, dtype=dtype)
                    for name in ("v_template", "shapedirs", "posedirs", "blend_panels", "joint_template",
                                 "joint_shapedirs", "skin_weights")}
        return self._replace(skin_joints=self.skin_joints.to(device=device), **floating)

    def select_vertices(self, vertex_ids: Any) -> SMPLArrays:
        """The same body model restricted to some of its vertices: vertex i of the result is
        vertex ``vertex_ids[i]`` of this one. Joints are unchanged (their regressor is folded in).

        :func:`smpl_lbs` on the result computes the kinematic joints and only those vertices,
        reading only their columns of the blend shapes: the joints-only path of a fitting loop,
        whose loss reads the joints and a few vertices (smplx's vertex joints, a regressor's
        support, contact vertices). For SMPL's 21 vertex joints that is 63 of the 20,670 columns.
        Costs one copy of the selected columns (K x 3n values); build it once and reuse it.

        Args:
            vertex_ids: (n,) distinct vertex indices in [0, V), any order, n >= 0.
        """
        ids = _vertex_selection(vertex_ids, self.v_template.shape[0])
        index = ids.to(self.v_template.device)
        columns = (3 * index[:, None] + torch.arange(3, device=index.device)).reshape(-1)
        shapedirs = self.shapedirs.index_select(1, columns).contiguous()
        posedirs = self.posedirs.index_select(1, columns).contiguous()
        return self._replace(
            v_template=self.v_template.index_select(0, index).contiguous(),
            shapedirs=shapedirs,
            posedirs=posedirs,
            blend_panels=_pack_blend_panels(shapedirs, posedirs),
            skin_joints=self.skin_joints.index_select(0, index.to(self.skin_joints.device)).contiguous(),
            skin_weights=self.skin_weights.index_select(0, index).contiguous(),
        )


class SparseRegressor(NamedTuple):
    """A sparse (R, V) joint regressor: joint r = sum over its entries of weight * vertex.

    Entries are sorted by vertex (then row); build with :meth:`from_dense` or :meth:`from_vertex_ids`,
    which validate them (the ops check them again on every call: an index out of range raises IndexError).
    """

    vertex_ids: torch.Tensor  #: (nnz,) int32 vertex of each entry, ascending
    rows: torch.Tensor        #: (nnz,) int32 joint (row) of each entry
    weights: torch.Tensor     #: (nnz,) weight of each entry
    num_rows: int             #: R, the joints regressed
    num_vertices: int         #: V, the vertices of the mesh it applies to

    @classmethod
    def from_dense(cls, matrix: Any, dtype: torch.dtype = torch.float32, device: Any = None) -> SparseRegressor:
        """From a dense (R, V) array or tensor (or a scipy sparse matrix); zeros are dropped.

        For example ``J_regressor_h36m.npy`` (17, 6890) or ``J_regressor_extra.npy`` (9, 6890),
        as loaded by :func:`meshrec.body.load_joint_regressor`.
        """
        dense = _to_numpy(matrix).astype(np.float64)
        if dense.ndim != 2:
            raise ValueError(f"a joint regressor must have shape (R, V), got {dense.shape}")
        if not np.isfinite(dense).all():
            raise ValueError("the joint regressor contains NaN or infinite values")
        # Transposed, nonzero() walks vertex-major: entries come sorted by vertex, then row.
        vertex_ids, rows = np.nonzero(dense.T)
        weights = dense.T[vertex_ids, rows]
        return cls(
            vertex_ids=torch.as_tensor(vertex_ids.astype(np.int32), device=device),
            rows=torch.as_tensor(rows.astype(np.int32), device=device),
            weights=torch.as_tensor(weights, dtype=dtype, device=device),
            num_rows=int(dense.shape[0]),
            num_vertices=int(dense.shape[1]),
        )

    @classmethod
    def from_vertex_ids(cls, vertex_ids: Sequence[int], num_vertices: int, dtype: torch.dtype = torch.float32,
                        device: Any = None) -> SparseRegressor:
        """Joint r = vertex ``vertex_ids[r]`` (smplx's vertex-picked joints: nose, toes, fingertips...)."""
        ids = np.asarray(vertex_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= num_vertices):
            raise ValueError(f"vertex ids must lie in [0, {num_vertices}), got {ids.min()}..{ids.max()}")
        order = np.argsort(ids, kind="stable")
        return cls(
            vertex_ids=torch.as_tensor(ids[order].astype(np.int32), device=device),
            rows=torch.as_tensor(order.astype(np.int32), device=device),
            weights=torch.ones(ids.size, dtype=dtype, device=device),
            num_rows=int(ids.size),
            num_vertices=int(num_vertices),
        )

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> SparseRegressor:
        """The same regressor on another device and/or weight dtype."""
        return self._replace(vertex_ids=self.vertex_ids.to(device=device), rows=self.rows.to(device=device),
                             weights=self.weights.to(device=device, dtype=dtype))

    def select_vertices(self, vertex_ids: Any) -> SparseRegressor:
        """The same regressor for a mesh of selected vertices: vertex i of that mesh is vertex
        ``vertex_ids[i]`` of this one (see :meth:`SMPLArrays.select_vertices`).

        Raises:
            ValueError: an entry's vertex is not among ``vertex_ids``.
        """
        ids = _vertex_selection(vertex_ids, self.num_vertices)
        position = torch.full((self.num_vertices,), -1, dtype=torch.int64)
        position[ids] = torch.arange(len(ids))
        moved = position[self.vertex_ids.long().cpu()]
        if bool((moved < 0).any()):
            missing = sorted(set(self.vertex_ids[moved.to(self.vertex_ids.device) < 0].tolist()))
            raise ValueError(f"the regressor reads vertices {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                             "which are not among the selected vertices; select them too")
        order = torch.argsort(moved, stable=True)  # entries stay sorted by vertex (the kernels' order)
        device = self.vertex_ids.device
        return self._replace(vertex_ids=moved[order].to(device=device, dtype=torch.int32),
                             rows=self.rows[order.to(device)], weights=self.weights[order.to(device)],
                             num_vertices=len(ids))

    def support(self) -> torch.Tensor:
        """(n,) int64 ascending: the vertices the regressor reads (CPU)."""
        return torch.unique(self.vertex_ids.long().cpu())

    def to_dense(self) -> torch.Tensor:
        """The (R, V) matrix."""
        dense = self.weights.new_zeros(self.num_rows, self.num_vertices)
        dense[self.rows.long(), self.vertex_ids.long()] = self.weights
        return dense


def _vertex_selection(vertex_ids: Any, num_vertices: int) -> torch.Tensor:
    """(n,) int64 CPU tensor of distinct vertex ids in [0, num_vertices), checked."""
    ids = torch.as_tensor(_to_numpy(vertex_ids) if not torch.is_tensor(vertex_ids) else vertex_ids.detach().cpu())
    if ids.dim() != 1 or (ids.numel() and (ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool)):
        raise ValueError(f"vertex_ids must be a 1-D sequence of integer vertex indices, got shape {tuple(ids.shape)} "
                         f"and dtype {ids.dtype}")
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_vertices):
        raise ValueError(f"vertex_ids must lie in [0, {num_vertices}), got {int(ids.min())}..{int(ids.max())}")
    if len(torch.unique(ids)) != len(ids):
        raise ValueError("vertex_ids must be distinct")
    return ids


def prepare_smpl_arrays(
    v_template: Any,
    shapedirs: Any,
    posedirs: Any,
    j_regressor: Any,
    parents: Sequence[int],
    lbs_weights: Any,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> SMPLArrays:
    """Precomputes a body model's arrays for :func:`smpl_lbs` (once per model).

    Args (smplx's buffer layouts): v_template (V, 3); shapedirs (V, 3, NB); posedirs
    (9 (J - 1), 3V); j_regressor (J, V), dense or scipy sparse; parents (J,) with -1 for the
    root; lbs_weights (V, J). dtype/device default to those of ``posedirs`` when it is a tensor,
    else float32 / CPU.

    The joint regressor is folded into ``joint_template`` and ``joint_shapedirs`` (in float64,
    then rounded), so joints cost O(J NB) per body; skinning weights are stored as each vertex's
    non-zero entries (K = the most any vertex has); ``blend_panels`` copies the blend shapes into
    contiguous 192-column panels, the forward kernels' streaming layout (another 18 MB for SMPL
    in float32). A tensor ``posedirs`` of the right dtype, device and layout is used as is.
    """
    if dtype is None:
        dtype = posedirs.dtype if torch.is_tensor(posedirs) else torch.float32
    if device is None:
        device = posedirs.device if torch.is_tensor(posedirs) else "cpu"
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    template = _to_numpy(v_template).astype(np.float64)
    if template.ndim != 2 or template.shape[1] != 3:
        raise ValueError(f"v_template must have shape (V, 3), got {template.shape}")
    num_vertices = template.shape[0]
    parents = tuple(int(p) for p in parents)
    num_joints = len(parents)
    if not 1 <= num_joints <= _MAX_JOINTS:
        raise ValueError(f"the SMPL kernels support 1 to {_MAX_JOINTS} joints, got {num_joints}")
    if any(not -1 <= p < j for j, p in enumerate(parents)):
        raise ValueError(f"parents {parents}: every joint's parent must come before it (-1 for the root)")
    shape = _to_numpy(shapedirs).astype(np.float64)
    if shape.ndim != 3 or shape.shape[:2] != (num_vertices, 3):
        raise ValueError(f"shapedirs must have shape ({num_vertices}, 3, NB), got {shape.shape}")
    regressor = _to_numpy(j_regressor).astype(np.float64)
    if regressor.shape != (num_joints, num_vertices):
        raise ValueError(f"j_regressor must have shape ({num_joints}, {num_vertices}), got {regressor.shape}")
    weights = _to_numpy(lbs_weights).astype(np.float64)
    if weights.shape != (num_vertices, num_joints):
        raise ValueError(f"lbs_weights must have shape ({num_vertices}, {num_joints}), got {weights.shape}")
    pose_shape = (9 * (num_joints - 1), 3 * num_vertices)
    if tuple(posedirs.shape) != pose_shape:
        raise ValueError(f"posedirs must have shape {pose_shape} (smplx's layout), got {tuple(posedirs.shape)}")

    def float64(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float64, device=device)

    shape64, regressor64 = float64(shape), float64(regressor)
    skin_joints, skin_weights = _sparse_skinning(float64(weights))
    if torch.is_tensor(posedirs):
        pose = posedirs.detach().to(device=device, dtype=dtype).contiguous()
    else:
        pose = torch.as_tensor(np.ascontiguousarray(_to_numpy(posedirs)), dtype=dtype, device=device)
    shape_rows = _shape_rows(shape64).to(dtype)
    return SMPLArrays(
        v_template=float64(template).to(dtype),
        shapedirs=shape_rows,
        posedirs=pose,
        blend_panels=_pack_blend_panels(shape_rows, pose),
        joint_template=_fold_joint_template(regressor64, float64(template)).to(dtype),
        joint_shapedirs=_fold_joint_shapedirs(regressor64, shape64).to(dtype),
        skin_joints=skin_joints,
        skin_weights=skin_weights.to(dtype),
        parents=parents,
    )


# ---- derivations of the kernels' arrays, shared by prepare_smpl_arrays and meshrec.body.SMPL -----
# Torch functions on any device, so that a model whose buffers change can re-derive only what
# depends on the changed buffer, where it lives. The folds run in float64 (rounded by the caller).

def _shape_rows(shapedirs: torch.Tensor) -> torch.Tensor:
    """smplx's (V, 3, NB) shape blend shapes -> (NB, 3V), one flattened (V, 3) offset per row."""
    return shapedirs.permute(2, 0, 1).reshape(shapedirs.shape[2], -1).contiguous()


def _fold_joint_template(j_regressor: torch.Tensor, v_template: torch.Tensor) -> torch.Tensor:
    """(J, 3) rest joints of a (V, 3) template: the (J, V) joint regressor applied, in float64."""
    return j_regressor.to(torch.float64) @ v_template.to(torch.float64)


def _fold_joint_shapedirs(j_regressor: torch.Tensor, shapedirs: torch.Tensor) -> torch.Tensor:
    """(NB, 3J): the (J, V) joint regressor applied to each (V, 3, NB) shape blend shape, in float64."""
    folded = torch.einsum("jv,vkl->ljk", j_regressor.to(torch.float64), shapedirs.to(torch.float64))
    return folded.reshape(shapedirs.shape[2], 3 * j_regressor.shape[0])


def _sparse_skinning(lbs_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, J) skinning weights -> each vertex's non-zero entries: joints (V, K) int32 (padding:
    joint 0) and weights (V, K) (padding: 0), K the most any vertex has, in joint order."""
    nonzero = lbs_weights != 0
    width = max(1, int(nonzero.sum(dim=1).max())) if nonzero.numel() else 1
    # A stable sort of "is zero" puts each row's non-zero joints first, in joint order.
    order = torch.sort((~nonzero).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    keep = nonzero.gather(1, order)
    joints = torch.where(keep, order, torch.zeros_like(order)).to(torch.int32)
    weights = torch.where(keep, lbs_weights.gather(1, order), torch.zeros((), dtype=lbs_weights.dtype,
                                                                            device=lbs_weights.device))
    return joints, weights


def _pack_blend_panels(shape_rows: torch.Tensor, posedirs: torch.Tensor) -> torch.Tensor:
    """[shapedirs ; posedirs] (NB + P, 3V) packed in 192-column panels, the forward kernels'
    streaming layout (see :class:`SMPLArrays`)."""
    return _pack_panels(torch.cat([shape_rows, posedirs], dim=0))


def _pack_panels(matrix: torch.Tensor) -> torch.Tensor:
    """(K, C) -> (ceil(C / 192), K, 192): column panels, each contiguous, the last zero-padded."""
    rows, columns = matrix.shape
    panels = -(-columns // _PANEL_COLUMNS)
    padded = matrix.new_zeros(rows, panels * _PANEL_COLUMNS)
    padded[:, :columns] = matrix
    return padded.view(rows, panels, _PANEL_COLUMNS).transpose(0, 1).contiguous()


def _check_tensor(name: str, value: Any, like: torch.Tensor, owner: str = "the model arrays") -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {owner} are {like.dtype}; convert one of them (.to())")
    if value.device != like.device:
        raise ValueError(f"{name} is on {value.device} but {owner} are on {like.device}; move one of them (.to())")


def _check_batched(name: str, value: torch.Tensor, batch: int, tail: tuple[int, ...], layout: str,
                   allow_shared: bool = False) -> torch.Tensor:
    if allow_shared and value.dim() == len(tail):
        value = value.unsqueeze(0)
    ok = value.dim() == len(tail) + 1 and tuple(value.shape[1:]) == tail and (
        value.shape[0] == batch or (allow_shared and value.shape[0] == 1))
    if not ok:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(value.shape)}")
    return value


def _empty_regressor(like: torch.Tensor) -> SparseRegressor:
    index = torch.empty(0, dtype=torch.int32, device=like.device)
    return SparseRegressor(index, index, like.new_empty(0), 0, 0)


def smpl_lbs(
    betas: torch.Tensor,
    rotations: torch.Tensor,
    arrays: SMPLArrays,
    transl: torch.Tensor | None = None,
    vertex_template: torch.Tensor | None = None,
    joint_template: torch.Tensor | None = None,
    regressor: SparseRegressor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SMPL-family forward pass (blend shapes, kinematics, linear blend skinning), fused.

    Args:
        betas: (B, NB) shape coefficients, NB = ``arrays.shapedirs.shape[0]``.
        rotations: (B, J, 3, 3) joint rotation matrices, root first (axis-angle poses: convert
            with :func:`meshrec.rotations.rodrigues`, whose gradient then flows back to them).
        arrays: the model, from :func:`prepare_smpl_arrays` (same dtype and device as betas).
        transl: optional (B, 3) translation in metres, added to vertices and joints.
        vertex_template: optional (V, 3) or (B, V, 3) template replacing ``arrays.v_template``
            (e.g. per-subject offsets in shape fitting); needs ``joint_template`` with it.
        joint_template: optional (J, 3) or (B, J, 3) rest joints of that template, i.e. the joint
            regressor applied to it.
        regressor: optional :class:`SparseRegressor` (R, V) applied to the finished vertices,
            its R joints appended to the output joints (smplx's vertex joints, H36M joints...).

    Returns:
        vertices (B, V, 3) and joints (B, J + R, 3): the posed kinematic joints (as smplx: the
        kinematic chain's joints, not a regressor of the posed mesh), then the regressed ones.

    float32 or float64, CPU or CUDA, any batch including 0. Differentiable once with respect to
    betas, rotations, transl and the two templates (double backward raises); the model arrays
    get no gradient.

    Memory: the outputs (B (V + J + R) 3 values: 83 KB per SMPL body in float32) plus a bounded
    scratch (CPU: coefficients and transforms of at most 1024 bodies at a time, ~2.5 MB; CUDA:
    of at most 8192 bodies, ~20 MB). When a gradient is needed the posed template (B V 3 values)
    is also kept for the backward pass, whose gradients have the inputs' sizes plus one
    (B, V, 3) buffer. smplx, by comparison, holds about 6 B V 16 values (30 GB for 35k bodies).
    """
    if not isinstance(betas, torch.Tensor):
        raise TypeError(f"betas must be a torch.Tensor, got {type(betas).__name__}")
    like = arrays.v_template
    _check_tensor("betas", betas, like)
    num_betas = arrays.shapedirs.shape[0]
    if betas.dim() != 2 or betas.shape[1] != num_betas:
        raise ValueError(f"betas must have shape (B, {num_betas}), got {tuple(betas.shape)}")
    batch = betas.shape[0]
    num_joints = len(arrays.parents)
    num_vertices = like.shape[0]
    _check_tensor("rotations", rotations, like)
    _check_batched("rotations", rotations, batch, (num_joints, 3, 3), f"(B, {num_joints}, 3, 3) with B = {batch}")
    if transl is not None:
        _check_tensor("transl", transl, like)
        _check_batched("transl", transl, batch, (3,), f"(B, 3) with B = {batch}")
    if vertex_template is not None and joint_template is None:
        raise ValueError("vertex_template needs joint_template too: the joint regressor applied to it, (B, J, 3)")
    if vertex_template is not None:
        _check_tensor("vertex_template", vertex_template, like)
        vertex_template = _check_batched("vertex_template", vertex_template, batch, (num_vertices, 3),
                                         f"({num_vertices}, 3) or (B, {num_vertices}, 3)", allow_shared=True)
    if joint_template is not None:
        _check_tensor("joint_template", joint_template, like)
        joint_template = _check_batched("joint_template", joint_template, batch, (num_joints, 3),
                                        f"({num_joints}, 3) or (B, {num_joints}, 3)", allow_shared=True)
    if regressor is not None:
        if regressor.num_vertices != num_vertices:
            raise ValueError(f"the regressor applies to {regressor.num_vertices} vertices, the model has {num_vertices}")
        _check_tensor("regressor.weights", regressor.weights, like)
    return _smpl_lbs(betas, rotations, arrays, transl, vertex_template, joint_template, regressor)


def _smpl_lbs(
    betas: torch.Tensor,
    rotations: torch.Tensor,
    arrays: SMPLArrays,
    transl: torch.Tensor | None = None,
    vertex_template: torch.Tensor | None = None,
    joint_template: torch.Tensor | None = None,
    regressor: SparseRegressor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`smpl_lbs` on arguments already checked (by it, or by :class:`meshrec.body.SMPL`):
    the one place that chooses between the compiled kernels and the reference. Templates are
    (1 or B, ., 3)."""
    if use_compiled(betas):
        return _smpl_lbs_compiled(betas, rotations, arrays, transl, vertex_template, joint_template, regressor)
    return reference.smpl_lbs(betas, rotations, arrays, transl, vertex_template, joint_template, regressor)


def _smpl_lbs_compiled(
    betas: torch.Tensor,
    rotations: torch.Tensor,
    arrays: SMPLArrays,
    transl: torch.Tensor | None,
    vertex_template: torch.Tensor | None,
    joint_template: torch.Tensor | None,
    regressor: SparseRegressor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.meshrec.smpl_lbs`` on checked arguments (templates (1 or B, ., 3))."""
    if vertex_template is None:
        vertex_template = arrays.v_template.unsqueeze(0)
    if joint_template is None:
        joint_template = arrays.joint_template.unsqueeze(0)
    if regressor is None:
        regressor = _empty_regressor(betas)
    save_posed = torch.is_grad_enabled() and (
        betas.requires_grad or rotations.requires_grad or (transl is not None and transl.requires_grad)
        or vertex_template.requires_grad or joint_template.requires_grad)
    vertices, joints, _ = torch.ops.meshrec.smpl_lbs(
        betas, rotations, transl, vertex_template, joint_template, arrays.shapedirs, arrays.posedirs,
        arrays.blend_panels, arrays.joint_shapedirs, arrays.parents, arrays.skin_joints, arrays.skin_weights, regressor.vertex_ids,
        regressor.rows, regressor.weights, regressor.num_rows, save_posed,
    )
    return vertices, joints


def joint_regression(vertices: torch.Tensor, regressor: SparseRegressor) -> torch.Tensor:
    """Joints regressed from a mesh: (B, V, 3) vertices -> (B, R, 3), through a sparse regressor.

    Args:
        vertices: (B, V, 3) float32/float64 posed vertices (e.g. ``SMPL(...)(...).vertices``).
        regressor: a :class:`SparseRegressor` (R, V) with the vertices' dtype and device.

    Costs O(B nnz) instead of the dense O(B R V); differentiable once (double backward raises).
    """
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"vertices must be a torch.Tensor, got {type(vertices).__name__}")
    if vertices.dim() != 3 or vertices.shape[1:] != (regressor.num_vertices, 3):
        raise ValueError(f"vertices must have shape (B, {regressor.num_vertices}, 3), got {tuple(vertices.shape)}")
    if vertices.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"vertices must be float32 or float64, got {vertices.dtype}")
    _check_tensor("vertices", vertices, regressor.weights, owner="the regressor's weights")
    return _joint_regression(vertices, regressor)


def _joint_regression(vertices: torch.Tensor, regressor: SparseRegressor) -> torch.Tensor:
    """:func:`joint_regression` on arguments already checked: the backend switch."""
    if use_compiled(vertices):
        return torch.ops.meshrec.joint_regression(vertices, regressor.vertex_ids, regressor.rows, regressor.weights,
                                                  regressor.num_rows)
    return reference.joint_regression(vertices, regressor)
