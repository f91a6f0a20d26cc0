"""The example plugin's method: the template stands in the box, and the plugin contract holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import meshrec
from meshrec.testing import synthetic_smpl
from meshrec_example import plugin
from meshrec_example.method import TemplateBaseline, default_camera


@pytest.fixture
def example(plugin_manager):
    plugin_manager.register(plugin, name="example")
    return meshrec.load_method("example", body_model=synthetic_smpl(dtype=torch.float64), device="cpu")


def project(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    uv = points @ camera.T
    return uv[..., :2] / uv[..., 2:]


def test_registered_with_its_inputs(plugin_manager):
    plugin_manager.register(plugin, name="example")
    assert meshrec.list_methods() == ["example"]
    assert plugin_manager.methods()["example"].load() is TemplateBaseline


def test_template_fills_each_box(example):
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    boxes = np.array([[100, 50, 80, 300], [400, 200, 40, 150]], dtype=np.float64)  # xywh
    camera = np.array([[900.0, 0, 320], [0, 900, 240], [0, 0, 1]])
    prediction = meshrec.predict(image, method=example, bbox=boxes, camera=camera)
    assert prediction.vertices.shape == (2, 6890, 3) and prediction.joint_names[15] == "head"
    projected = project(prediction.vertices, torch.as_tensor(camera))
    top, bottom = projected[..., 1].amin(1), projected[..., 1].amax(1)
    torch.testing.assert_close(top, torch.tensor([50.0, 200.0], dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(bottom, torch.tensor([350.0, 350.0], dtype=torch.float64), atol=0.05, rtol=0)
    centre_x = (projected[..., 0].amin(1) + projected[..., 0].amax(1)) / 2
    torch.testing.assert_close(centre_x, torch.tensor([140.0, 420.0], dtype=torch.float64), atol=0.05, rtol=0)
    # upright: head above feet in the image, and in front of the camera
    head, ankle = prediction.joints[:, 15], prediction.joints[:, 7]
    assert torch.all(head[:, 1] < ankle[:, 1]) and torch.all(prediction.vertices[..., 2] > 0)
    # the translation reproduces the mesh through the body model
    rebuilt = example.body_model(global_orient=prediction.global_orient[:, None], body_pose=prediction.body_pose,
                                 betas=prediction.betas, transl=prediction.transl, pose2rot=False)
    torch.testing.assert_close(rebuilt.vertices, prediction.vertices)


def test_whole_image_and_default_camera(example):
    image = torch.zeros(3, 300, 400)
    prediction = meshrec.predict(image, method=example)
    camera = default_camera(300, 400).double()
    assert math.isclose(camera[0, 0].item(), 500.0)
    projected = project(prediction.vertices[0], camera)
    assert abs(projected[:, 1].min().item()) < 0.05 and abs(projected[:, 1].max().item() - 300) < 0.05


def test_declared_options_and_no_checkpoint(plugin_manager, tmp_path):
    plugin_manager.register(plugin, name="example")
    with pytest.raises(TypeError, match=r"has no option 'refinement'.*did you mean 'refinements'.*refinements \(default 3\)"):
        meshrec.load_method("example", body_model=synthetic_smpl(), device="cpu", refinement=3)
    with pytest.raises(ValueError, match="refinements"):
        meshrec.load_method("example", body_model=synthetic_smpl(), device="cpu", refinements="many")
    method = meshrec.load_method("example", body_model=synthetic_smpl(), device="cpu", refinements="0")
    assert method.options == {"refinements": 0} and method.model.refinements == 0
    weights = tmp_path / "w.pth"
    torch.save({"state_dict": {}}, weights)
    with pytest.raises(meshrec.CheckpointError, match="has no weights"):
        meshrec.load_method("example", checkpoint=weights, body_model=synthetic_smpl(), device="cpu")


def test_people_of_a_batch_go_back_to_their_images(example):
    images = [np.zeros((200, 300, 3), dtype=np.uint8)] * 3
    boxes = [np.array([[10, 10, 50, 150], [100, 20, 40, 120]], dtype=np.float64),
             np.array([[50, 30, 60, 160]], dtype=np.float64), None]
    predictions = meshrec.predict(images, method=example, bbox=boxes, batch_size=3)
    assert [p.num_people for p in predictions] == [2, 1, 1]
    alone = meshrec.predict(images[1], method=example, bbox=boxes[1])
    torch.testing.assert_close(predictions[1].vertices, alone.vertices)
    assert predictions[0].extras["camera"].shape == (2, 3, 3)


def test_to_moves_every_tensor_the_method_holds(example):
    """State attached after construction (rest_vertices, rotation) moves with the network."""
    example.extra_tensors = {"nested": [torch.zeros(2)]}
    moved = example.to("meta")
    assert moved is example and example.device == torch.device("meta")
    for tensor in (example.rest_vertices, example.rest_joints, example.rotation, example.extra_tensors["nested"][0],
                   next(example.model.buffers()), example.body_model.v_template):
        assert tensor.device.type == "meta"
