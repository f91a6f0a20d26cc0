"""MotionBERT's mesh network with the upstream module and parameter names.

``MeshRegressor`` = ``backbone`` (:class:`DSTformer`, the dual-stream spatio-temporal
transformer) + ``head`` (:class:`SMPLRegressor`). Written for meshrec from the description of
``lib/model/DSTformer.py`` and ``lib/model/model_mesh.py`` in Walter0807/MotionBERT (commit
dccfe7b); the names match so the released ``best_epoch.bin`` loads strictly (see
:mod:`meshrec_motionbert.checkpoint`).

Shapes and units (N clips, T frames, 17 H36M joints):

- input: (N, T, 17, 3) normalised 2D keypoints ``(x, y, confidence)``, x and y roughly in
  [-1, 1] (see :mod:`meshrec_motionbert.keypoints`), T <= ``maxlen`` (243).
- :meth:`DSTformer.get_representation`: (N, T, 17, 512) features in (-1, 1) (tanh).
- :meth:`MeshRegressor.regress`: SMPL rotations (N, T, 24, 3, 3) from SPIN's 6D layout and betas
  (N, T, 10), one set of betas per clip copied to every frame.
- :meth:`MeshRegressor.forward`: upstream's output, a list with one dict: ``theta`` (N, T, 82) =
  72 axis-angle + 10 betas, ``verts`` (N, T, 6890, 3) and ``kp_3d`` (N, T, 17, 3) in
  millimetres, SMPL's model frame (no translation, not root-centred). It needs the body model
  (:meth:`MeshRegressor.set_body_model`), which is not part of the network's state_dict: the
  released checkpoint's copy of the licensed SMPL arrays is dropped on loading.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from meshrec.rotations import matrix_from_6d_spin, matrix_to_axis_angle

__all__ = [
    "Attention",
    "Block",
    "DSTformer",
    "H36M_FLIP_LEFT",
    "H36M_FLIP_RIGHT",
    "H36M_JOINT_NAMES",
    "MLP",
    "MeshRegressor",
    "SMPLRegressor",
]

H36M_JOINT_NAMES = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "spine",
    "thorax", "neck_nose", "head_top", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
    "right_elbow", "right_wrist",
)
# Left/right joint pairs swapped by a horizontal flip (upstream lib/utils/utils_data.py flip_data).
H36M_FLIP_LEFT = (4, 5, 6, 11, 12, 13)
H36M_FLIP_RIGHT = (1, 2, 3, 14, 15, 16)

NUM_SMPL_JOINTS = 24
POSE_6D_SIZE = NUM_SMPL_JOINTS * 6
NUM_BETAS = 10


class MLP(nn.Module):
    """fc1 -> GELU -> fc2 (dropout after each, 0 in every MotionBERT config)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None, drop: float = 0.0):
        super().__init__()
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention over the joints of a frame (``mode="spatial"``) or over the
    frames of a joint (``mode="temporal"``).

    Input and output (B*T, J, C); ``seqlen`` = T tells the temporal mode how to regroup tokens.
    Scale 1/sqrt(C / heads), no mask.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, mode: str = "spatial"):
        super().__init__()
        if mode not in ("spatial", "temporal"):
            raise ValueError(f"mode must be 'spatial' or 'temporal', got {mode!r}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.mode = mode
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, seqlen: int = 1) -> torch.Tensor:
        bt, joints, dim = x.shape
        heads = self.num_heads
        # (3, B*T, H, J, c): the channel order of qkv's output is (q|k|v, head, c)
        qkv = self.qkv(x).reshape(bt, joints, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        drop = self.attn_drop.p if self.training else 0.0
        if self.mode == "spatial":
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)  # (BT, H, J, c)
            out = out.transpose(1, 2).reshape(bt, joints, dim)
        else:
            # regroup to (B, H, J, T, c): attention among the T frames of each joint
            def temporal(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(-1, seqlen, heads, joints, dim // heads).permute(0, 2, 3, 1, 4)

            out = F.scaled_dot_product_attention(temporal(q), temporal(k), temporal(v), dropout_p=drop,
                                                 scale=self.scale)
            out = out.permute(0, 3, 2, 1, 4).reshape(bt, joints, dim)  # (B, T, J, H, c) -> (BT, J, C)
        return self.proj_drop(self.proj(out))


class Block(nn.Module):
    """Pre-norm residual spatial attention + MLP and temporal attention + MLP, in the order
    spatial then temporal (``st_mode="stage_st"``) or temporal then spatial (``"stage_ts"``).
    Each of the four sub-layers has its own weights (``*_s`` spatial, ``*_t`` temporal)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, norm_eps: float = 1e-6, st_mode: str = "stage_st"):
        super().__init__()
        if st_mode not in ("stage_st", "stage_ts"):
            raise ValueError(f"st_mode must be 'stage_st' or 'stage_ts', got {st_mode!r}")
        self.st_mode = st_mode
        self.norm1_s = nn.LayerNorm(dim, eps=norm_eps)
        self.norm1_t = nn.LayerNorm(dim, eps=norm_eps)
        self.attn_s = Attention(dim, num_heads, qkv_bias, attn_drop, drop, mode="spatial")
        self.attn_t = Attention(dim, num_heads, qkv_bias, attn_drop, drop, mode="temporal")
        self.norm2_s = nn.LayerNorm(dim, eps=norm_eps)
        self.norm2_t = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(dim * mlp_ratio)
        self.mlp_s = MLP(dim, hidden, dim, drop)
        self.mlp_t = MLP(dim, hidden, dim, drop)

    def _spatial(self, x: torch.Tensor, seqlen: int) -> torch.Tensor:
        x = x + self.attn_s(self.norm1_s(x), seqlen)
        return x + self.mlp_s(self.norm2_s(x))

    def _temporal(self, x: torch.Tensor, seqlen: int) -> torch.Tensor:
        x = x + self.attn_t(self.norm1_t(x), seqlen)
        return x + self.mlp_t(self.norm2_t(x))

    def forward(self, x: torch.Tensor, seqlen: int = 1) -> torch.Tensor:
        if self.st_mode == "stage_st":
            return self._temporal(self._spatial(x, seqlen), seqlen)
        return self._spatial(self._temporal(x, seqlen), seqlen)


class DSTformer(nn.Module):
    """The dual-stream spatio-temporal transformer (MotionBERT's backbone).

    Args:
        dim_in: channels per joint (3: x, y, confidence).
        dim_out: outputs of ``head`` (3D pose in pre-training; kept, unused, for mesh so that
            the released checkpoints load strictly).
        dim_feat: token width (512 in the released models).
        dim_rep: width of the representation after ``pre_logits`` (512).
        depth: number of (stage_st, stage_ts) block pairs (5).
        num_heads: attention heads (8).
        mlp_ratio: MLP hidden width over dim_feat (2 in the released models).
        num_joints: joints per frame (17).
        maxlen: longest clip (243): size of the temporal position embedding.
        qkv_bias, drop_rate, attn_drop_rate: as upstream (True, 0, 0).
        att_fuse: fuse the two streams per token with learned softmax weights (``ts_attn``);
            False averages them.
        norm_eps: LayerNorm epsilon (upstream 1e-6).

    Upstream's stochastic depth (drop_path) is 0 in every released config and not implemented.
    """

    def __init__(self, dim_in: int = 3, dim_out: int = 3, dim_feat: int = 512, dim_rep: int = 512, depth: int = 5,
                 num_heads: int = 8, mlp_ratio: float = 2.0, num_joints: int = 17, maxlen: int = 243,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0, att_fuse: bool = True,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.dim_out = dim_out
        self.dim_feat = dim_feat
        self.num_joints = num_joints
        self.maxlen = maxlen
        self.joints_embed = nn.Linear(dim_in, dim_feat)
        self.pos_drop = nn.Dropout(p=drop_rate)
        block = dict(dim=dim_feat, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                     attn_drop=attn_drop_rate, norm_eps=norm_eps)
        self.blocks_st = nn.ModuleList([Block(**block, st_mode="stage_st") for _ in range(depth)])
        self.blocks_ts = nn.ModuleList([Block(**block, st_mode="stage_ts") for _ in range(depth)])
        self.norm = nn.LayerNorm(dim_feat, eps=norm_eps)
        if dim_rep:
            self.pre_logits = nn.Sequential(OrderedDict([("fc", nn.Linear(dim_feat, dim_rep)), ("act", nn.Tanh())]))
        else:
            self.pre_logits = nn.Identity()
        rep = dim_rep or dim_feat
        self.head = nn.Linear(rep, dim_out) if dim_out > 0 else nn.Identity()
        self.temp_embed = nn.Parameter(torch.zeros(1, maxlen, 1, dim_feat))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_joints, dim_feat))
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)
        self.att_fuse = att_fuse
        if att_fuse:
            self.ts_attn = nn.ModuleList([nn.Linear(dim_feat * 2, 2) for _ in range(depth)])
            for layer in self.ts_attn:  # equal weights for both streams at initialisation, as upstream
                nn.init.zeros_(layer.weight)
                nn.init.constant_(layer.bias, 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[2] != self.num_joints:
            raise ValueError(f"DSTformer input must be (N, T, {self.num_joints}, C), got {tuple(x.shape)}")
        if not 1 <= x.shape[1] <= self.maxlen:
            raise ValueError(f"clips must have 1 to {self.maxlen} frames (the temporal embedding's length), "
                             f"got {x.shape[1]}; split longer sequences into windows")

    def forward(self, x: torch.Tensor, return_rep: bool = False) -> torch.Tensor:
        """(N, T, J, dim_in) -> (N, T, J, dim_out), or the representation (N, T, J, dim_rep)."""
        self._check_input(x)
        batch, frames, joints, channels = x.shape
        x = self.joints_embed(x.reshape(-1, joints, channels)) + self.pos_embed
        x = x.reshape(batch, frames, joints, -1) + self.temp_embed[:, :frames]
        x = self.pos_drop(x.reshape(batch * frames, joints, -1))
        for index, (block_st, block_ts) in enumerate(zip(self.blocks_st, self.blocks_ts)):
            x_st = block_st(x, frames)
            x_ts = block_ts(x, frames)
            if self.att_fuse:
                alpha = self.ts_attn[index](torch.cat([x_st, x_ts], dim=-1)).softmax(dim=-1)
                x = x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]
            else:
                x = (x_st + x_ts) * 0.5
        x = self.pre_logits(self.norm(x).reshape(batch, frames, joints, -1))
        return x if return_rep else self.head(x)

    def get_representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x, return_rep=True)


class SMPLRegressor(nn.Module):
    """MotionBERT's mesh head: per-frame pose and per-clip shape, one step from the mean.

    Pose: flatten the (17, dim_rep) features of a frame -> ``fc1`` -> ``bn1`` -> ReLU ->
    ``head_pose`` + ``init_pose`` (SPIN 6D, 24 joints). Shape: features averaged over the clip's
    frames -> ``fc2`` -> ``bn2`` -> ReLU -> ``head_shape`` + ``init_shape``, copied to every frame.
    ``init_pose`` / ``init_shape`` are SPIN's mean parameters (buffers; the checkpoint holds them).
    """

    def __init__(self, dim_rep: int = 512, num_joints: int = 17, hidden_dim: int = 1024, dropout_ratio: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout_ratio)
        self.fc1 = nn.Linear(num_joints * dim_rep, hidden_dim)
        self.fc2 = nn.Linear(num_joints * dim_rep, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim, momentum=0.1)
        self.bn2 = nn.BatchNorm1d(hidden_dim, momentum=0.1)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.head_pose = nn.Linear(hidden_dim, POSE_6D_SIZE)
        self.head_shape = nn.Linear(hidden_dim, NUM_BETAS)
        nn.init.xavier_uniform_(self.head_pose.weight, gain=0.01)
        nn.init.xavier_uniform_(self.head_shape.weight, gain=0.01)
        # identity rotations and the zero shape until a checkpoint (or SPIN's mean file) sets them
        identity = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(NUM_SMPL_JOINTS)
        self.register_buffer("init_pose", identity.unsqueeze(0))
        self.register_buffer("init_shape", torch.zeros(1, NUM_BETAS))

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, T, J, C) -> pose (N, T, 144) in SPIN's 6D layout, betas (N, T, 10)."""
        n, t = feat.shape[:2]
        feat = feat.reshape(n, t, -1)
        pose = self.relu1(self.bn1(self.fc1(self.dropout(feat.reshape(n * t, -1)))))
        shape = self.relu2(self.bn2(self.fc2(self.dropout(feat.mean(dim=1)))))  # (N, J*C): mean over frames
        pose = self.head_pose(pose) + self.init_pose
        betas = self.head_shape(shape) + self.init_shape
        return pose.reshape(n, t, -1), betas[:, None].expand(n, t, NUM_BETAS)


class MeshRegressor(nn.Module):
    """DSTformer + mesh head: (N, T, 17, 3) normalised keypoints -> SMPL.

    Args:
        backbone: the :class:`DSTformer` (defaults to the released mesh configuration).
        dim_rep, num_joints, hidden_dim, dropout_ratio: of the head (512, 17, 1024, 0.1 in
            ``configs/mesh/MB_ft_pw3d.yaml``; dropout acts in training only).
    """

    def __init__(self, backbone: DSTformer | None = None, dim_rep: int = 512, num_joints: int = 17,
                 hidden_dim: int = 1024, dropout_ratio: float = 0.1):
        super().__init__()
        self.backbone = backbone if backbone is not None else DSTformer()
        self.feat_J = num_joints
        self.head = SMPLRegressor(dim_rep, num_joints, hidden_dim, dropout_ratio)
        # The body model and the H36M regressor are the user's licensed files: held outside the
        # module tree (not in state_dict), moved along by _apply.
        self._body: tuple[nn.Module, nn.Module] | None = None

    def set_body_model(self, smpl: nn.Module, h36m_regressor: nn.Module) -> "MeshRegressor":
        """Attaches SMPL (a :class:`meshrec.body.SMPL`) and the (17, 6890)
        :class:`meshrec.body.JointRegressor` that :meth:`forward` needs."""
        self._body = (smpl, h36m_regressor)
        return self

    @property
    def body_model(self) -> nn.Module | None:
        return None if self._body is None else self._body[0]

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self._body is not None:
            for module in self._body:
                module._apply(fn, recurse)
        return self

    def regress(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, T, 17, 3) -> ``rotmat`` (N, T, 24, 3, 3) (root first, camera frame of the
        training data) and ``betas`` (N, T, 10) (equal over a clip's frames)."""
        n, t = x.shape[:2]
        feat = self.backbone.get_representation(x).reshape(n, t, self.feat_J, -1)
        pose, betas = self.head(feat)
        rotmat = matrix_from_6d_spin(pose.reshape(n, t, NUM_SMPL_JOINTS, 6))
        return {"rotmat": rotmat, "betas": betas}

    def body(self, rotmat: torch.Tensor, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SMPL of (B, 24, 3, 3) rotations and (B, 10) betas -> vertices (B, 6890, 3) and H36M
        joints (B, 17, 3), in millimetres as upstream."""
        if self._body is None:
            raise RuntimeError("MeshRegressor needs the body model: call set_body_model(smpl, h36m_regressor) "
                               "(meshrec.load_method('motionbert', ...) does this)")
        smpl, regressor = self._body
        out = smpl(betas=betas, body_pose=rotmat[:, 1:], global_orient=rotmat[:, :1], pose2rot=False)
        vertices = out.vertices * 1000.0
        return vertices, regressor(vertices)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Upstream's ``MeshRegressor.forward``: (N, T, 17, 3) -> ``[{"theta": (N, T, 82),
        "verts": (N, T, 6890, 3), "kp_3d": (N, T, 17, 3)}]`` (axis-angle + betas; millimetres)."""
        n, t = x.shape[:2]
        out = self.regress(x)
        rotmat, betas = out["rotmat"].reshape(n * t, NUM_SMPL_JOINTS, 3, 3), out["betas"].reshape(n * t, NUM_BETAS)
        vertices, joints = self.body(rotmat, betas)
        pose = matrix_to_axis_angle(rotmat).reshape(n * t, -1)
        return [{
            "theta": torch.cat([pose, betas], dim=1).reshape(n, t, -1),
            "verts": vertices.reshape(n, t, -1, 3),
            "kp_3d": joints.reshape(n, t, -1, 3),
        }]
