"""EgoHMR stage 2 (``models/egohmr/egohmr.py``): a scene-conditioned pose diffusion model whose
denoiser is a modulated graph convolution network over the 24 SMPL joints.

Per joint, the denoiser sees ``[image feature * visible_j (2048), scene (512), translation (128),
camera (6), x_t embedding (512), timestep embedding (512)]`` = 3718 numbers and predicts the
clean pose x0 (24 x 6D, the "diffusion" 6D layout = :func:`meshrec.nn.matrix_from_6d_spin`,
normalised by the training set's ``Xmean`` / ``Xstd``). Betas come from a deterministic head.

Parameter names are the upstream's (``input_process``, ``sequence_pos_encoder``,
``embed_timestep``, ``backbone``, ``scene_enc``, ``transl_enc``, ``diffusion_model``,
``beta_layer``). The graph's fixed adjacency is not in the checkpoint; :func:`smpl_adjacency`
rebuilds it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from meshrec.nn import resnet50
from meshrec.rotations import matrix_from_6d_spin
from meshrec_egohmr.layers import ResnetPointnet, image_features
from meshrec_egohmr.stage1 import IMAGE_FEATURES, SCENE_FEATURES, camera_features

__all__ = [
    "OPENPOSE_TO_SMPL",
    "OPENPOSE_TO_SMPL_LOOSE",
    "SMPL_EDGES",
    "EgoHMRDenoiser",
    "ModulatedGCN",
    "ModulatedGraphConv",
    "smpl_adjacency",
    "visibility_from_openpose",
]

# SMPL kinematic tree (utils/other_utils.py SMPL_EDGES)
SMPL_EDGES = ((0, 1), (0, 2), (0, 3), (1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9), (7, 10), (8, 11), (9, 12),
              (9, 13), (9, 14), (12, 15), (13, 16), (14, 17), (16, 18), (17, 19), (18, 20), (19, 21), (20, 22),
              (21, 23))
# Visibility of each SMPL joint = detection of this OpenPose BODY_25 joint (EgoHMR.__init__).
OPENPOSE_TO_SMPL = (8, 12, 9, 8, 13, 10, 8, 14, 11, 8, 14, 11, 0, 5, 2, 0, 5, 2, 6, 3, 7, 4, 7, 4)
# pelvis_vis_loosen=True (the test default): hips follow the knees, the neck joint 12 the neck.
OPENPOSE_TO_SMPL_LOOSE = (8, 13, 10, 8, 13, 10, 8, 14, 11, 8, 14, 11, 1, 5, 2, 0, 5, 2, 6, 3, 7, 4, 7, 4)
TRANSL_FEATURES = 128
CONDITION_FEATURES = IMAGE_FEATURES + SCENE_FEATURES + TRANSL_FEATURES + 6  # 2694
EMBED = 512


def smpl_adjacency(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The denoiser's fixed adjacency (24, 24): the SMPL tree made symmetric, each row divided by
    the joint's degree, then ones on the diagonal (as ``EgoHMR.__init__`` builds ``adj_mx``)."""
    adjacency = torch.zeros(24, 24, dtype=torch.float64)
    for a, b in SMPL_EDGES:
        adjacency[a, b] = adjacency[b, a] = 1
    adjacency = adjacency / adjacency.sum(1, keepdim=True)
    adjacency.fill_diagonal_(1)
    return adjacency.to(dtype)


def visibility_from_openpose(keypoints: torch.Tensor, loosen: bool = True) -> torch.Tensor:
    """(B, 24) bool: EgoHMR's per-SMPL-joint visibility from OpenPose BODY_25 keypoints (B, 25, 3)
    (a joint is visible when its OpenPose joint has confidence > 0; the pelvis, OpenPose 8, and
    so the spine joints 0, 3, 6, 9, always count as visible)."""
    detected = keypoints[..., 2] > 0
    detected = detected.clone()
    detected[:, 8] = True
    table = OPENPOSE_TO_SMPL_LOOSE if loosen else OPENPOSE_TO_SMPL
    return detected[:, list(table)]


class ModulatedGraphConv(nn.Module):
    """Zou & Tang's modulated graph convolution (upstream ``ModulatedGraphConv``).

    out = diag(A) (M * X W0) + offdiag(A) (M * X W1) + bias, with A = sym(A0 + adj2) where A0 is
    the fixed adjacency and adj2 the learnt offset; sym(B) = (B + B^T) / 2. A0 is kept in float64
    outside the state dict (a plain attribute upstream too) and cast to the input's dtype and
    device on use, so ``.float()`` / ``.double()`` never round it (float32 gives upstream's values).
    """

    def __init__(self, in_features: int, out_features: int, adjacency: torch.Tensor):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.W = nn.Parameter(torch.zeros(2, in_features, out_features))
        nn.init.xavier_uniform_(self.W.data, gain=1.414)
        self.M = nn.Parameter(torch.zeros(adjacency.shape[0], out_features))
        nn.init.xavier_uniform_(self.M.data, gain=1.414)
        self.adj = adjacency.detach().to("cpu", torch.float64).clone()
        self._adj_cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self.adj2 = nn.Parameter(torch.full(adjacency.shape, 1e-6, dtype=torch.float32))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-1 / math.sqrt(out_features), 1 / math.sqrt(out_features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.matmul(x, self.W[0])
        h1 = torch.matmul(x, self.W[1])
        key = (x.device, x.dtype)
        if key not in self._adj_cache:
            self._adj_cache[key] = self.adj.to(x.device, x.dtype)
        adjacency = self._adj_cache[key] + self.adj2
        adjacency = (adjacency.T + adjacency) / 2
        eye = torch.eye(adjacency.shape[0], dtype=x.dtype, device=x.device)
        out = torch.matmul(adjacency * eye, self.M * h0) + torch.matmul(adjacency * (1 - eye), self.M * h1)
        return out + self.bias.view(1, 1, -1)


class _GraphConv(nn.Module):
    """ModulatedGraphConv -> BatchNorm1d over channels -> ReLU (upstream ``_GraphConv``; its
    dropout has p = 0 in the released model and is omitted)."""

    def __init__(self, adjacency: torch.Tensor, in_features: int, out_features: int):
        super().__init__()
        self.gconv = ModulatedGraphConv(in_features, out_features, adjacency)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.gconv(x).transpose(1, 2)).transpose(1, 2))


class _ResGraphConv(nn.Module):
    def __init__(self, adjacency: torch.Tensor, features: int):
        super().__init__()
        self.gconv1 = _GraphConv(adjacency, features, features)
        self.gconv2 = _GraphConv(adjacency, features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gconv2(self.gconv1(x))


class ModulatedGCN(nn.Module):
    """Input graph conv (in -> hid), ``num_layers`` residual blocks, output graph conv (hid ->
    out, no BN / ReLU). (B, 24, in) -> (B, 24, out)."""

    def __init__(self, adjacency: torch.Tensor, in_dim: int, hid_dim: int = 1024, out_dim: int = 6,
                 num_layers: int = 4):
        super().__init__()
        self.gconv_input = nn.Sequential(_GraphConv(adjacency, in_dim, hid_dim))
        self.gconv_layers = nn.Sequential(*[_ResGraphConv(adjacency, hid_dim) for _ in range(num_layers)])
        self.gconv_output = ModulatedGraphConv(hid_dim, out_dim, adjacency)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gconv_output(self.gconv_layers(self.gconv_input(x)))


def sinusoidal_table(length: int = 5000, dim: int = EMBED) -> torch.Tensor:
    """MDM's ``PositionalEncoding.pe`` (length, 1, dim): sin on even, cos on odd channels."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table[:, None].float()


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int = EMBED, length: int = 5000):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(length, dim))


class TimestepEmbedder(nn.Module):
    """pe[t] -> Linear -> SiLU -> Linear; shares ``sequence_pos_encoder`` with the parent (so
    the table appears twice in the state dict, as upstream)."""

    def __init__(self, dim: int, sequence_pos_encoder: PositionalEncoding):
        super().__init__()
        self.sequence_pos_encoder = sequence_pos_encoder
        self.time_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(B,) integer timesteps of the original 50-step process -> (B, dim)."""
        return self.time_embed(self.sequence_pos_encoder.pe[timesteps, 0])


class InputProcess(nn.Module):
    def __init__(self, input_dim: int = 6, latent_dim: int = EMBED):
        super().__init__()
        self.poseEmbedding = nn.Linear(input_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.poseEmbedding(x)


class FCHeadBeta(nn.Module):
    """Linear(2694 -> 1024) -> ReLU -> Linear(1024 -> 10) + mean betas (buffer ``init_betas``)."""

    def __init__(self, in_dim: int = CONDITION_FEATURES):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, 1024), nn.ReLU(inplace=False), nn.Linear(1024, 10))
        nn.init.xavier_uniform_(self.layers[2].weight, gain=0.02)
        self.register_buffer("init_betas", torch.zeros(1, 10))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.layers(feats) + self.init_betas


class TranslEnc(nn.Module):
    def __init__(self, in_dim: int = 3, out_dim: int = TRANSL_FEATURES):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_dim, 64), nn.ReLU(inplace=False), nn.Linear(64, out_dim))

    def forward(self, transl: torch.Tensor) -> torch.Tensor:
        return self.layers(transl)


class EgoHMRDenoiser(nn.Module):
    """EgoHMR's stage-2 network (upstream class ``EgoHMR`` without SMPL, COAP and losses).

    Buffers ``Xmean`` / ``Xstd`` (144, non-persistent: they come from ``preprocess_stats.npz``)
    de-normalise the diffused pose.
    """

    def __init__(self, hid_dim: int = 1024, num_layers: int = 4):
        super().__init__()
        self.input_process = InputProcess(6, EMBED)
        self.sequence_pos_encoder = PositionalEncoding(EMBED)
        self.embed_timestep = TimestepEmbedder(EMBED, self.sequence_pos_encoder)
        self.backbone = resnet50()
        self.scene_enc = ResnetPointnet(out_dim=SCENE_FEATURES, hidden_dim=256)
        self.transl_enc = TranslEnc(3, TRANSL_FEATURES)
        self.diffusion_model = ModulatedGCN(smpl_adjacency(torch.float64), CONDITION_FEATURES + 2 * EMBED, hid_dim, 6, num_layers)
        self.beta_layer = FCHeadBeta(CONDITION_FEATURES)
        self.register_buffer("Xmean", torch.zeros(144), persistent=False)
        self.register_buffer("Xstd", torch.ones(144), persistent=False)

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Sets the pose normalisation (``preprocess_stats.npz`` ``Xmean`` / ``Xstd``, 144 each)."""
        mean, std = torch.as_tensor(mean).reshape(-1), torch.as_tensor(std).reshape(-1)
        if mean.shape != (144,) or std.shape != (144,):
            raise ValueError(f"Xmean and Xstd must hold 144 values each, got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()):
            raise ValueError("Xstd must be positive")
        self.Xmean.copy_(mean)
        self.Xstd.copy_(std)

    def condition(self, images: torch.Tensor, scene_points: torch.Tensor, transl: torch.Tensor, focal: torch.Tensor,
                  principal: torch.Tensor, box_centre: torch.Tensor, box_size: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything that does not depend on x_t or t.

        Args:
            images: (B, 3, 224, 224) crops, ImageNet-normalised RGB.
            scene_points: (B, N, 3) scene cube in the camera frame, metres; the encoder sees them
                relative to ``transl`` (``scene_cano=True``, the released model).
            transl: (B, 3) body translation (stage 1's), camera frame, metres.
            focal, principal, box_centre, box_size: as :func:`meshrec_egohmr.stage1.camera_features`.

        Returns ``image`` (B, 2048), ``rest`` (B, 646) = [scene, transl feature, camera],
        ``betas`` (B, 10) and ``scene_local`` (B, N, 3) (the points relative to ``transl``).
        """
        img = image_features(self.backbone, images)
        scene_local = scene_points - transl[:, None]
        rest = torch.cat([self.scene_enc(scene_local), self.transl_enc(transl),
                          camera_features(focal, principal, box_centre, box_size)], dim=1)
        betas = self.beta_layer(torch.cat([img, rest], dim=1))
        return {"image": img, "rest": rest, "betas": betas, "scene_local": scene_local}

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, torch.Tensor],
                visible: torch.Tensor, diffuse_fuse: bool = True) -> torch.Tensor:
        """Predicted clean pose x0 (B, 144), normalised, diffusion 6D layout.

        Args:
            x_t: (B, 144) noisy normalised pose; timesteps: (B,) integer steps of the original
                50-step process (already mapped back from a respaced index).
            condition: :meth:`condition`'s output (rows may repeat one item's condition).
            visible: (B, 24) bool joint visibility; the image feature of invisible joints is zeroed.
            diffuse_fuse: also run the denoiser with no image feature at all and keep its output for
                the invisible joints (EgoHMR's test-time default).
        """
        batch = x_t.shape[0]
        image = condition["image"][:, None].expand(batch, 24, -1)
        rest = condition["rest"][:, None].expand(batch, 24, -1)
        tail = torch.cat([self.input_process(x_t.reshape(batch, 24, 6)),
                          self.embed_timestep(timesteps)[:, None].expand(batch, 24, -1)], dim=-1)
        masked = image * visible[..., None].to(image.dtype)
        if not diffuse_fuse:
            return self.diffusion_model(torch.cat([masked, rest, tail], dim=-1)).reshape(batch, -1)
        both = torch.cat([torch.cat([masked, rest, tail], dim=-1),
                          torch.cat([torch.zeros_like(image), rest, tail], dim=-1)])
        conditioned, scene_only = self.diffusion_model(both).split(batch)
        fused = torch.where(visible[..., None], conditioned, scene_only)
        return fused.reshape(batch, -1)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised poses (..., 144) -> rotation matrices (..., 24, 3, 3)."""
        pose = x * self.Xstd + self.Xmean
        return matrix_from_6d_spin(pose.reshape(*x.shape[:-1], 24, 6))
