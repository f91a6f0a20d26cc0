"""The ``example`` method: the template body placed upright in each person box."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

import meshrec
from meshrec.body import SMPL_OUTPUT_JOINT_NAMES

# SMPL's canonical frame is y up, facing +z; the camera frame is y down, z forward. A rotation
# of pi about x stands the body upright, facing the camera.
UPRIGHT_FACING_CAMERA = torch.diag(torch.tensor([1.0, -1.0, -1.0]))


def default_camera(height: int, width: int) -> torch.Tensor:
    """Intrinsics used when none are given: focal length = image diagonal in pixels (about a
    53 degree diagonal field of view), principal point at the image centre."""
    focal = math.hypot(height, width)
    return torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


class TemplatePlacement(nn.Module):
    """Translation that makes the upright template's projection fill each box.

    Starts from the pinhole estimate (the template's height H in metres spans the box height h
    in pixels at depth z = f_y H / h, centred on the box centre's ray), then corrects depth and
    centre from the projected box a few times: the template's own depth extent makes the first
    estimate off by a few per cent at close range; three corrections bring it under 0.01 px.

    Args:
        upright_vertices: (V, 3) template vertices after the upright rotation, metres.
        refinements: number of corrections from the projected box.
    """

    def __init__(self, upright_vertices: torch.Tensor, refinements: int = 3):
        super().__init__()
        self.register_buffer("vertices", upright_vertices)
        low, high = upright_vertices.amin(0), upright_vertices.amax(0)
        self.register_buffer("centre", (low + high) / 2)
        self.register_buffer("height", high[1] - low[1])
        self.refinements = refinements

    @staticmethod
    def _back_project(u: torch.Tensor, v: torch.Tensor, depth: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        return torch.stack([(u - camera[0, 2]) * depth / camera[0, 0], (v - camera[1, 2]) * depth / camera[1, 1], depth], -1)

    def forward(self, boxes: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """boxes (P, 4) x1, y1, x2, y2 pixels; camera (3, 3) -> translation (P, 3) metres."""
        box_centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        box_height = boxes[:, 3] - boxes[:, 1]
        depth = camera[1, 1] * self.height / box_height
        aim = box_centre
        transl = self._back_project(aim[:, 0], aim[:, 1], depth, camera) - self.centre
        for _ in range(self.refinements):
            projected = (self.vertices + transl[:, None]) @ camera.T
            uv = projected[..., :2] / projected[..., 2:]
            low, high = uv.amin(1), uv.amax(1)
            depth = depth * (high[:, 1] - low[:, 1]) / box_height
            aim = aim + box_centre - (low + high) / 2
            transl = self._back_project(aim[:, 0], aim[:, 1], depth, camera) - self.centre
        return transl


class TemplateBaseline(meshrec.Method):
    """The template body standing upright in each box (a baseline, and the plugin template).

    Everything meshrec needs to know about the method is declared here: name, summary, inputs,
    options. ``plugin.py`` only points the registry at this class.
    """

    name = "example"
    summary = "template body standing upright in each box (baseline; the plugin template)"
    inputs = frozenset({meshrec.Input.IMAGE})
    optional_inputs = frozenset({meshrec.Input.BBOX, meshrec.Input.CAMERA})
    needs_checkpoint = False
    batch_size = 64
    joint_names = SMPL_OUTPUT_JOINT_NAMES
    options = (
        meshrec.Option("refinements", 3, "corrections of depth and centre from the projected box", type=int),
    )

    @classmethod
    def build(cls, checkpoint: Path | None, body_model: nn.Module | None, device: torch.device,
              refinements: int) -> "TemplateBaseline":
        if checkpoint is not None:
            raise meshrec.CheckpointError("method 'example' has no weights; do not pass a checkpoint")
        if refinements < 0:
            raise ValueError(f"refinements must be >= 0, got {refinements}")
        rotation = UPRIGHT_FACING_CAMERA.to(device=device, dtype=body_model.v_template.dtype)
        rest = body_model(global_orient=rotation[None], body_pose=cls._identity_pose(body_model, 1),
                          betas=torch.zeros(1, body_model.num_betas, dtype=rotation.dtype, device=device),
                          pose2rot=False)
        model = TemplatePlacement(rest.vertices[0].detach(), refinements).to(device)
        method = cls(model, body_model, device, refinements=refinements)
        method.rest_vertices = rest.vertices[0].detach()
        method.rest_joints = rest.joints[0].detach()
        method.rotation = rotation
        return method

    @staticmethod
    def _identity_pose(body_model: nn.Module, count: int) -> torch.Tensor:
        eye = torch.eye(3, dtype=body_model.v_template.dtype, device=body_model.v_template.device)
        return eye.expand(count, body_model.NUM_BODY_JOINTS, 3, 3)

    def predict_batch(self, samples: list[meshrec.Sample]) -> list[meshrec.Prediction]:
        dtype = self.rest_vertices.dtype
        transl, cameras, owner = [], [], []
        for index, sample in enumerate(samples):
            height, width = sample.image().shape[:2]
            camera = (torch.as_tensor(sample.camera, dtype=dtype) if sample.camera is not None
                      else default_camera(height, width).to(dtype))
            boxes = (torch.as_tensor(sample.bbox, dtype=dtype) if sample.bbox is not None
                     else torch.tensor([[0.0, 0.0, width, height]], dtype=dtype))
            camera, boxes = camera.to(self.device), boxes.to(self.device)
            transl.append(self.model(boxes, camera))
            cameras.append(camera.expand(len(boxes), 3, 3))
            owner += [index] * len(boxes)
        transl = torch.cat(transl)
        people = len(transl)
        everyone = meshrec.Prediction(
            vertices=self.rest_vertices + transl[:, None],
            joints=self.rest_joints + transl[:, None],
            global_orient=self.rotation.expand(people, 3, 3),
            body_pose=self._identity_pose(self.body_model, people),
            betas=torch.zeros(people, self.body_model.num_betas, dtype=dtype, device=self.device),
            transl=transl,
            scores=torch.ones(people, dtype=dtype, device=self.device),
            faces=self.body_model.faces_tensor,
            joint_names=self.joint_names,
            extras={"camera": torch.cat(cameras)},
        )
        return everyone.split(torch.tensor(owner), len(samples))
