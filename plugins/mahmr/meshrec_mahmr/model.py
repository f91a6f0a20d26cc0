"""SAT-HMR / MA-HMR network with the upstream's parameter names.

One-stage multi-person mesh recovery: a DINOv2 ViT-B/14 encoder on scale-adaptive tokens
(SAT), a DAB-DETR decoder with 50 person queries, and per-query heads (SMPL pose in 6D, shape,
camera, confidence, box). MA-HMR adds a field-of-view head on the encoder's class token (the
focal length becomes a per-image prediction) and an 11th shape coefficient (the SMIL kid blend).

Scale-adaptive tokens, for an image resized so that its long side is ``input_size`` (1288) and
zero-padded to a multiple of 56:

1. 28-px patches ("level 1", a 46 x 46 grid at most), put in Z-order (Morton order: every 4
   consecutive patches form a 2 x 2 quad), bilinearly downsampled to 14 px and embedded by
   ``encoder_patch_proj[1]``, plus positions from ``encoder_pos_embeds`` (92 x 92) resized to 46.
2. The class token and the level-1 tokens go through ``encoder.additional_blocks`` (copies of
   DINOv2 blocks 0-2); ``scale_head`` gives each patch [p_human, scale].
3. Patches with p_human > 0.3 and scale < 0.5 (a small person) are re-embedded at 14 px
   ("level 0", 4 tokens each, ``encoder_patch_proj[0]``) and run through main blocks 0-2.
   Quads without any person token are max-pooled into one 56-px token ("level 2"); the
   remaining level-1 tokens are those of quads with a person, minus the level-0 patches.
4. [class, level 0, level 1, level 2] go through main blocks 3-11, the final norm and
   ``feature_proj``: the decoder memory, with sine positions plus ``level_embed``.

Outputs keep the upstream's meaning and units (``pred_boxes`` normalised by ``input_size``,
translations in metres, intrinsics in pixels of the resized image); :mod:`meshrec_mahmr.method`
converts them to meshrec's conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from meshrec.rotations import matrix_from_6d_spin
from meshrec.nn.vit import VisionTransformer
from meshrec_mahmr.decoder import MLP, DABDecoder, inverse_sigmoid, position_encoding_xy

__all__ = ["MAHMRConfig", "MAHMRNetwork", "PRESETS", "build_z_map", "metric_translation", "intrinsics_from_fov"]

# SPIN's smpl_mean_params.npz: only its shapes matter here, every checkpoint carries the values.
NUM_POSES = 24
MIN_FOV = 0.08  # radians; upstream's clamp (HumanFoV: 12 mm lens over a 300 mm sensor)
DEFAULT_FOV = math.pi / 3  # SAT-HMR's fixed 60 degree field of view


@dataclass(frozen=True)
class MAHMRConfig:
    """Architecture of one released model (the upstream's ``configs/models/*.yaml``).

    ``embed_dim`` / ``depth`` / ``num_heads`` describe the ViT; ``hidden_dim`` / ``nheads`` /
    ``dec_layers`` / ``dim_feedforward`` / ``num_queries`` the decoder. Small values are allowed
    (tests); the released models are ViT-B (768, 12, 12) and (768, 4, 6, 2048, 50).
    """

    input_size: int = 1288
    patch_size: int = 14
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    nheads: int = 4
    dec_layers: int = 6
    dim_feedforward: int = 2048
    num_queries: int = 50
    dim_shape: int = 11
    use_fov: bool = True
    use_dn: bool = False
    get_map_layer: int = 3
    sat_conf_thresh: float = 0.3
    sat_scale_thresh: float = 0.5
    depth_output: str = "transl"  # pred_depths[..., 0]: "transl" (MA-HMR) or "pelvis" (SAT-HMR)
    # MA-HMR stops the level-2 step when no quad of the whole batch is background, and then
    # keeps the level-1 tokens of small-person patches beside their level-0 tokens (its
    # sat_model.py:448); SAT-HMR always drops them. False = SAT-HMR's (the intended) behaviour.
    keep_sat_lvl1_without_background: bool = False

    def __post_init__(self):
        if self.input_size % (4 * self.patch_size):
            raise ValueError(f"input_size {self.input_size} must be a multiple of {4 * self.patch_size}")
        if self.depth_output not in ("transl", "pelvis"):
            raise ValueError(f"depth_output must be 'transl' or 'pelvis', got {self.depth_output!r}")

    @property
    def grid_sizes(self) -> tuple[float, float, float]:
        """Tokens per side at levels 0, 1, 2 (92, 46, 23 for 1288)."""
        return tuple(self.input_size / (self.patch_size << level) for level in range(3))


PRESETS: dict[str, MAHMRConfig] = {
    # MA-HMR configs/models/fov_kid.yaml: stage 3, the demo and every fine-tune
    "mahmr_stage3": MAHMRConfig(dim_shape=11, use_fov=True, use_dn=False),
    # configs/models/fov.yaml (stage 2)
    "mahmr_stage2": MAHMRConfig(dim_shape=10, use_fov=True, use_dn=False),
    # configs/models/default.yaml (stage 1; trained with denoising queries, hence dn_enc)
    "mahmr_stage1": MAHMRConfig(dim_shape=10, use_fov=False, use_dn=True),
    # SAT-HMR's default.yaml (sat_644.pth): fixed 60 degree FoV, depth output is the pelvis z
    "sat_644": MAHMRConfig(dim_shape=10, use_fov=False, use_dn=True, depth_output="pelvis"),
}


def build_z_map(depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Morton index of every cell of a 2^depth square grid, and the cells' y and x (int64).

    Bit i of x goes to bit 2i, bit i of y to bit 2i + 1 (x in the low bit)."""
    size = 1 << depth
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    z_map = torch.zeros((size, size), dtype=torch.int64)
    for bit in range(depth):
        z_map |= ((xs >> bit) & 1) << (2 * bit) | ((ys >> bit) & 1) << (2 * bit + 1)
    return z_map, ys.clone(), xs.clone()


def intrinsics_from_fov(fov: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """(B,) vertical FoV in radians, image heights and widths in pixels -> (B, 3, 3) K with
    f = H / (2 tan(fov / 2)) and the principal point at the image centre. The FoV is clamped to
    at least 0.08 rad as upstream."""
    focal = heights / (2 * torch.tan(fov.clamp(min=MIN_FOV) / 2))
    K = torch.zeros(fov.shape[0], 3, 3, dtype=fov.dtype, device=fov.device)
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal
    K[:, 0, 2] = widths / 2
    K[:, 1, 2] = heights / 2
    K[:, 2, 2] = 1
    return K


def metric_translation(cam: torch.Tensor, focal: torch.Tensor, input_size: int) -> torch.Tensor:
    """Camera head output (..., 3) = (c_x, c_y, c_s) -> translation (..., 3) in metres.

    s = 2 sigmoid(c_s) + 1e-6, t_xy = c_xy / s, t_z = 2 f / (s * input_size): a weak-perspective
    camera on the whole (input_size)-pixel square whose depth follows from the focal ``focal``
    (broadcast against cam[..., 0]), in pixels of the resized image.
    """
    scale = 2 * cam[..., 2:].sigmoid() + 1e-6
    return torch.cat([cam[..., :2] / scale, 2 * focal[..., None] / (scale * input_size)], dim=-1)


@dataclass
class EncoderOutput:
    """The decoder memory and what the token selection chose.

    features: (sum(L), C) projected tokens of all images; pos: (sum(L), C) their positional
    embedding (sine + level embedding); lens: L per image; scale_map: (sum(L1), 2) [p_human,
    scale] per 28-px patch in Z-order; fov: (B, 1) raw FoV head output or None; levels / pos_y /
    pos_x: per image (L,) token level (0: 14 px, 1: 28 px, 2: 56 px) and normalised centre.
    """

    features: torch.Tensor
    pos: torch.Tensor
    lens: list[int]
    scale_map: torch.Tensor
    scale_map_lens: list[int]
    scale_map_pos: tuple[torch.Tensor, torch.Tensor]
    fov: torch.Tensor | None
    levels: list[torch.Tensor] = field(default_factory=list)
    pos_y: list[torch.Tensor] = field(default_factory=list)
    pos_x: list[torch.Tensor] = field(default_factory=list)
    class_tokens: torch.Tensor | None = None


class MAHMRNetwork(nn.Module):
    """The SAT-HMR / MA-HMR network (upstream ``models/sat_model.py: Model``, inference path).

    Args:
        config: an :class:`MAHMRConfig` or the name of a preset ("mahmr_stage3", "mahmr_stage2",
            "mahmr_stage1", "sat_644").
        **overrides: fields of the config to change (e.g. small dims in tests).

    Call it with a list of B normalised images (3, H_i, W_i), H_i and W_i multiples of 56 and at
    most ``input_size``, and their (height, width) before padding.
    """

    def __init__(self, config: MAHMRConfig | str = "mahmr_stage3", **overrides: Any):
        super().__init__()
        if isinstance(config, str):
            if config not in PRESETS:
                raise ValueError(f"unknown MA-HMR config {config!r}; presets: {sorted(PRESETS)}")
            config = PRESETS[config]
        config = replace(config, **overrides) if overrides else config
        self.config = cfg = config
        C, D = cfg.embed_dim, cfg.hidden_dim
        focal = cfg.input_size / (2 * math.tan(DEFAULT_FOV / 2))
        self.register_buffer("cam_intrinsics", torch.tensor(
            [[focal, 0.0, cfg.input_size / 2], [0.0, focal, cfg.input_size / 2], [0.0, 0.0, 1.0]]))
        self.register_buffer("mean_pose", torch.zeros(NUM_POSES * 6))
        self.register_buffer("mean_shape", torch.zeros(cfg.dim_shape))
        z_map, ys, xs = build_z_map(math.ceil(math.log2(cfg.grid_sizes[1])))
        self.register_buffer("z_order_map", z_map)
        self.register_buffer("y_coords", ys)
        self.register_buffer("x_coords", xs)

        self.encoder = VisionTransformer(patch_size=cfg.patch_size, embed_dim=C, depth=cfg.depth,
                                         num_heads=cfg.num_heads, embeddings=False)
        self.encoder.additional_blocks = nn.ModuleList(
            type(block)(C, cfg.num_heads) for block in self.encoder.blocks[:cfg.get_map_layer])
        self.enc_inter_norm = nn.LayerNorm(C, eps=1e-6)
        self.scale_head = MLP(C, C, 2, 4)
        self.encoder_patch_proj = nn.ModuleList(
            nn.Conv2d(3, C, kernel_size=cfg.patch_size, stride=cfg.patch_size) for _ in range(2))
        self.level_embed = nn.Parameter(torch.randn(3, D))
        if cfg.use_fov:
            self.fov_head = MLP(C, C, 1, 4)
            nn.init.xavier_uniform_(self.fov_head.layers[-1].weight, gain=0.1)
            nn.init.constant_(self.fov_head.layers[-1].bias, math.pi / 6)
        self.encoder_cr_token = nn.Parameter(torch.zeros(1, C))
        grid0 = int(cfg.grid_sizes[0])
        self.encoder_pos_embeds = nn.Parameter(torch.randn(grid0, grid0, C) * 0.02)

        self.decoder = DABDecoder(D, cfg.nheads, cfg.dec_layers, cfg.dim_feedforward)
        self.feature_proj = nn.Linear(C, D)
        self.bbox_embed = nn.ModuleList(MLP(D, D, 4, 3) for _ in range(cfg.dec_layers))
        for head in self.bbox_embed:
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        self.decoder.decoder.bbox_embed = self.bbox_embed  # upstream registers them twice
        self.pose_head = nn.ModuleList(MLP(D, D, NUM_POSES * 6, 6) for _ in range(cfg.dec_layers))
        self.shape_head = nn.ModuleList(MLP(D, D, cfg.dim_shape, 5) for _ in range(cfg.dec_layers))
        self.cam_head = MLP(D, D // 2, 3, 3)
        self.conf_head = nn.Linear(D, 1)
        nn.init.constant_(self.conf_head.bias, -math.log(99.0))
        self.refpoint_embed = nn.Embedding(cfg.num_queries, 4)
        self.tgt_embed = nn.Embedding(cfg.num_queries, D)
        if cfg.use_dn:  # denoising-query encoder of training; kept so the checkpoints load
            self.dn_enc = nn.Linear(NUM_POSES * 3 + cfg.dim_shape, D)
        self._lvl1_pos_cache: tuple[tuple, torch.Tensor] | None = None

    # ----------------------------------------------------------------------------- encoder
    def level1_position_table(self) -> torch.Tensor:
        """``encoder_pos_embeds`` bicubically resized to the level-1 grid (46 x 46 x C).

        Cached for the current weights only (one entry, keyed by the parameter's version, device
        and dtype): upstream caches it on the first evaluation forward and never refreshes it."""
        table = self.encoder_pos_embeds
        key = (table._version, table.data_ptr(), table.device, table.dtype)
        if self.training or self._lvl1_pos_cache is None or self._lvl1_pos_cache[0] != key:
            side = int(self.config.grid_sizes[1])
            resized = F.interpolate(table.unsqueeze(0).permute(0, 3, 1, 2), size=(side, side), mode="bicubic",
                                    antialias=self.encoder.interpolate_antialias)[0].permute(1, 2, 0)
            if self.training:
                return resized
            self._lvl1_pos_cache = (key, resized.detach())
        return self._lvl1_pos_cache[1]

    def _apply(self, fn, recurse=True):
        self._lvl1_pos_cache = None
        return super()._apply(fn, recurse)

    def zorder_patches(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(3, H, W) -> 28-px patches in Z-order (L1, 3, 28, 28), their Morton index, y and x."""
        size = 2 * self.config.patch_size
        channels, height, width = image.shape
        rows, cols = height // size, width // size
        if max(rows, cols) > self.z_order_map.shape[0]:
            raise ValueError(f"image {height}x{width} is larger than the model's input size {self.config.input_size}")
        patches = image.view(channels, rows, size, cols, size).permute(1, 3, 0, 2, 4).flatten(0, 1)
        z = self.z_order_map[:rows, :cols].flatten()
        order = torch.argsort(z)
        return (patches[order], z[order], self.y_coords[:rows, :cols].flatten()[order],
                self.x_coords[:rows, :cols].flatten()[order])

    def _blocks(self, tokens: list[torch.Tensor], blocks: nn.ModuleList) -> list[torch.Tensor]:
        """Runs ``blocks`` on variable-length sequences (each (L_i, C)), packed block-diagonally."""
        lens = [len(t) for t in tokens]
        packed = torch.cat(tokens)[None]
        for block in blocks:
            packed = block(packed, lens)
        return list(packed[0].split(lens))

    def select_tokens(self, scale_map: torch.Tensor, lens: Sequence[int]) -> dict[str, torch.Tensor]:
        """Token selection from the (sum(L1), 2) scale map of Z-ordered level-1 patches.

        Returns boolean (sum(L1),) masks: ``sat`` (re-embedded at 14 px), ``keep`` (kept as 28-px
        tokens), ``pool`` (background quads pooled 4 -> 1 into 56-px tokens)."""
        valid = scale_map[:, 0] > self.config.sat_conf_thresh
        sat = valid & (scale_map[:, 1] < self.config.sat_scale_thresh)
        if any(n % 4 for n in lens):
            raise ValueError(f"level-1 token counts must be multiples of 4 (whole quads), got {list(lens)}")
        quad_valid = valid.view(-1, 4).any(dim=1).repeat_interleave(4)
        pool = ~quad_valid
        keep = quad_valid & ~sat
        if self.config.keep_sat_lvl1_without_background and not bool(pool.any()):
            keep = torch.ones_like(keep)
        return {"valid": valid, "sat": sat, "keep": keep, "pool": pool}

    def forward_encoder(self, images: Sequence[torch.Tensor]) -> EncoderOutput:
        """Scale-adaptive tokens -> decoder memory (see the module docstring)."""
        cfg = self.config
        grid0, grid1, grid2 = cfg.grid_sizes
        cr = self.encoder_cr_token
        patches, zorders, pos_y1, pos_x1, lens1 = [], [], [], [], []
        for image in images:
            p, z, y, x = self.zorder_patches(image)
            patches.append(p); zorders.append(z); pos_y1.append(y); pos_x1.append(x); lens1.append(len(p))
        patches28 = torch.cat(patches)
        pos_y1, pos_x1 = torch.cat(pos_y1), torch.cat(pos_x1)
        half = cfg.patch_size
        lvl1 = self.encoder_patch_proj[1](F.interpolate(patches28, size=(half, half), mode="bilinear",
                                                        align_corners=False)).flatten(1)
        lvl1 = lvl1 + self.level1_position_table()[pos_y1, pos_x1]

        seqs = self._blocks([torch.cat([cr, t]) for t in lvl1.split(lens1)], self.encoder.additional_blocks)
        cr_tokens = [s[:1] for s in seqs]
        lvl1 = torch.cat([s[1:] for s in seqs])
        scale_map = self.scale_head(self.enc_inter_norm(lvl1)).sigmoid()
        masks = self.select_tokens(scale_map, lens1)
        sat, keep, pool = masks["sat"], masks["keep"], masks["pool"]

        def per_image(mask: torch.Tensor, divisor: int = 1) -> list[int]:
            return [int(m.sum()) // divisor for m in mask.split(lens1)]

        # level 0: the 28-px pixels of small-person patches as 2 x 2 tokens (TL, TR, BL, BR)
        lens0 = [4 * n for n in per_image(sat)]
        lvl0 = self.encoder_patch_proj[0](patches28[sat]).permute(0, 2, 3, 1).flatten(0, 2)
        offsets_y = torch.tensor([0, 0, 1, 1], device=lvl0.device)
        offsets_x = torch.tensor([0, 1, 0, 1], device=lvl0.device)
        pos_y0 = ((pos_y1[sat] << 1)[:, None] + offsets_y).flatten()
        pos_x0 = ((pos_x1[sat] << 1)[:, None] + offsets_x).flatten()
        lvl0 = lvl0 + self.encoder_pos_embeds[pos_y0, pos_x0]
        # the level-0 pass starts from the initial class token (its output is dropped)
        seqs0 = self._blocks([torch.cat([cr, t]) for t in lvl0.split(lens0)], self.encoder.blocks[:cfg.get_map_layer])
        lvl0 = torch.cat([s[1:] for s in seqs0])

        # level 2: each background quad max-pooled into one token
        lens2 = per_image(pool, 4)
        lvl2 = lvl1[pool].view(-1, 4, lvl1.shape[-1]).amax(dim=1)
        pos_y2, pos_x2 = pos_y1[pool][::4] >> 1, pos_x1[pool][::4] >> 1
        lens1k = per_image(keep)
        lvl1, pos_y1k, pos_x1k = lvl1[keep], pos_y1[keep], pos_x1[keep]

        dtype = lvl1.dtype
        levels = [(lvl0, pos_y0, pos_x0, lens0, grid0), (lvl1, pos_y1k, pos_x1k, lens1k, grid1),
                  (lvl2, pos_y2, pos_x2, lens2, grid2)]
        split = [(t.split(n), ((y.to(dtype) + 0.5) / g).split(n), ((x.to(dtype) + 0.5) / g).split(n))
                 for t, y, x, n, g in levels]
        sequences, pos_y, pos_x, level_ids = [], [], [], []
        for index in range(len(images)):
            sequences.append(torch.cat([cr_tokens[index]] + [s[0][index] for s in split]))
            pos_y.append(torch.cat([s[1][index] for s in split]))
            pos_x.append(torch.cat([s[2][index] for s in split]))
            level_ids.append(torch.cat([torch.full((len(s[0][index]),), lvl, dtype=torch.int64, device=lvl1.device)
                                        for lvl, s in enumerate(split)]))
        seqs = self._blocks(sequences, self.encoder.blocks[cfg.get_map_layer:])
        class_tokens = torch.cat([s[:1] for s in seqs])  # before the final norm, as upstream
        fov = self.fov_head(class_tokens) if cfg.use_fov else None
        features = self.feature_proj(self.encoder.norm(torch.cat([s[1:] for s in seqs])))
        pos = position_encoding_xy(torch.cat(pos_x), torch.cat(pos_y), cfg.hidden_dim)
        pos = pos + self.level_embed[torch.cat(level_ids)]
        return EncoderOutput(features=features, pos=pos, lens=[len(s) - 1 for s in seqs], scale_map=scale_map,
                             scale_map_lens=lens1, scale_map_pos=(pos_y1, pos_x1), fov=fov, levels=level_ids,
                             pos_y=pos_y, pos_x=pos_x, class_tokens=class_tokens)

    # ----------------------------------------------------------------------------- full model
    def intrinsics(self, img_sizes: torch.Tensor, fov: torch.Tensor | None) -> torch.Tensor:
        """(B, 2) (height, width) of the resized, unpadded images -> (B, 3, 3) K in those pixels:
        the predicted FoV's focal (or the fixed 60 degree one) and the image centre."""
        img_sizes = img_sizes.to(self.cam_intrinsics)
        K = self.cam_intrinsics.expand(len(img_sizes), 3, 3).clone()
        K[:, 0, 2] = K[:, 0, 2] * img_sizes[:, 1] / self.config.input_size
        K[:, 1, 2] = K[:, 1, 2] * img_sizes[:, 0] / self.config.input_size
        if fov is not None:
            focal = img_sizes[:, 0] / (2 * torch.tan(fov[:, 0].clamp(min=MIN_FOV) / 2))
            K[:, 0, 0] = focal
            K[:, 1, 1] = focal
        return K

    def forward(self, images: Sequence[torch.Tensor], img_sizes: torch.Tensor | Sequence[Sequence[int]]) -> dict[str, Any]:
        """Final-layer predictions of all queries.

        Args:
            images: B normalised images (3, H_i, W_i), padded to multiples of 56.
            img_sizes: (B, 2) height and width of each image before padding, pixels.

        Returns a dict (Q queries):
            pred_confs (B, Q, 1) sigmoid confidence; pred_boxes (B, Q, 4) cx, cy, w, h divided by
            input_size; pred_poses_6d (B, Q, 144) SPIN-layout 6D; pred_rotmats (B, Q, 24, 3, 3);
            pred_betas (B, Q, dim_shape); pred_cams (B, Q, 3) raw camera head; pred_transl
            (B, Q, 3) metres; pred_intrinsics (B, 3, 3) in resized pixels; pred_fov (B,) radians
            (clamped) or None; hs (layers, B, Q, C) decoder outputs; encoder (EncoderOutput).
        """
        if not isinstance(images, (list, tuple)) or not images:
            raise TypeError("images must be a non-empty list of (3, H, W) tensors")
        sizes = torch.as_tensor(img_sizes, dtype=torch.float64).reshape(len(images), 2)
        enc = self.forward_encoder(images)
        K = self.intrinsics(sizes.to(enc.features.device), enc.fov)
        batch, Q = len(images), self.config.num_queries
        hs, references = self.decoder(enc.features, enc.lens, self.tgt_embed.weight.repeat(batch, 1), Q,
                                      self.refpoint_embed.weight.repeat(batch, 1), enc.pos)
        last = hs[-1]
        delta = self.bbox_embed[-1](last)
        boxes = (delta + inverse_sigmoid(references[-1])).sigmoid()
        # residuals accumulate layer by layer from the mean (same order of additions as upstream)
        pose, betas = self.mean_pose.to(last.dtype), self.mean_shape.to(last.dtype)
        for pose_head, shape_head, h in zip(self.pose_head, self.shape_head, hs):
            pose = pose + pose_head(h)
            betas = betas + shape_head(h)
        cams = self.cam_head(last)
        transl = metric_translation(cams, K[:, None, 0, 0], self.config.input_size)
        return {
            "pred_confs": self.conf_head(last).sigmoid(), "pred_boxes": boxes, "pred_poses_6d": pose,
            "pred_rotmats": matrix_from_6d_spin(pose.unflatten(-1, (NUM_POSES, 6))), "pred_betas": betas,
            "pred_cams": cams, "pred_transl": transl, "pred_intrinsics": K,
            "pred_fov": None if enc.fov is None else enc.fov[:, 0].clamp(min=MIN_FOV),
            "hs": hs, "references": references, "encoder": enc,
        }
