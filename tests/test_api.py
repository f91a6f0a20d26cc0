"""meshrec.predict / load_method: input forms, per-input extras, checks before work, Prediction."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
from PIL import Image

import meshrec
from meshrec import Input

LOADS = []


class Recorder(meshrec.Method):
    """Returns one person per input, recording what it was given."""

    name = "recorder"
    summary = "one person per input, recording what it was given"
    inputs = frozenset({Input.IMAGE, Input.BBOX})
    optional_inputs = frozenset({Input.CAMERA, Input.SCENE, Input.KEYPOINTS})
    body_model_type = None
    batch_size = 2
    options = (meshrec.Option("option", 0, "a recorded option"),)

    @classmethod
    def build(cls, checkpoint, body_model, device, **config):
        LOADS.append((checkpoint, device, config))
        method = cls(torch.nn.Linear(1, 1), body_model, device, **config)
        method.batches = []
        return method

    def predict_batch(self, samples):
        self.batches.append(samples)
        return [
            meshrec.Prediction(
                vertices=torch.full((len(s.bbox), 4, 3), float(s.index)), joints=torch.zeros(len(s.bbox), 2, 3),
                global_orient=torch.eye(3).expand(len(s.bbox), 3, 3), body_pose=torch.eye(3).expand(len(s.bbox), 23, 3, 3),
                betas=torch.zeros(len(s.bbox), 10), transl=torch.zeros(len(s.bbox), 3), scores=torch.ones(len(s.bbox)),
                faces=torch.tensor([[0, 1, 2], [1, 2, 3]]),
                extras={"image_shape": torch.tensor(s.image().shape), "bbox": torch.as_tensor(s.bbox)},
            )
            for s in samples
        ]


class NeedsCheckpoint(Recorder):
    name = "weighted"
    needs_checkpoint = True
    checkpoint_help = "Download it from the authors' release page."


class NeedsBody(Recorder):
    name = "bodied"
    body_model_type = "smpl"


@pytest.fixture
def methods(plugin_manager):
    def register(registry):
        for cls in (Recorder, NeedsCheckpoint, NeedsBody):
            registry.add(cls)

    plugin_manager.register(types.SimpleNamespace(meshrec_register_methods=meshrec.hookimpl(register)), name="test")
    LOADS.clear()
    return plugin_manager


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, size in enumerate([(64, 48), (32, 40), (50, 50)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", size, (i * 40, 10, 20)).save(path)
        paths.append(path)
    return paths


def test_single_path(methods, images):
    prediction = meshrec.predict(images[0], method="recorder", bbox=[1, 2, 10, 20], device="cpu")
    assert isinstance(prediction, meshrec.Prediction)
    assert prediction.method == "recorder" and prediction.source == str(images[0])
    torch.testing.assert_close(prediction.extras["bbox"], torch.tensor([[1.0, 2.0, 11.0, 22.0]], dtype=torch.float64))
    assert tuple(prediction.extras["image_shape"].tolist()) == (48, 64, 3)


def test_folder_list_and_per_input_values(methods, images):
    folder = images[0].parent
    (folder / "notes.txt").write_text("not an image")
    boxes = [[0, 0, 5, 5], np.array([[1, 1, 2, 2], [3, 3, 4, 4]]), torch.tensor([2.0, 2, 3, 3])]
    predictions = meshrec.predict(folder, method="recorder", bbox=boxes, bbox_format="xyxy", device="cpu")
    assert [p.source for p in predictions] == [str(p) for p in images]
    assert [p.num_people for p in predictions] == [1, 2, 1]
    assert [float(p.vertices[0, 0, 0]) for p in predictions] == [0.0, 1.0, 2.0]
    shared = meshrec.predict([str(p) for p in images], method="recorder", bbox=np.array([0, 0, 4, 4]), device="cpu")
    assert all(p.num_people == 1 for p in shared)


def test_arrays_and_tensors(methods):
    array = np.zeros((30, 40, 3), dtype=np.uint8)
    one = meshrec.predict(array, method="recorder", bbox=[0, 0, 5, 5], device="cpu")
    assert tuple(one.extras["image_shape"].tolist()) == (30, 40, 3) and one.source == "input[0]"
    batch = torch.rand(3, 3, 20, 10)
    many = meshrec.predict(batch, method="recorder", bbox=np.array([0, 0, 5, 5]), device="cpu")
    assert len(many) == 3 and tuple(many[0].extras["image_shape"].tolist()) == (20, 10, 3)
    mixed = meshrec.predict([array, batch[0]], method="recorder", bbox=np.array([0, 0, 5, 5]), device="cpu")
    assert [p.source for p in mixed] == ["input[0]", "input[1]"]


def test_batching_and_method_reuse(methods, images):
    method = meshrec.load_method("recorder", device="cpu", option=1)
    predictions = meshrec.predict(images * 2, method=method, bbox=np.array([0, 0, 5, 5]), batch_size=4)
    assert len(predictions) == 6 and [len(batch) for batch in method.batches] == [4, 2]
    meshrec.predict(images, method=method, bbox=np.array([0, 0, 5, 5]))
    assert [len(batch) for batch in method.batches][2:] == [2, 1]  # the method's own batch size
    assert LOADS == [(None, torch.device("cpu"), {"option": 1})]
    with pytest.raises(TypeError, match="already loaded"):
        meshrec.predict(images, method=method, bbox=np.array([0, 0, 5, 5]), option=2)


def test_extras_reach_the_method_in_their_layouts(methods, images):
    method = meshrec.load_method("recorder", device="cpu")
    K = np.array([[500.0, 0, 32], [0, 500, 24], [0, 0, 1]])
    meshrec.predict(images[0], method=method, bbox=[0, 0, 5, 5], camera=K, scene=np.random.default_rng(0).uniform(1, 4, (10, 3)),
                    keypoints=np.ones((17, 2)))
    sample = method.batches[0][0]
    np.testing.assert_array_equal(sample.camera, K)
    assert sample.scene.shape == (10, 3)
    assert sample.keypoints.shape == (1, 17, 3) and np.all(sample.keypoints[..., 2] == 1)


def test_missing_input_is_found_before_loading(methods, images):
    with pytest.raises(meshrec.MissingInputError, match=r"needs bbox for every input; missing for .*img1.png.*\(pass bbox=\.\.\.\)"):
        meshrec.predict(images[:2], method="recorder", bbox=[[0, 0, 5, 5], None])
    assert LOADS == []


def test_unreadable_and_missing_images(methods, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(meshrec.ImageReadError, match="cannot read image .*broken.jpg"):
        meshrec.predict([images[0], broken], method="recorder", bbox=np.array([0, 0, 5, 5]))
    with pytest.raises(meshrec.ImageReadError, match="does not exist"):
        meshrec.predict(tmp_path / "missing.png", method="recorder", bbox=[0, 0, 5, 5])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(meshrec.ImageReadError, match="holds no images"):
        meshrec.predict(empty, method="recorder", bbox=[0, 0, 5, 5])
    assert LOADS == []
    with pytest.raises(meshrec.ImageReadError, match="must be uint8"):
        meshrec.predict(np.zeros((4, 4, 3)), method="recorder", bbox=[0, 0, 1, 1], device="cpu")


@pytest.mark.parametrize(
    "extras, error, message",
    [
        (dict(bbox=[0, 0, -1, 5]), ValueError, "zero or negative width"),
        (dict(bbox=[0, 0, 5]), ValueError, r"bbox .* must have shape \(4,\) or \(P, 4\)"),
        (dict(bbox=[0, 0, float("nan"), 5]), ValueError, "NaN"),
        (dict(bbox=[0, 0, 5, 5], camera=np.eye(4)), ValueError, r"camera .* must be a \(3, 3\) intrinsics"),
        (dict(bbox=[0, 0, 5, 5], camera=np.diag([-1.0, 1, 1])), ValueError, "positive focal"),
        (dict(bbox=[0, 0, 5, 5], scene=np.zeros((5, 2))), ValueError, "scene for"),
        (dict(bbox=[0, 0, 5, 5], keypoint_sequence=np.zeros((2, 17, 3))), ValueError, "does not use"),
        (dict(bbox="abc"), ValueError, "must be numeric"),
    ],
)
def test_bad_extras(methods, images, extras, error, message):
    with pytest.raises(error, match=message):
        meshrec.predict(images[0], method="recorder", **extras)


def test_per_input_list_of_wrong_length(methods, images):
    with pytest.raises(ValueError, match="list of 2 entries for 3 inputs"):
        meshrec.predict(images, method="recorder", bbox=[[0, 0, 1, 1], [0, 0, 1, 1]])


def test_checkpoint_errors(methods, images, tmp_path):
    with pytest.raises(meshrec.CheckpointError, match="needs a checkpoint.*authors' release page"):
        meshrec.load_method("weighted")
    with pytest.raises(meshrec.CheckpointError, match="does not exist"):
        meshrec.load_method("weighted", checkpoint=tmp_path / "nope.pth")
    weights = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    meshrec.load_method("weighted", checkpoint=weights, device="cpu")
    assert LOADS[-1][0] == weights


def test_body_model_errors_and_resolution(methods, body_models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(meshrec.BodyModelNotFoundError, match="smpl.is.tue.mpg.de"):
        meshrec.load_method("bodied", device="cpu")
    method = meshrec.load_method("bodied", body_model=body_models_dir, device="cpu")
    assert method.body_model.gender == "neutral"
    from meshrec.testing import synthetic_smpl

    module = synthetic_smpl()
    assert meshrec.load_method("bodied", body_model=module, device="cpu").body_model is module


def test_mannequin_by_name_and_as_the_fallback_of_a_method_that_allows_it(methods, plugin_manager, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    from meshrec.body.mannequin import mannequin_smpl

    expected = mannequin_smpl(create_transl=False).v_template
    chosen = meshrec.load_method("bodied", body_model="mannequin", device="cpu").body_model  # no warning
    assert torch.equal(chosen.v_template, expected)

    class Fallback(NeedsBody):
        name = "fallback"
        mannequin_fallback = True

    plugin_manager.register(types.SimpleNamespace(meshrec_register_methods=meshrec.hookimpl(
        lambda registry: registry.add(Fallback))), name="fallback")
    with pytest.warns(UserWarning, match="no SMPL files found, so method 'fallback' uses meshrec's synthetic mannequin"):
        fallen = meshrec.load_method("fallback", device="cpu").body_model
    assert torch.equal(fallen.v_template, expected)
    with pytest.raises(meshrec.BodyModelNotFoundError):  # a folder that is given and empty is an error
        meshrec.load_method("fallback", body_model=tmp_path / "none", device="cpu")


def test_device_resolution(methods):
    assert meshrec.load_method("recorder").device == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            meshrec.load_method("recorder", device="cuda")
    with pytest.raises(ValueError, match="invalid device"):
        meshrec.load_method("recorder", device="gpu0")


def test_bad_inputs_type(methods):
    with pytest.raises(TypeError, match="inputs must be"):
        meshrec.predict(42, method="recorder")
    with pytest.raises(TypeError, match=r"input\[1\] must be"):
        meshrec.predict([np.zeros((4, 4, 3), np.uint8), 3], method="recorder")
    with pytest.raises(ValueError, match="bbox_format"):
        meshrec.predict(np.zeros((4, 4, 3), np.uint8), method="recorder", bbox_format="cxcywh")


def test_progress_bar(methods, images, capsys):
    meshrec.predict(images * 3, method="recorder", bbox=np.array([0, 0, 5, 5]), progress=True, device="cpu")
    assert "meshrec recorder" in capsys.readouterr().err
    meshrec.predict(images * 3, method="recorder", bbox=np.array([0, 0, 5, 5]), device="cpu")
    assert "meshrec recorder" not in capsys.readouterr().err  # not a terminal


def _prediction(people=2) -> meshrec.Prediction:
    return meshrec.Prediction(
        vertices=torch.randn(people, 5, 3), joints=torch.randn(people, 4, 3), global_orient=torch.eye(3).expand(people, 3, 3),
        body_pose=torch.eye(3).expand(people, 23, 3, 3), betas=torch.randn(people, 10), transl=torch.randn(people, 3),
        scores=torch.ones(people), method="m", extras={"cam": torch.randn(people, 3)}, source="a.jpg",
        joint_names=("a", "b", "c", "d"),
    )


def test_prediction_is_a_pytree():
    prediction = _prediction()
    leaves, spec = pytree.tree_flatten(prediction)
    assert all(torch.is_tensor(leaf) or leaf is None for leaf in leaves)  # None fields are leaves
    rebuilt = pytree.tree_unflatten([None if leaf is None else leaf * 2 for leaf in leaves], spec)
    assert isinstance(rebuilt, meshrec.Prediction) and rebuilt.method == "m" and rebuilt.joint_names == prediction.joint_names
    torch.testing.assert_close(rebuilt.extras["cam"], prediction.extras["cam"] * 2)
    keyed, _ = pytree.tree_flatten_with_path(prediction)
    assert any("vertices" in pytree.keystr(path) for path, _ in keyed)


def test_prediction_through_torch_compile():
    def shift(prediction: meshrec.Prediction, offset: torch.Tensor) -> meshrec.Prediction:
        return meshrec.Prediction(
            vertices=prediction.vertices + offset, joints=prediction.joints + offset,
            global_orient=prediction.global_orient, body_pose=prediction.body_pose, betas=prediction.betas,
            transl=prediction.transl + offset, scores=prediction.scores, method=prediction.method,
            extras=prediction.extras,
        )

    prediction, offset = _prediction(), torch.tensor([1.0, 2.0, 3.0])
    compiled = torch.compile(shift, fullgraph=True, backend="aot_eager")
    result = compiled(prediction, offset)
    assert isinstance(result, meshrec.Prediction)
    torch.testing.assert_close(result.vertices, prediction.vertices + offset)


def test_prediction_numpy_and_npz(tmp_path):
    prediction = _prediction()
    arrays = prediction.numpy()
    assert arrays["vertices"].shape == (2, 5, 3) and arrays["extras/cam"].shape == (2, 3)
    path = prediction.save_npz(tmp_path / "p.npz")
    with np.load(path) as saved:
        np.testing.assert_array_equal(saved["betas"], prediction.betas.numpy())
        assert str(saved["source"]) == "a.jpg"
    assert prediction.cpu().detach().to("cpu").vertices.device.type == "cpu"
