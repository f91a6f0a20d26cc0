"""METRO-enhanced, SA-HMR's mesh module (module 2), with SA-HMR's parameter names.

A second HRNet-W64 (with its classification head: a 2048 x 7 x 7 map) gives 49 image tokens,
``conv_learn_tokens`` turns them into 445 = 14 joint + 431 coarse-vertex tokens, each concatenated
with its template position (2051 features). Three transformer blocks (``trans_encoder.{0,1,2}``,
METRO's BERT encoders, 2051 -> 512 -> 128 -> 3) run on the mesh tokens; a parallel stream of up to
500 scene contact points (position relative to the root + the mean image token of their body
part) runs two linear-attention self-attention layers per block, and the mesh tokens read it
through one linear-attention cross-attention layer. The 431 coarse vertices go to 1723 and 6890
through the learned ``upsampling`` / ``upsampling2`` Linear layers (as in METRO).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from meshrec.nn.hrnet import HRNet, hrnet_w64

__all__ = ["CPOSE", "LinearAttentionLayer", "METROEnhanced", "linear_attention"]

NUM_JOINTS = 14
NUM_COARSE_VERTICES = 431
NUM_PARTS = 7


def gelu(x: torch.Tensor) -> torch.Tensor:
    """BERT's GELU (erf form)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_mask: torch.Tensor | None = None,
                     eps: float = 1e-6) -> torch.Tensor:
    """Linear attention ("Transformers are RNNs", as LoFTR): phi = elu + 1.

    q (N, L, H, D), k / v (N, S, H, D), kv_mask (N, S) bool (False = padding, zeroed in K and V).
    V is divided by S before the sums and the result multiplied by S (upstream's fp16 guard).
    """
    q = F.elu(q) + 1
    k = F.elu(k) + 1
    if kv_mask is not None:
        m = kv_mask[:, :, None, None].to(k.dtype)
        k, v = k * m, v * m
    length = v.shape[1]
    v = v / length
    kv = torch.einsum("nshd,nshv->nhdv", k, v)
    z = 1 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, z) * length


class LinearAttentionLayer(nn.Module):
    """LoFTR's encoder layer with linear attention (``LoFTREncoderLayer``): message = norm1(merge(attn))
    -> norm2(mlp([x, message])); the caller adds it to x. No biases; LayerNorm eps 1e-5."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.nhead, self.dim = nhead, d_model // nhead
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.merge = nn.Linear(d_model, d_model, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * d_model, 2 * d_model, bias=False), nn.ReLU(True),
                                 nn.Linear(2 * d_model, d_model, bias=False))
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, L, C) queries, source (N, S, C) keys / values, source_mask (N, S) -> message (N, L, C)."""
        n = x.shape[0]
        q = self.q_proj(x).view(n, -1, self.nhead, self.dim)
        k = self.k_proj(source).view(n, -1, self.nhead, self.dim)
        v = self.v_proj(source).view(n, -1, self.nhead, self.dim)
        message = linear_attention(q, k, v, source_mask)
        message = self.norm1(self.merge(message.reshape(n, -1, self.nhead * self.dim)))
        message = F.dropout(message, self.dropout, self.training)
        message = self.norm2(self.mlp(torch.cat([x, message], dim=2)))
        return F.dropout(message, self.dropout, self.training)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, hidden = x.shape
        shape = (n, length, self.heads, hidden // self.heads)
        q, k, v = (layer(x).view(shape).transpose(1, 2) for layer in (self.query, self.key, self.value))
        # Full attention, no mask (all tokens are real).
        context = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return context.transpose(1, 2).reshape(n, length, hidden)


class _DenseNorm(nn.Module):
    """dense -> dropout -> LayerNorm(. + residual) (BertSelfOutput / BertOutput)."""

    def __init__(self, in_features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.dropout(self.dense(x), self.dropout, self.training) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self = BertSelfAttention(hidden, heads, dropout)
        self.output = _DenseNorm(hidden, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(self.dense(x))


class BertLayer(nn.Module):
    """A post-norm BERT layer: self-attention, then the GELU feed-forward."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float) -> None:
        super().__init__()
        self.attention = BertAttention(hidden, heads, dropout)
        self.intermediate = BertIntermediate(hidden, intermediate)
        self.output = _DenseNorm(intermediate, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x)
        return self.output(self.intermediate(attended), attended)


class BertEmbeddings(nn.Module):
    """BERT's token embeddings: present in the checkpoints, never used by METRO."""

    def __init__(self, hidden: int, vocab_size: int, max_positions: int, type_vocab_size: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)


class BertEncoderCP(nn.Module):
    """SA-HMR's ``BertEncoder_CP``: BERT layers on the mesh tokens, two linear self-attention layers
    (``linear_cp``) on the contact tokens, one linear cross-attention (``loftr_layer``) mesh <- contact."""

    def __init__(self, hidden: int, heads: int, layers: int, intermediate: int, dropout: float,
                 cross_dropout: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(hidden, heads, intermediate, dropout) for _ in range(layers)])
        self.linear_cp = nn.ModuleList([LinearAttentionLayer(hidden, heads) for _ in range(2)])
        self.loftr_layer = LinearAttentionLayer(hidden, heads, cross_dropout)

    def forward(self, hidden: torch.Tensor, contact: torch.Tensor, contact_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layer:
            hidden = layer(hidden)
        for layer in self.linear_cp:
            contact = contact + layer(contact, contact, source_mask=contact_mask)
        hidden = hidden + self.loftr_layer(hidden, contact, source_mask=contact_mask)
        return hidden, contact


class BertPooler(nn.Module):
    """Present in the checkpoints, never used."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)


class CPOSEEncoder(nn.Module):
    """SA-HMR's ``CPOSE_Encoder`` (``trans_encoder.i.bert``)."""

    def __init__(self, in_features: int, hidden: int, heads: int, layers: int, intermediate: int, dropout: float,
                 cross_dropout: float, vocab_size: int, max_positions: int, type_vocab_size: int,
                 part_position_offset: int) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(hidden, vocab_size, max_positions, type_vocab_size)
        self.encoder = BertEncoderCP(hidden, heads, layers, intermediate, dropout, cross_dropout)
        self.pooler = BertPooler(hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.img_embedding = nn.Linear(in_features, hidden)
        self.dropout = dropout
        self.part_position_offset = part_position_offset

    def forward(self, tokens: torch.Tensor, contact: torch.Tensor, contact_mask: torch.Tensor,
                contact_pids: torch.Tensor, part_average: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = tokens.shape[1]
        positions = self.position_embeddings.weight[:length]
        # Contact points get the mean position embedding of their part's coarse vertices. Upstream
        # quirk (offset 0, the released weights' training): vertex v is indexed as token v, not
        # 14 + v, so the means are taken over rows 0..430 (joint rows included, last 14 vertex
        # rows never). part_position_offset=14 indexes the vertex tokens themselves.
        start = self.part_position_offset
        part_tokens = part_average @ positions[start:start + part_average.shape[1]]  # (7, H)
        part_tokens = F.pad(part_tokens, (0, 0, 1, 0))  # pid 0 -> zeros
        embedded = F.dropout(positions[None] + self.img_embedding(tokens), self.dropout, self.training)
        contact_embedded = F.dropout(part_tokens[contact_pids] + self.img_embedding(contact), self.dropout,
                                     self.training)
        return self.encoder(embedded, contact_embedded, contact_mask)


class CPOSE(nn.Module):
    """One METRO-enhanced transformer block (``trans_encoder.i``): the encoder, then
    ``cls_head(out) + residual(in)`` with both Linear layers shared by the mesh and contact streams.

    Args:
        in_features / hidden / out_features: 2051/1024/512, 512/256/128, 128/128/3 in SA-HMR.
        heads, layers: 4, 4. intermediate: 3072 (BERT-base's, kept by METRO for every block).
        dropout: BERT's hidden / attention dropout (0.1); cross_dropout: the cross layer's (0.1).
        vocab_size, max_positions, type_vocab_size: BERT-base's tables (30522, 512, 2), in the
            checkpoints but unused (except the first ``max_positions`` rows of ``position_embeddings``).
        part_position_offset: 0 (upstream, default) or 14; see :class:`CPOSEEncoder`.
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, *, heads: int = 4, layers: int = 4,
                 intermediate: int = 3072, dropout: float = 0.1, cross_dropout: float = 0.1, vocab_size: int = 30522,
                 max_positions: int = 512, type_vocab_size: int = 2, part_position_offset: int = 0) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} must be a multiple of the heads {heads}")
        self.bert = CPOSEEncoder(in_features, hidden, heads, layers, intermediate, dropout, cross_dropout,
                                 vocab_size, max_positions, type_vocab_size, part_position_offset)
        self.cls_head = nn.Linear(hidden, out_features)
        self.residual = nn.Linear(in_features, out_features)

    def forward(self, tokens: torch.Tensor, contact: torch.Tensor, contact_mask: torch.Tensor,
                contact_pids: torch.Tensor, part_average: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T, in), contact (B, S, in), contact_mask (B, S) bool, contact_pids (B, S) in 0..7,
        part_average (7, 431) row-normalised part membership of the coarse vertices -> (B, T, out), (B, S, out)."""
        hidden, contact_hidden = self.bert(tokens, contact, contact_mask, contact_pids, part_average)
        return (self.cls_head(hidden) + self.residual(tokens),
                self.cls_head(contact_hidden) + self.residual(contact))


class METROEnhanced(nn.Module):
    """SA-HMR's ``METRO_enhanced`` (``net.metro_enhanced.*``).

    Args:
        backbone: the image CNN (default HRNet-W64 with its head, 2048 x 7 x 7 at 224).
        feature_dims / hidden_dims: (2051, 512, 128) / (1024, 256, 128); the last block outputs 3.
        image_channels, image_tokens: backbone channels (2048) and positions (49).
        num_vertices / num_coarse: 6890, 1723 (the learned upsampling sizes).
        block_kwargs: passed to every :class:`CPOSE` (heads, layers, intermediate, ...).

    The template (``init_joints14`` (14, 3), ``init_verts431`` (431, 3), ``verts431_pids`` (431,))
    is set with :meth:`set_template` and held in non-persistent buffers (it comes from the user's
    SMPL, not from the checkpoint).
    """

    def __init__(self, backbone: HRNet | None = None, feature_dims: tuple[int, ...] = (2051, 512, 128),
                 hidden_dims: tuple[int, ...] = (1024, 256, 128), image_channels: int = 2048, image_tokens: int = 49,
                 num_vertices: int = 6890, num_coarse: int = 1723, **block_kwargs) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else hrnet_w64(head=True)
        outputs = tuple(feature_dims[1:]) + (3,)
        self.trans_encoder = nn.Sequential(*[
            CPOSE(i, h, o, **block_kwargs) for i, h, o in zip(feature_dims, hidden_dims, outputs)
        ])
        self.image_channels = image_channels
        self.conv_learn_tokens = nn.Conv1d(image_tokens, NUM_JOINTS + NUM_COARSE_VERTICES, 1)
        self.upsampling = nn.Linear(NUM_COARSE_VERTICES, num_coarse)
        self.upsampling2 = nn.Linear(num_coarse, num_vertices)
        self.register_buffer("init_joints14", torch.zeros(NUM_JOINTS, 3), persistent=False)
        self.register_buffer("init_verts431", torch.zeros(NUM_COARSE_VERTICES, 3), persistent=False)
        self.register_buffer("verts431_pids", torch.zeros(NUM_COARSE_VERTICES, dtype=torch.long), persistent=False)
        self.register_buffer("part_average", torch.zeros(NUM_PARTS, NUM_COARSE_VERTICES), persistent=False)
        self.has_template = False

    def set_template(self, joints14: torch.Tensor, verts431: torch.Tensor, verts431_pids: torch.Tensor) -> None:
        """The template tokens: (14, 3) H36M joints and (431, 3) coarse vertices of the zero-pose SMPL
        turned upside down (camera y-down), pelvis-relative; (431,) part ids 0..7 of the coarse vertices."""
        if joints14.shape != (NUM_JOINTS, 3) or verts431.shape != (NUM_COARSE_VERTICES, 3):
            raise ValueError(f"template must be (14, 3) joints and (431, 3) vertices, got {tuple(joints14.shape)} "
                             f"and {tuple(verts431.shape)}")
        if verts431_pids.shape != (NUM_COARSE_VERTICES,):
            raise ValueError(f"verts431_pids must have shape (431,), got {tuple(verts431_pids.shape)}")
        pids = verts431_pids.long().to(self.verts431_pids.device)
        membership = torch.stack([(pids == i) for i in range(1, NUM_PARTS + 1)]).to(self.part_average.dtype)
        self.init_joints14 = joints14.to(self.init_joints14)
        self.init_verts431 = verts431.to(self.init_verts431)
        self.verts431_pids = pids
        self.part_average = membership / membership.sum(1, keepdim=True).clamp(min=1)  # an empty part: zeros
        self.has_template = True

    def image_tokens(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) ImageNet-normalised -> (B, 445, 2048) learned tokens."""
        fmap = self.backbone(image)
        B = fmap.shape[0]
        return self.conv_learn_tokens(fmap.view(B, self.image_channels, -1).transpose(1, 2))

    def forward(self, image: torch.Tensor, contact_points: torch.Tensor, contact_pids: torch.Tensor,
                contact_mask: torch.Tensor, tokens: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Mesh from the image and the contact points.

        Args:
            image: (B, 3, 224, 224) ImageNet-normalised RGB.
            contact_points: (B, S, 3) contact points relative to the refined root, metres (camera axes).
            contact_pids: (B, S) int64 part ids 0..7 (0 = padding / none); contact_mask: (B, S) bool.
            tokens: the output of :meth:`image_tokens` if already computed.

        Returns: ``pred_verts`` (B, 6890, 3) root-relative mesh, metres, camera axes;
        ``pred_verts1723`` (B, 1723, 3); ``pred_verts431`` (B, 431, 3); ``pred_corr_pc`` (B, S, 3);
        ``cpose_img_feat_{i}`` / ``cpose_cp_feat_{i}`` per block.
        """
        if not self.has_template:
            raise RuntimeError("METROEnhanced needs its template: call set_template(joints14, verts431, pids) first")
        tokens = self.image_tokens(image) if tokens is None else tokens
        B = tokens.shape[0]
        template = torch.cat([self.init_joints14, self.init_verts431]).to(tokens.dtype)
        features = torch.cat([template[None].expand(B, -1, -1), tokens], dim=2)
        part_average = self.part_average.to(tokens.dtype)
        part_tokens = F.pad(part_average @ tokens[:, NUM_JOINTS:], (0, 0, 1, 0))  # (B, 8, 2048), pid 0 -> zeros
        batch = torch.arange(B, device=tokens.device)[:, None]
        contact = torch.cat([contact_points.to(tokens.dtype), part_tokens[batch, contact_pids]], dim=2)
        out = {}
        for i, block in enumerate(self.trans_encoder):
            features, contact = block(features, contact, contact_mask, contact_pids, part_average)
            out[f"cpose_img_feat_{i}"] = features
            out[f"cpose_cp_feat_{i}"] = contact
        # The 14 joint tokens are dropped (upstream): joints come from the full mesh.
        verts431 = features[:, NUM_JOINTS:]
        verts1723 = self.upsampling(verts431.transpose(1, 2))
        verts = self.upsampling2(verts1723)
        out.update(pred_verts=verts.transpose(1, 2), pred_verts1723=verts1723.transpose(1, 2), pred_verts431=verts431,
                   pred_corr_pc=contact)
        return out
