"""SA-HMR's network (``net.*`` of ``sahmr_rich_e30.pth`` / ``sahmr_prox_e30.pth``): RCNet + METRO-enhanced.

Sub-networks keep SA-HMR's names (``rcnet.root_net.hrnet``, ``rcnet.contact_net``,
``metro_enhanced.backbone``, ``metro_enhanced.trans_encoder.{0,1,2}``, ...) and return SA-HMR's
outputs in its units, so they can be compared with the upstream code directly. See
:mod:`meshrec_sahmr.rcnet` and :mod:`meshrec_sahmr.metro`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from meshrec_sahmr.metro import CPOSE, METROEnhanced
from meshrec_sahmr.rcnet import IMAGE_MEAN, IMAGE_STD, RCNet, RCNetOutput, contact_points, resample_contact_points

__all__ = ["CPOSE", "METROEnhanced", "RCNet", "SAHMRNetwork", "SAHMROutput"]

NUM_CONTACT_POINTS = 500


@dataclass
class SAHMROutput:
    """What :meth:`SAHMRNetwork.forward` returns (SA-HMR's batch keys).

    Attributes:
        rcnet: module 1's outputs (initial and refined root, voxels, contact logits).
        metro: module 2's outputs (``pred_verts`` root-relative, per-block features, ...).
        pred_c_pcSeg: (B, 500, 3) contact points, camera frame; pcSeg_pids (B, 500); pcSeg_mask (B, 500).
        num_contact_points: (B,) labelled contact points found before resampling / padding.
        pred_c_verts: (B, 6890, 3) the mesh in the camera frame, metres (pred_verts + refined root).
    """

    rcnet: RCNetOutput
    metro: dict[str, torch.Tensor]
    pred_c_pcSeg: torch.Tensor
    pcSeg_pids: torch.Tensor
    pcSeg_mask: torch.Tensor
    num_contact_points: torch.Tensor
    pred_c_verts: torch.Tensor


class SAHMRNetwork(nn.Module):
    """SA-HMR (``net.*``): ``rcnet`` and ``metro_enhanced``.

    Args:
        rcnet / metro_enhanced: the sub-networks (defaults: the released architecture).
        rounding: RCNet's SPVCNN downsampling division when ``rcnet`` is built here ("trunc", what the
            released weights were trained with; "floor" for uniform geometry).
        num_contact_points: contact points fed to module 2 (500).
    """

    def __init__(self, rcnet: RCNet | None = None, metro_enhanced: METROEnhanced | None = None, *,
                 rounding: str = "trunc", num_contact_points: int = NUM_CONTACT_POINTS) -> None:
        super().__init__()
        self.rcnet = rcnet if rcnet is not None else RCNet(rounding=rounding)
        self.metro_enhanced = metro_enhanced if metro_enhanced is not None else METROEnhanced()
        self.num_contact_points = num_contact_points
        self.register_buffer("img_mean", torch.tensor(IMAGE_MEAN).reshape(3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(IMAGE_STD).reshape(3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor, bbx_lurb: torch.Tensor, K: torch.Tensor, points: list[torch.Tensor],
                generator: torch.Generator | None = None) -> SAHMROutput:
        """The mesh of the person in each crop.

        Args:
            image: (B, 3, 224, 224) RGB crops in [0, 1].
            bbx_lurb: (B, 4) crop squares in full-resolution pixels; K: (B, 3, 3).
            points: B scene point clouds (n_b, 3) inside the box frustum, camera frame, metres.
            generator: CPU generator for drawing 500 of more contact points (None: the global one,
                as upstream).
        """
        rc = self.rcnet(image, bbx_lurb, K, points)
        return self.mesh_from_root(image, rc, generator)

    def mesh_from_root(self, image: torch.Tensor, rc: RCNetOutput,
                       generator: torch.Generator | list[torch.Generator] | None = None,
                       tokens: torch.Tensor | None = None) -> SAHMROutput:
        """Module 2 given module 1's output (SA-HMR's ``get_pc_belong_to_vox_seg`` ->
        ``prepare_N_pcSeg`` -> ``forward_mainstep``). ``generator``: one for all samples or one per sample."""
        chosen = [contact_points(rc.c_pcFst_nearby[b], rc.point_to_voxel[b], rc.pred_vox_segid[b],
                                 rc.c_voxFst_nearby[b]) for b in range(len(image))]
        found = torch.stack([(i != 0).sum() for _, i in chosen])
        generators = generator if isinstance(generator, (list, tuple)) else [generator] * len(chosen)
        resampled = [resample_contact_points(p, i, self.num_contact_points, g) for (p, i), g in zip(chosen, generators)]
        points = torch.stack([r[0] for r in resampled])
        pids = torch.stack([r[1] for r in resampled])
        mask = torch.stack([r[2] for r in resampled])
        root = rc.pred_c_pelvis_refined
        metro = self.metro_enhanced((image - self.img_mean) / self.img_std, points - root, pids, mask, tokens=tokens)
        return SAHMROutput(rcnet=rc, metro=metro, pred_c_pcSeg=points, pcSeg_pids=pids, pcSeg_mask=mask,
                           num_contact_points=found, pred_c_verts=metro["pred_verts"] + root)
