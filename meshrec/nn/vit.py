"""A plain Vision Transformer with DINOv2's parameter names, and block-diagonal attention.

The module names follow facebookresearch/dinov2 (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``mask_token``, ``blocks.{i}.norm1 / attn.qkv / attn.proj / ls1.gamma / norm2 /
mlp.fc1 / mlp.fc2 / ls2.gamma``, ``norm``), so DINOv2's released ``dinov2_vit*14_pretrain.pth``
files load strictly with :meth:`VisionTransformer.load_state_dict`, and so do the encoders of
methods built on it (SAT-HMR, MA-HMR, Multi-HMR).

Variable-length sequences ("nested" batches, xFormers' ``BlockDiagonalMask`` in DINOv2) are
packed into one ``(1, sum(L), C)`` tensor with their lengths; :func:`block_diagonal_attention`
lets every token attend only to tokens of its own sequence. It uses PyTorch's
``scaled_dot_product_attention``: one call with a boolean block mask when the packed batch is
small, one call per sequence when the mask would be large (the mask costs sum(L)^2 memory, the
per-sequence calls only each L^2), and xFormers' memory-efficient kernel when it is installed
and the tensors are on a GPU. xFormers is never required.

Shapes: B batch, N tokens, C channels, H heads, D = C / H.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "Attention",
    "Block",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "VisionTransformer",
    "block_diagonal_attention",
    "block_diagonal_mask",
    "vit_base",
]

# Largest packed query x key count for which one masked SDPA call is used (about 16 MB of
# booleans); beyond it the sequences are attended one by one.
MASKED_CALL_LIMIT = 1 << 24
_MASK_CACHE_SIZE = 16
_mask_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()


def _lengths(lengths: Sequence[int] | torch.Tensor) -> tuple[int, ...]:
    values = tuple(int(n) for n in (lengths.tolist() if torch.is_tensor(lengths) else lengths))
    if any(n < 0 for n in values):
        raise ValueError(f"sequence lengths must be non-negative, got {values}")
    return values


def block_diagonal_mask(q_lens: Sequence[int], kv_lens: Sequence[int] | None = None,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (sum(q_lens), sum(kv_lens)) mask, True where query i may attend to key j
    (both in the same sequence). Masks are cached (at most 16, least recently used dropped),
    since the token counts of scale-adaptive tokens change from image to image."""
    q_lens = _lengths(q_lens)
    kv_lens = q_lens if kv_lens is None else _lengths(kv_lens)
    if len(q_lens) != len(kv_lens):
        raise ValueError(f"{len(q_lens)} query sequences but {len(kv_lens)} key sequences")
    key = (q_lens, kv_lens, str(torch.device(device)))
    mask = _mask_cache.get(key)
    if mask is not None:
        _mask_cache.move_to_end(key)
        return mask
    device = torch.device(device)
    q_ids = torch.repeat_interleave(torch.arange(len(q_lens), device=device), torch.tensor(q_lens, device=device))
    kv_ids = torch.repeat_interleave(torch.arange(len(kv_lens), device=device), torch.tensor(kv_lens, device=device))
    mask = q_ids[:, None] == kv_ids[None, :]
    _mask_cache[key] = mask
    while len(_mask_cache) > _MASK_CACHE_SIZE:
        _mask_cache.popitem(last=False)
    return mask


def _xformers_attention(q, k, v, q_lens, kv_lens, scale):
    try:
        from xformers.ops import fmha, memory_efficient_attention
    except ImportError:
        return None
    bias = fmha.attn_bias.BlockDiagonalMask.from_seqlens(list(q_lens), list(kv_lens))
    out = memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                     attn_bias=bias, scale=scale)
    return out.transpose(1, 2)


def block_diagonal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             q_lens: Sequence[int] | None = None, kv_lens: Sequence[int] | None = None,
                             scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """Softmax attention restricted to blocks on the diagonal.

    Args:
        q: (1, H, sum(q_lens), Dk) packed queries (a batch dimension > 1 is allowed when the
            lengths are None: then it is ordinary dense attention).
        k: (1, H, sum(kv_lens), Dk) packed keys.
        v: (1, H, sum(kv_lens), Dv) packed values (Dv may differ from Dk).
        q_lens, kv_lens: tokens of each sequence (kv_lens defaults to q_lens). None: one block.
        scale: softmax scale, default 1 / sqrt(Dk).
        backend: "auto", "mask" (one SDPA call with a boolean block mask), "loop" (one SDPA
            call per sequence) or "xformers".

    Returns:
        (1, H, sum(q_lens), Dv). Sequences with no keys give zeros.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, N, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q_lens is None and kv_lens is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    q_lens = _lengths(q_lens if q_lens is not None else kv_lens)
    kv_lens = q_lens if kv_lens is None else _lengths(kv_lens)
    if q.shape[0] != 1 or sum(q_lens) != q.shape[2] or sum(kv_lens) != k.shape[2]:
        raise ValueError(f"packed q {tuple(q.shape)} / k {tuple(k.shape)} do not match the lengths "
                         f"{list(q_lens)} / {list(kv_lens)}")
    if len(q_lens) == 1:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if backend == "auto":
        if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16, torch.float32):
            out = _xformers_attention(q, k, v, q_lens, kv_lens, scale)
            if out is not None:
                return out
        backend = "mask" if q.shape[2] * k.shape[2] <= MASKED_CALL_LIMIT and min(kv_lens) > 0 else "loop"
    if backend == "xformers":
        out = _xformers_attention(q, k, v, q_lens, kv_lens, scale)
        if out is None:
            raise ImportError("backend='xformers' needs the xformers package")
        return out
    if backend == "mask":
        mask = block_diagonal_mask(q_lens, kv_lens, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if backend != "loop":
        raise ValueError(f"backend must be 'auto', 'mask', 'loop' or 'xformers', got {backend!r}")
    outputs = []
    for q_part, k_part, v_part in zip(q.split(q_lens, dim=2), k.split(kv_lens, dim=2), v.split(kv_lens, dim=2)):
        if k_part.shape[2] == 0:
            outputs.append(q_part.new_zeros(*q_part.shape[:3], v.shape[-1]))
        else:
            outputs.append(F.scaled_dot_product_attention(q_part, k_part, v_part, scale=scale))
    return torch.cat(outputs, dim=2)


class PatchEmbed(nn.Module):
    """Image (B, 3, H, W) -> patch tokens (B, H/p * W/p, C) by a strided convolution."""

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}")
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention (fused ``qkv`` projection, DINOv2 names)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, seq_lens: Sequence[int] | None = None) -> torch.Tensor:
        """x: (B, N, C); with ``seq_lens`` B must be 1 and N = sum(seq_lens) (packed)."""
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)
        out = block_diagonal_attention(qkv[0], qkv[1], qkv[2], seq_lens, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale (DINOv2's ``NestedTensorBlock`` at inference)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 init_values: float | None = 1.0, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, seq_lens: Sequence[int] | None = None) -> torch.Tensor:
        """x: (B, N, C), or (1, sum(L), C) packed sequences of lengths ``seq_lens``."""
        x = x + self.ls1(self.attn(self.norm1(x), seq_lens))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DINOv2's ViT (no registers by default), parameter names as DINOv2's ``DinoVisionTransformer``.

    Args:
        img_size: the image size the position table was trained for (518 for DINOv2: 37 x 37).
        patch_size: 14 for DINOv2.
        embed_dim, depth, num_heads, mlp_ratio: ViT-B/14 is 768, 12, 12, 4.
        init_values: LayerScale initial value (DINOv2: 1.0 for the released models' configs).
        num_register_tokens: DINOv2 "with registers" models use 4.
        interpolate_offset, interpolate_antialias: DINOv2's position-table resizing.
        embeddings: False builds only ``blocks`` and ``norm`` (encoders that embed patches
            themselves and delete DINOv2's embedding parameters, as SAT-HMR does).
    """

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True, init_values: float | None = 1.0,
                 num_register_tokens: int = 0, interpolate_offset: float = 0.1, interpolate_antialias: bool = False,
                 embeddings: bool = True):
        super().__init__()
        self.embed_dim = self.num_features = embed_dim
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        if embeddings:
            grid = img_size // patch_size
            self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
            self.register_tokens = (nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
                                    if num_register_tokens else None)
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, init_values) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def position_table(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The patch position table resized to (grid_h, grid_w, C), as DINOv2 does (bicubic, with
        its historical 0.1 offset in the scale factor)."""
        table = self.pos_embed[0, 1:].float()
        side = math.isqrt(table.shape[0])
        kwargs = ({"scale_factor": ((grid_h + self.interpolate_offset) / side, (grid_w + self.interpolate_offset) / side)}
                  if self.interpolate_offset else {"size": (grid_h, grid_w)})
        resized = F.interpolate(table.reshape(1, side, side, -1).permute(0, 3, 1, 2), mode="bicubic",
                                antialias=self.interpolate_antialias, **kwargs)
        if tuple(resized.shape[-2:]) != (grid_h, grid_w):
            raise RuntimeError(f"position table resized to {tuple(resized.shape[-2:])}, wanted {(grid_h, grid_w)}")
        return resized[0].permute(1, 2, 0).to(self.pos_embed.dtype)

    def prepare_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 1 + R + H/p * W/p, C) tokens with positions."""
        batch, _, height, width = images.shape
        x = self.patch_embed(images)
        grid = self.position_table(height // self.patch_size, width // self.patch_size).flatten(0, 1)
        cls = self.cls_token + self.pos_embed[:, :1]
        x = torch.cat([cls.expand(batch, -1, -1), x + grid], dim=1)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(batch, -1, -1), x[:, 1:]], dim=1)
        return x

    def forward_blocks(self, x: torch.Tensor, seq_lens: Sequence[int] | None = None, start: int = 0,
                       end: int | None = None, blocks: nn.ModuleList | None = None) -> torch.Tensor:
        """Runs ``blocks[start:end]`` (default: this ViT's blocks) on (B, N, C) tokens or on
        packed sequences (1, sum(L), C) with their lengths."""
        for block in (self.blocks if blocks is None else blocks)[start:end]:
            x = block(x, seq_lens)
        return x

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """DINOv2's ``forward_features`` at inference: normalised class and patch tokens."""
        x = self.forward_blocks(self.prepare_tokens(images))
        x_norm = self.norm(x)
        return {"x_norm_clstoken": x_norm[:, 0], "x_norm_regtokens": x_norm[:, 1:self.num_register_tokens + 1],
                "x_norm_patchtokens": x_norm[:, self.num_register_tokens + 1:], "x_prenorm": x}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C) normalised class token (DINOv2's ``forward`` with an identity head)."""
        return self.forward_features(images)["x_norm_clstoken"]


def vit_base(patch_size: int = 14, **kwargs) -> VisionTransformer:
    """ViT-B (768 channels, 12 blocks, 12 heads): DINOv2's ``vit_base``."""
    return VisionTransformer(patch_size=patch_size, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, **kwargs)
