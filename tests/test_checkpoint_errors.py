"""Checkpoint errors: a file that is not a checkpoint at all is named as such (never with advice
to trust it), damaged ones as damaged, and before the body model is looked for."""

from __future__ import annotations

import pytest
import torch

import meshrec
from meshrec.errors import CheckpointError, front_door
from meshrec.io.checkpoints import identify_checkpoint, load_checkpoint


class CustomMeta:
    """An object of a class the safe loader does not allow (like a training config object)."""


class Weighted(meshrec.Method):
    name = "weighted"
    summary = "needs a checkpoint and SMPL"
    needs_checkpoint = True
    options = (meshrec.Option("trust_checkpoint", False, "unpickle fully"),)

    @classmethod
    def build(cls, checkpoint, body_model, device, trust_checkpoint):
        load_checkpoint(checkpoint, trust=trust_checkpoint)
        return cls(torch.nn.Identity(), body_model, device, trust_checkpoint=trust_checkpoint)


@pytest.fixture
def weighted(plugin_manager):
    plugin_manager.methods().add(Weighted)


@pytest.mark.parametrize("content, described", [(b"", "an empty file"), (b"<html>404</html>", "starting with b'<htm'"),
                                                (b"\x89PNG\r\n\x1a\n", "starting with b'\\\\x89PNG'")])
def test_not_a_checkpoint_at_all(tmp_path, content, described):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    for trust in (False, True):
        with pytest.raises(CheckpointError, match="is not a torch checkpoint at all") as caught:
            load_checkpoint(path, trust=trust)
        assert described.replace("\\\\", "\\") in str(caught.value) and "trust" not in str(caught.value)


def test_formats_are_recognised(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "new.pth")
    torch.save({"a": torch.zeros(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert identify_checkpoint(tmp_path / "new.pth") == "zip"
    assert identify_checkpoint(tmp_path / "old.pth") == "legacy"
    with pytest.raises(CheckpointError, match="is a folder"):
        identify_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        identify_checkpoint(tmp_path / "missing.pth")


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_checkpoints_are_damaged_not_untrusted(tmp_path, zip_format):
    path = tmp_path / "cut.pth"
    torch.save({"weights": torch.arange(10000.0)}, path, _use_new_zipfile_serialization=zip_format)
    path.write_bytes(path.read_bytes()[:3000])
    for trust in (False, True):
        with pytest.raises(CheckpointError, match="damaged or truncated torch checkpoint.*download it again") as caught:
            load_checkpoint(path, trust=trust)
        assert "trust" not in str(caught.value)


def test_checkpoint_is_checked_before_the_body_model(weighted, tmp_path, monkeypatch):
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(tmp_path / "no-smpl"))
    monkeypatch.setenv("HOME", str(tmp_path))
    garbage = tmp_path / "weights.pth"
    garbage.write_text("not weights")
    with pytest.raises(CheckpointError, match="not a torch checkpoint at all"):
        meshrec.load_method("weighted", checkpoint=garbage, device="cpu")
    good = tmp_path / "good.pth"
    torch.save({"a": torch.zeros(1)}, good)
    with pytest.raises(meshrec.BodyModelNotFoundError):
        meshrec.load_method("weighted", checkpoint=good, device="cpu")


def test_untrusted_advice_is_spelled_for_the_front_door(tmp_path):
    path = tmp_path / "extra_objects.pth"
    torch.save({"meta": CustomMeta(), "state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"trust_checkpoint=True\."):
        load_checkpoint(path)
    token = front_door.set("cli")
    try:
        with pytest.raises(CheckpointError, match="--trust-checkpoint"):
            load_checkpoint(path)
    finally:
        front_door.reset(token)


def test_several_files_by_role_and_release_folders(weighted, tmp_path, body_models_dir):
    seen = []

    class Staged(Weighted):
        name = "staged"

        @classmethod
        def build(cls, checkpoint, body_model, device, trust_checkpoint):
            seen.append(checkpoint)
            return cls(torch.nn.Identity(), body_model, device, trust_checkpoint=trust_checkpoint)

    meshrec.plugins.get_plugin_manager().methods().add(Staged)
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({}, first)
    torch.save({}, second)
    meshrec.load_method("staged", checkpoint={"stage1": first, "stage2": str(second)}, body_model=body_models_dir,
                        device="cpu")
    assert seen[-1] == {"stage1": first, "stage2": second}
    meshrec.load_method("staged", checkpoint=tmp_path, body_model=body_models_dir, device="cpu")
    assert seen[-1] == tmp_path
    second.write_text("oops")
    with pytest.raises(CheckpointError, match="b.pt is not a torch checkpoint at all"):
        meshrec.load_method("staged", checkpoint={"stage1": first, "stage2": second}, body_model=body_models_dir)
