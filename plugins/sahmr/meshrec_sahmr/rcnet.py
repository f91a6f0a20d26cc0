"""RCNet, SA-HMR's root and contact network (module 1), with SA-HMR's parameter names.

An HRNet-W64 image branch (``root_net.hrnet`` + ``root_net.out_conv``) turns the 224 x 224 crop
into a 56 x 56 pelvis heatmap, a normalised root-depth map, 32 feature channels and 7 auxiliary
contact-part maps. The heatmap argmax and the depth read there give an initial pelvis in the
camera frame; the scene points within 1.25 m of three anchors around it are voxelised at 5 cm,
each voxel gets its offset to the pelvis and the image feature at its projection, and the SPVCNN
``contact_net`` votes a refined pelvis and labels the voxels with 8 contact classes.

Every quantity keeps SA-HMR's name and unit (``pred_c_pelvis``, ``pred_vox_xyz_conf``, ...: metres,
camera frame, full-resolution pixels), so outputs compare with the upstream code directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from meshrec.nn.hrnet import HRNet, hrnet_w64
from meshrec.scene import SPVCNN, voxelize

__all__ = ["RCNet", "RCNetOutput", "RootNet", "contact_points", "crop_near_anchors", "parse_pelvis",
           "refine_root", "resample_contact_points", "voxel_features"]

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class RootNet(nn.Module):
    """SA-HMR's ``HRNetWrapper``: HRNet's stride-4 map -> 1x1 conv to 41 channels
    ([0] pelvis heatmap, [1] root depth "zw1f", [2:34] features, [34:41] contact-part maps)."""

    def __init__(self, hrnet: HRNet | None = None, out_channels: int = 2 + 32 + 7) -> None:
        super().__init__()
        self.hrnet = hrnet if hrnet is not None else hrnet_w64(head=False)
        if self.hrnet.head:
            raise ValueError("RCNet's HRNet has no classification head: build it with head=False")
        self.out_conv = nn.Conv2d(self.hrnet.out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_conv(self.hrnet(x))


@dataclass
class RCNetOutput:
    """What :meth:`RCNet.forward` returns (SA-HMR's batch keys; B samples, lists hold one tensor
    per sample).

    Attributes:
        pred_bi4s_pelvis_hm: (B, 1, h, w) pelvis heatmap logits (h = w = 56 for a 224 crop).
        pred_bi4s_rdepth_hm: (B, 1, h, w) root depth map, "zw1f" = Z * box width / fx (metres).
        pred_bi4s_seg_hm: (B, 7, h, w) auxiliary contact-part maps (unused at inference).
        fmap_img: (B, 32, h, w) the image features sampled by the voxels.
        pred_bi4s_pelvis_2d: (B, 2) heatmap argmax (u, v) in heatmap pixels.
        pred_c_pelvis_z: (B,) initial root depth, metres.
        pred_c_pelvis: (B, 1, 3) initial root, camera frame, metres.
        c_root_anchors: (B, 3, 3) the crop anchors (root - 0.5 m z, root, root + 0.5 m z).
        c_pcFst_nearby: B x (n_b, 3) scene points kept around the anchors (the frustum points if none).
        crop_fell_back: (B,) bool, True where no point was near the anchors and the whole frustum was used.
        voxel_coords: (V, 4) int32 (batch, x, y, z) 5 cm voxel indices of all samples, sorted.
        voxel_features: (V, 35) the SPVCNN input (3 offset to the root + 32 image features).
        point_to_voxel: B x (n_b,) the voxel row (in ``voxel_coords``) of each kept point.
        c_voxFst_nearby: B x (v_b, 3) voxel centres, metres.
        pred_vox_xyz_conf: B x (v_b, 1), pred_vox_xyz_offset: B x (v_b, 3) metres,
        pred_vox_seg: B x (v_b, 8) contact logits, pred_vox_segid: B x (v_b,) argmax class.
        pred_c_pelvis_refined: (B, 1, 3) the voted root, camera frame, metres.
    """

    pred_bi4s_pelvis_hm: torch.Tensor
    pred_bi4s_rdepth_hm: torch.Tensor
    pred_bi4s_seg_hm: torch.Tensor
    fmap_img: torch.Tensor
    pred_bi4s_pelvis_2d: torch.Tensor
    pred_c_pelvis_z: torch.Tensor
    pred_c_pelvis: torch.Tensor
    c_root_anchors: torch.Tensor
    c_pcFst_nearby: list[torch.Tensor]
    crop_fell_back: torch.Tensor
    voxel_coords: torch.Tensor
    voxel_features: torch.Tensor
    point_to_voxel: list[torch.Tensor]
    c_voxFst_nearby: list[torch.Tensor]
    pred_vox_xyz_conf: list[torch.Tensor]
    pred_vox_xyz_offset: list[torch.Tensor]
    pred_vox_seg: list[torch.Tensor]
    pred_vox_segid: list[torch.Tensor]
    pred_c_pelvis_refined: torch.Tensor


def project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) camera-frame points -> (B, N, 2) pixels through K (B, 3, 3) (SA-HMR's project_p2d)."""
    normalised = points / points[..., 2:3]
    return torch.einsum("bki,bji->bjk", K, normalised)[..., :2]


def unproject(uv: torch.Tensor, z: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) pixels at depth z (B, N, 1) -> (B, N, 3) camera-frame points (pinhole: fx, fy, cx, cy)."""
    xy = (uv - K[:, None, :2, 2]) / K[:, None, [0, 1], [0, 1]]
    return torch.cat([xy * z, z], dim=-1)


def parse_pelvis(pelvis_hm: torch.Tensor, rdepth_hm: torch.Tensor, bbx_lurb: torch.Tensor, K: torch.Tensor,
                 image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The initial root from the heatmaps (SA-HMR's ``parse_pelvis_hm_output``).

    The heatmap argmax (u, v) (first maximum in row-major order) is normalised by (w - 1), mapped
    into the box ``bbx_lurb`` (B, 4) [left, up, right, bottom] in full-resolution pixels, and
    unprojected at Z = zw1f(v, u) * bi_f / image_size, with bi_f = fx * image_size / box width
    (so Z = zw1f * fx / box width).

    Returns: uv (B, 2) int64 heatmap pixel, Z (B,), root (B, 1, 3) camera frame.
    """
    B, _, _, W = pelvis_hm.shape
    flat = pelvis_hm.reshape(B, -1).argmax(1)
    uv = torch.stack([flat % W, torch.div(flat, W, rounding_mode="floor")], dim=-1)
    bi01 = uv.to(bbx_lurb.dtype) / (W - 1)  # in the working dtype (upstream: the default dtype)
    batch = torch.arange(B, device=uv.device)
    zw1f = rdepth_hm[batch, 0, uv[:, 1], uv[:, 0]]
    bi_f = K[:, 0, 0] * image_size / (bbx_lurb[:, 2] - bbx_lurb[:, 0])
    z = zw1f * bi_f / image_size
    wh = bbx_lurb[:, None, 2:] - bbx_lurb[:, None, :2]
    pixel = bi01[:, None] * wh + bbx_lurb[:, None, :2]
    return uv, z, unproject(pixel, z.reshape(-1, 1, 1), K)


def crop_near_anchors(points: torch.Tensor, anchors: torch.Tensor, radius: float) -> torch.Tensor:
    """(N,) bool: points (N, 3) closer than ``radius`` (metres, strictly) to any anchor (A, 3)."""
    squared = ((points[:, None, :] - anchors[None]) ** 2).sum(-1).amin(dim=1)
    return squared < radius ** 2


def voxel_features(centres: torch.Tensor, anchor: torch.Tensor, fmap: torch.Tensor, K: torch.Tensor,
                   bbx_lurb: torch.Tensor) -> torch.Tensor:
    """RCNet's per-voxel input for one sample: (v, 3 + C).

    Args:
        centres: (v, 3) voxel centres, camera frame, metres.
        anchor: (3,) the initial root.
        fmap: (C, h, w) image features over the box.
        K: (3, 3) intrinsics; bbx_lurb: (4,) the box, full-resolution pixels.

    Returns: [anchor - centre, bilinear sample of fmap at the centre's projection normalised to the
    box (grid_sample, align_corners=True, zeros outside)].
    """
    uv = project(centres[None], K[None])
    wh = bbx_lurb[None, None, 2:] - bbx_lurb[None, None, :2]
    bi01 = (uv - bbx_lurb[None, None, :2]) / wh
    sampled = F.grid_sample(fmap[None], bi01[:, None] * 2 - 1, align_corners=True)[0, :, 0].transpose(0, 1)
    return torch.cat([anchor[None] - centres, sampled], dim=1)


def refine_root(conf: torch.Tensor, offset: torch.Tensor, centres: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """(3,) voted root: sum_i softmax_i(sigmoid(conf_i)) (centre_i + offset_i).

    Upstream quirk kept (the released weights were trained with it): the softmax runs over the
    sigmoid outputs in [0, 1], so the weights are flat (ratios at most e). NaN -> ``fallback``."""
    weights = torch.softmax(conf.sigmoid(), 0)
    root = (weights * (centres + offset)).sum(0)
    return fallback if bool(torch.isnan(root).any()) else root


def contact_points(points: torch.Tensor, point_to_voxel: torch.Tensor, segid: torch.Tensor,
                   centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene points labelled as contact (SA-HMR's ``get_pc_belong_to_vox_seg``): every kept point
    whose 5 cm voxel has a class other than 0, with that class as its part id, in point order.
    Without any such voxel: the first voxel centre with its class (0, so it is masked later).

    Returns: points (n, 3), part ids (n,) int64.
    """
    labelled = segid != 0
    if not bool(labelled.any()):
        return centres[:1], segid[:1]
    point_ids = segid[point_to_voxel]
    keep = point_ids != 0
    return points[keep], point_ids[keep]


def resample_contact_points(points: torch.Tensor, pids: torch.Tensor, count: int = 500,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed number of contact points (SA-HMR's ``prepare_N_pcSeg``).

    n <= count: zero-padded (pid 0). n > count: ``count`` indices drawn uniformly WITH replacement by
    ``torch.randint`` on the CPU from ``generator`` (None: the global generator, as upstream does at
    inference; pass a seeded generator for reproducible predictions).

    Returns: points (count, 3), pids (count,), mask (count,) = pids != 0.
    """
    n = len(points)
    if n <= count:
        points = F.pad(points, (0, 0, 0, count - n), value=0.0)
        pids = F.pad(pids, (0, count - n), value=0)
    else:
        index = torch.randint(n, (count,), generator=generator).to(points.device)
        points, pids = points[index], pids[index]
    return points, pids, pids != 0


class RCNet(nn.Module):
    """SA-HMR's RCNet (``net.rcnet.*``): ``root_net`` (HRNet-W64 + 1x1 conv) and ``contact_net`` (SPVCNN).

    Args:
        root_net: the image branch (default: HRNet-W64 without head + out_conv 64 -> 41).
        contact_net: the scene branch (default: ``SPVCNN(35, 12, rounding=rounding)``).
        rounding: SPVCNN's downsampling division: "trunc" (default; what the released weights were
            trained with, torchsparse 1.4 under PyTorch 1.12) or "floor" (geometrically uniform).
        voxel_size, anchor_spacing, keep_radius: 0.05, 0.5, 1.25 m (upstream constants).

    ``img_mean`` / ``img_std`` are non-persistent buffers, as upstream (not in the checkpoint).
    """

    def __init__(self, root_net: RootNet | None = None, contact_net: SPVCNN | None = None, *, rounding: str = "trunc",
                 voxel_size: float = 0.05, anchor_spacing: float = 0.5, keep_radius: float = 1.25) -> None:
        super().__init__()
        self.voxel_size, self.d_an2an, self.r_keep = voxel_size, anchor_spacing, keep_radius
        self.root_net = root_net if root_net is not None else RootNet()
        self.contact_net = contact_net if contact_net is not None else SPVCNN(35, 12, rounding=rounding)
        self.register_buffer("img_mean", torch.tensor(IMAGE_MEAN).reshape(3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGE_STD).reshape(3, 1, 1), persistent=False)

    def image_branch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> (B, 41, S/4, S/4) root_net output."""
        return self.root_net((image - self.img_mean) / self.img_std)

    def forward(self, image: torch.Tensor, bbx_lurb: torch.Tensor, K: torch.Tensor, points: list[torch.Tensor],
                root_net_out: torch.Tensor | None = None) -> RCNetOutput:
        """Root and per-voxel contact for a batch.

        Args:
            image: (B, 3, S, S) square RGB crops in [0, 1] (S = 224), ImageNet-normalised inside.
            bbx_lurb: (B, 4) the crop squares [left, up, right, bottom] in full-resolution pixels.
            K: (B, 3, 3) intrinsics in full-resolution pixels.
            points: B tensors (n_b, 3): scene points inside the box frustum, camera frame, metres
                (SA-HMR's ``c_pcFst_all``; see :func:`meshrec_sahmr.scene.points_in_frustum`).
            root_net_out: the image branch's output if already computed.
        """
        B, _, _, S = image.shape
        if len(points) != B:
            raise ValueError(f"points must hold one (n, 3) tensor per image: {B}, got {len(points)}")
        for b, cloud in enumerate(points):
            if cloud.dim() != 2 or cloud.shape[1] != 3 or cloud.shape[0] == 0:
                raise ValueError(f"points[{b}] must be a non-empty (n, 3) cloud (the scene inside the box frustum), "
                                 f"got shape {tuple(cloud.shape)}")
        out = self.image_branch(image) if root_net_out is None else root_net_out
        uv, z, pelvis = parse_pelvis(out[:, :1], out[:, 1:2], bbx_lurb, K, S)
        fmap = out[:, 2:34]
        with torch.no_grad():
            anchors = pelvis.detach().repeat(1, 3, 1)
            anchors[:, 0, 2] -= self.d_an2an
            anchors[:, 2, 2] += self.d_an2an
            nearby, fell_back = [], []
            for b in range(B):
                keep = crop_near_anchors(points[b], anchors[b], self.r_keep)
                fell_back.append(not bool(keep.any()))
                nearby.append(points[b] if fell_back[-1] else points[b][keep])  # upstream: no point -> all
            batch = torch.cat([torch.full((len(p),), b, dtype=torch.int32, device=image.device)
                               for b, p in enumerate(nearby)])
            voxels = voxelize(torch.cat(nearby), voxel_size=self.voxel_size, batch=batch, reduction="first")
            coords = voxels.tensor.coords
            centres_all = coords[:, 1:].to(image.dtype) * self.voxel_size + self.voxel_size / 2
        counts = torch.bincount(coords[:, 0].long(), minlength=B).tolist()
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        point_starts = [0]
        for p in nearby:
            point_starts.append(point_starts[-1] + len(p))
        centres = [centres_all[starts[b]:starts[b + 1]] for b in range(B)]
        features = torch.cat([voxel_features(centres[b], anchors[b, 1], fmap[b], K[b], bbx_lurb[b]) for b in range(B)])
        result = self.contact_net(coords[:, 1:].to(features.dtype), features, batch=coords[:, 0])
        voxel_out = result.point_features
        split = [voxel_out[starts[b]:starts[b + 1]] for b in range(B)]
        conf = [v[:, :1] for v in split]
        offset = [v[:, 1:4] for v in split]
        seg = [v[:, 4:] for v in split]
        refined = torch.stack([refine_root(conf[b], offset[b], centres[b], anchors[b, 1]) for b in range(B)])[:, None]
        return RCNetOutput(
            pred_bi4s_pelvis_hm=out[:, :1], pred_bi4s_rdepth_hm=out[:, 1:2], pred_bi4s_seg_hm=out[:, 34:],
            fmap_img=fmap, pred_bi4s_pelvis_2d=uv, pred_c_pelvis_z=z, pred_c_pelvis=pelvis, c_root_anchors=anchors,
            c_pcFst_nearby=nearby, crop_fell_back=torch.tensor(fell_back, device=image.device),
            voxel_coords=coords, voxel_features=features,
            point_to_voxel=[voxels.point_to_voxel[point_starts[b]:point_starts[b + 1]] - starts[b] for b in range(B)],
            c_voxFst_nearby=centres, pred_vox_xyz_conf=conf, pred_vox_xyz_offset=offset, pred_vox_seg=seg,
            pred_vox_segid=[s.max(1)[1] for s in seg], pred_c_pelvis_refined=refined,
        )
