"""SAT-HMR's DAB-DETR style decoder (conditional cross-attention, anchor boxes, iterative box
refinement), with the upstream's parameter names (``decoder.decoder.layers.{i}.sa_qcontent_proj``
...) so MA-HMR / SAT-HMR checkpoints load strictly.

Queries of all images are packed: ``tgt`` is (B * Q, C), the encoder memory is (sum(L), C) with
per-image lengths, and cross-attention is block-diagonal (each image's queries see only that
image's tokens). Upstream runs it with xFormers; here it is PyTorch's
``scaled_dot_product_attention`` (:func:`meshrec.nn.vit.block_diagonal_attention`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from meshrec.nn.vit import block_diagonal_attention

__all__ = ["MLP", "DABDecoder", "DecoderLayer", "DecoderStack", "inverse_sigmoid", "position_encoding_xy"]


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's ``MLP``; names ``layers.{i}``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms to at least ``eps`` (DETR)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def position_encoding_xy(pos_x: torch.Tensor, pos_y: torch.Tensor, embedding_dim: int,
                         temperature: float = 20, scale: float = 2 * math.pi) -> torch.Tensor:
    """Sine embedding of normalised positions: (N,), (N,) -> (N, embedding_dim), the y half first.

    Channel pair (2i, 2i+1) of each half holds sin / cos of pos * scale / temperature^(2i / (D/2)).
    The frequency table is computed in float32 and then cast, as upstream computes it, so the
    embedding equals the trained network's also when the model runs in float64.
    """
    if embedding_dim % 2 or pos_x.dim() != 1 or pos_y.dim() != 1:
        raise ValueError(f"positions must be 1D and embedding_dim even, got {tuple(pos_x.shape)}, {embedding_dim}")
    half = embedding_dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=pos_x.device)
    dim_t = (temperature ** (2 * (dim_t // 2) / half)).to(pos_x.dtype)

    def embed(pos: torch.Tensor) -> torch.Tensor:
        angles = (pos * scale)[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    return torch.cat([embed(pos_y), embed(pos_x)], dim=1)


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: self-attention, conditional cross-attention, FFN.

    Cross-attention concatenates per head the content part with the sine-position part, so
    queries and keys have 2 * C / H channels per head and values C / H; the softmax scale is
    1 / sqrt(2 C / H) as in upstream's xFormers call.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, with_qpos: bool = True):
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model {d_model} is not divisible by nhead {nhead}")
        for name in ("sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj", "sa_v_proj",
                     "sa_out_proj", "ca_qcontent_proj", "ca_qpos_proj", "ca_kcontent_proj", "ca_kpos_proj",
                     "ca_v_proj", "ca_qpos_sine_proj", "ca_out_proj"):
            setattr(self, name, nn.Linear(d_model, d_model))
        if not with_qpos:  # upstream sets it to None in layers 1..: no weights in the checkpoint
            self.ca_qpos_proj = None
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.d_model = d_model
        self.nhead = nhead

    def forward(self, memory: torch.Tensor, memory_lens: Sequence[int], pos: torch.Tensor, tgt: torch.Tensor,
                num_queries: int, query_pos: torch.Tensor, query_sine_embed: torch.Tensor,
                is_first: bool = False, self_attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """memory, pos: (sum(L), C); tgt, query_pos, query_sine_embed: (B * Q, C) -> (B * Q, C).

        ``self_attn_mask``: optional boolean (Q, Q), True where attention is *blocked* (DETR's
        denoising mask convention)."""
        batch = tgt.shape[0] // num_queries
        heads, head_dim = self.nhead, self.d_model // self.nhead

        x = self.norm1(tgt)
        q = self.sa_qcontent_proj(x) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(x) + self.sa_kpos_proj(query_pos)
        v = self.sa_v_proj(x)

        def split(t: torch.Tensor) -> torch.Tensor:  # (B * Q, C) -> (B, H, Q, D)
            return t.view(batch, num_queries, heads, -1).transpose(1, 2)

        mask = None if self_attn_mask is None else ~self_attn_mask
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        tgt = tgt + self.sa_out_proj(out.transpose(1, 2).reshape(-1, self.d_model))

        x = self.norm2(tgt)
        q = self.ca_qcontent_proj(x)
        k = self.ca_kcontent_proj(memory)
        v = self.ca_v_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if is_first:
            if self.ca_qpos_proj is None:
                raise RuntimeError("the first decoder layer needs ca_qpos_proj")
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        sine = self.ca_qpos_sine_proj(query_sine_embed)
        q = torch.cat([q.view(1, -1, heads, head_dim), sine.view(1, -1, heads, head_dim)], dim=3).transpose(1, 2)
        k = torch.cat([k.view(1, -1, heads, head_dim), k_pos.view(1, -1, heads, head_dim)], dim=3).transpose(1, 2)
        v = v.view(1, -1, heads, head_dim).transpose(1, 2)
        out = block_diagonal_attention(q, k, v, [num_queries] * batch, memory_lens)
        tgt = tgt + self.ca_out_proj(out.transpose(1, 2).reshape(-1, self.d_model))

        return tgt + self.linear2(F.relu(self.linear1(self.norm3(tgt))))


class DecoderStack(nn.Module):
    """Upstream's ``XformerDecoder``: layers, shared final norm, query-position heads, and the
    per-layer box heads (``bbox_embed``, the same modules as the network's ``bbox_embed``)."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, query_dim: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, nhead, dim_feedforward, with_qpos=index == 0)
                                    for index in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.ref_point_head = MLP(query_dim // 2 * d_model, d_model, d_model, 2)
        self.ref_anchor_head = MLP(d_model, d_model, 2, 2)
        self.bbox_embed: nn.ModuleList | None = None
        self.d_model = d_model
        self.query_dim = query_dim

    def forward(self, memory: torch.Tensor, memory_lens: Sequence[int], tgt: torch.Tensor, num_queries: int,
                pos: torch.Tensor, refpoints_unsigmoid: torch.Tensor,
                self_attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``hs`` (layers, B, Q, C) normalised outputs of every layer and ``references``
        (layers, B, Q, 4) the anchor boxes (cx, cy, w, h in [0, 1]) each layer started from."""
        batch = tgt.shape[0] // num_queries
        output = tgt
        reference = refpoints_unsigmoid.sigmoid()
        references = [reference.view(batch, num_queries, self.query_dim)]
        intermediate = []
        half = self.d_model // 2
        for layer_id, layer in enumerate(self.layers):
            xy = position_encoding_xy(reference[:, 0], reference[:, 1], self.d_model)
            wh = position_encoding_xy(reference[:, 2], reference[:, 3], self.d_model)
            query_pos = self.ref_point_head(torch.cat([xy, wh], dim=1))
            # The content-conditioned scale of the position (Conditional DETR), none in layer 0.
            transform = 1 if layer_id == 0 else self.query_scale(output)
            sine = xy * transform
            # Modulated width / height attention (DAB-DETR): x channels by w, y channels by h.
            ref_hw = self.ref_anchor_head(output).sigmoid()
            sine = torch.cat([sine[:, :half] * (ref_hw[:, 1] / reference[:, 3])[:, None],
                              sine[:, half:] * (ref_hw[:, 0] / reference[:, 2])[:, None]], dim=1)
            output = layer(memory, memory_lens, pos, output, num_queries, query_pos, sine,
                           is_first=layer_id == 0, self_attn_mask=self_attn_mask)
            normed = self.norm(output)
            if self.bbox_embed is not None:
                delta = self.bbox_embed[layer_id](normed)
                new_reference = (delta[..., :self.query_dim] + inverse_sigmoid(reference)).sigmoid()
                if layer_id != len(self.layers) - 1:
                    references.append(new_reference.view(batch, num_queries, self.query_dim))
                reference = new_reference.detach()
            intermediate.append(normed.view(batch, num_queries, self.d_model))
        return torch.stack(intermediate), torch.stack(references)


class DABDecoder(nn.Module):
    """Upstream's ``TransformerDecoder`` wrapper (its only child is ``decoder``)."""

    def __init__(self, d_model: int = 768, nhead: int = 4, num_layers: int = 6, dim_feedforward: int = 2048):
        super().__init__()
        self.decoder = DecoderStack(d_model, nhead, num_layers, dim_feedforward)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        self.d_model = d_model
        self.nhead = nhead
        self.dec_layers = num_layers

    def forward(self, memory, memory_lens, tgt, num_queries, refpoint_embed, pos_embed, self_attn_mask=None):
        return self.decoder(memory, memory_lens, tgt, num_queries, pos_embed, refpoint_embed, self_attn_mask)
