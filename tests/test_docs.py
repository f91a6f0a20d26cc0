"""Every code block of README.md, docs/*.md and plugins/*/README.md runs as written.

Python blocks run in order, one namespace per file, in a sandbox folder laid out as a user's
would be, with synthetic files where licensed ones go: ``~/body_models`` (synthetic SMPL-format
files), ``photo.jpg``, HMR checkpoints in mmhuman3d's exact layout, a 3DPW folder, and so on.
Names a block leaves to the reader (``K``, ``kp``, ``pred_joints``, ...) are defined by
``READER_INPUTS`` below, per file. Bash blocks run line by line in the same sandbox, except
``pip install`` lines (installing is what CI's own steps do). A block preceded by
``<!-- docs-test: skip: REASON -->`` is not run; the reason is required. A block preceded by
``<!-- docs-test: needs: MODULE ... -->`` runs only where those modules are installed (optional
packages CI installs, e.g. the photos' wheels). Blocks tagged ``text``
(or untagged) are output or layouts, not code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

REPOSITORY = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([REPOSITORY / "README.md", *(REPOSITORY / "docs").glob("*.md"),
                    *(REPOSITORY / "plugins").glob("*/README.md")])
RUN_LANGUAGES = {"python", "bash", "sh", "console"}
SKIP = re.compile(r"<!--\s*docs-test:\s*skip:\s*(\S.*?)\s*-->")
NEEDS = re.compile(r"<!--\s*docs-test:\s*needs:\s*([\w. ]+?)\s*-->")


@dataclass
class Block:
    document: Path
    line: int
    language: str
    code: str
    skip: str | None
    needs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(REPOSITORY)}:{self.line}"


def blocks_of(document: Path) -> list[Block]:
    found, lines = [], document.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[index])
        if not match:
            index += 1
            continue
        start, language = index, match.group(1).lower()
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
        before = "\n".join(lines[max(0, start - 3):start])
        skip, needs = SKIP.search(before), NEEDS.search(before)
        found.append(Block(document, start + 1, language, "\n".join(lines[start + 1:end]) + "\n",
                           skip.group(1) if skip else None, tuple(needs.group(1).split()) if needs else ()))
        index = end + 1
    return found


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks_of(document)]
RUNNABLE = [block for block in ALL_BLOCKS if block.language in RUN_LANGUAGES]


def test_every_skip_gives_a_reason_and_blocks_are_tagged():
    for document in DOCUMENTS:
        text = document.read_text()
        assert len(re.findall(r"docs-test:\s*skip", text)) == len(SKIP.findall(text)), f"{document}: skip without reason"
    assert len(RUNNABLE) >= 8, "the docs lost their examples?"


# ---------------------------------------------------------------------------------------------
# The sandbox: a user's folder, with synthetic stand-ins for licensed files


def _coco_keypoints(body_models: Path, image_size=(640, 480), layout: str = "coco17") -> np.ndarray:
    """(1, K, 3) keypoints of a synthetic standing person 3 m in front of a camera with f = 1000."""
    from meshrec.body import SMPL, KeypointModel, get_layout
    from meshrec.camera import project

    smpl = SMPL(body_models, dtype=torch.float64, create_transl=False)
    upright = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    out = smpl(global_orient=upright[None, None], body_pose=torch.eye(3, dtype=torch.float64).expand(1, 23, 3, 3),
               transl=torch.tensor([[0.0, 0.2, 3.0]], dtype=torch.float64), pose2rot=False)
    points = KeypointModel(get_layout(layout)).double()(out.vertices, out.joints)[0]
    K = torch.tensor([[1000.0, 0, image_size[0] / 2], [0, 1000.0, image_size[1] / 2], [0, 0, 1]], dtype=torch.float64)
    uv = project(points, K)
    return torch.cat([uv.detach(), torch.ones(len(uv), 1, dtype=torch.float64)], 1)[None].numpy()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from PIL import Image

    from meshrec.testing import write_synthetic_body_models

    root = tmp_path_factory.mktemp("user")
    home = root / "home"
    body_models = write_synthetic_body_models(home / "body_models", smplh=True)
    (root / "models").symlink_to(body_models)
    for name in ("J_regressor_h36m.npy", "J_regressor_extra.npy"):
        (root / name).write_bytes((body_models / name).read_bytes())
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    photo.save(root / "photo.jpg")
    for folder, count in (("folder", 2), ("images", 2), ("frames", 1)):
        (root / folder).mkdir()
        for i in range(count):
            photo.save(root / folder / f"frame{i}.jpg" if folder == "frames" else root / folder / f"image{i}.jpg")
    (root / "keypoints.json").write_text(json.dumps({"frame0.jpg": {"keypoints": _coco_keypoints(body_models).tolist()}}))

    sys.path.insert(0, str(REPOSITORY / "plugins" / "hmr" / "tests"))
    try:
        from hmr_checkpoints import mmhuman3d_hmr_state_dict, mmhuman3d_meta
        from pw3d_synthetic import write_synthetic_pw3d
    finally:
        sys.path.pop(0)
    checkpoint = {"meta": mmhuman3d_meta(), "state_dict": mmhuman3d_hmr_state_dict()}
    for name in ("resnet50_hmr_gta_ft.pth", "resnet50_hmr_gta_ft-f444e49c_20220416.pth"):
        torch.save(checkpoint, root / name)
    write_synthetic_pw3d(root / "data" / "datasets" / "pw3d", frames=4)

    from meshrec.scene import SPVCNN

    contact = SPVCNN(rounding="trunc").state_dict()
    torch.save({"network": {f"net.rcnet.contact_net.{k}": v for k, v in contact.items()}}, root / "sahmr_rich_e30.pth")
    return root


# What each document leaves to its reader, made concrete (synthetic values of the right shapes).
READER_INPUTS = {
    "README.md": """
x, y, w, h = 120, 40, 200, 420
K = np.array([[1000.0, 0, 320], [0, 1000.0, 240], [0, 0, 1]])
kp = _coco_keypoints(Path("~/body_models").expanduser())
betas, body_pose, global_orient = torch.zeros(1, 10), torch.zeros(1, 69), torch.zeros(1, 3)
""",
    "plugins/fit/README.md": """
K = np.array([[1000.0, 0, 320], [0, 1000.0, 240], [0, 0, 1]])
kp = _coco_keypoints(Path("~/body_models").expanduser(), layout="openpose25")
""",
    "docs/metrics.md": """
generator = torch.Generator().manual_seed(0)
pred_joints, gt_joints = torch.randn(4, 14, 3, generator=generator), torch.randn(4, 14, 3, generator=generator)
pred17, gt17 = torch.randn(4, 17, 3, generator=generator), torch.randn(4, 17, 3, generator=generator)
pred, gt = torch.randn(4, 24, 3, generator=generator), torch.randn(4, 24, 3, generator=generator)
visibility = torch.rand(4, 24, generator=generator) > 0.3

class _Batch:
    def __init__(self):
        self.pred_params = {"betas": torch.randn(2, 10, generator=generator), "body_pose": 0.2 * torch.randn(2, 69, generator=generator),
                            "global_orient": torch.randn(2, 3, generator=generator)}
        self.gt_params = {"betas": torch.randn(2, 10, generator=generator), "body_pose": 0.2 * torch.randn(2, 69, generator=generator),
                          "global_orient": torch.randn(2, 3, generator=generator)}
        self.gender = ["m", "f"]

reader = [_Batch(), _Batch()]
""",
    "docs/scene_encoder.md": """
generator = torch.Generator().manual_seed(0)
points_m = torch.rand(2000, 3, generator=generator) * 2 - 1
features = torch.randn(2000, 35, generator=generator)
batch = torch.zeros(2000, dtype=torch.long)
""",
    "docs/smpl_kernels.md": """
betas, go, bp, t = torch.zeros(2, 10), torch.zeros(2, 3), torch.zeros(2, 69), torch.zeros(2, 3)
per_subject_template = torch.zeros(6890, 3)
from meshrec.body.mannequin import mannequin_smpl as _mannequin
arrays = _mannequin()._kernel_inputs()[0]
regressor = __import__("meshrec").ops.SparseRegressor.from_vertex_ids([411, 3500], 6890)
ids, rotations = [3500, 411, 12], torch.eye(3).expand(2, 24, 3, 3)
""",
}


def _python_namespace(document: str) -> dict:
    namespace = {"np": np, "torch": torch, "Path": Path, "_coco_keypoints": _coco_keypoints, "__name__": "__docs__"}
    exec(READER_INPUTS.get(document, ""), namespace)  # noqa: S102 (the test's own inputs)
    return namespace


def _bash_commands(code: str) -> list[str]:
    joined = code.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#") and not line.strip().startswith("pip install")]


@pytest.mark.slow
@pytest.mark.parametrize("document", sorted({str(b.document.relative_to(REPOSITORY)) for b in RUNNABLE}))
def test_code_blocks_run_as_written(document, sandbox, monkeypatch):
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("HOME", str(sandbox / "home"))
    monkeypatch.setenv("MESHREC_BODY_MODELS", str(sandbox / "home" / "body_models"))
    namespace = None
    ran = 0
    for block in (b for b in RUNNABLE if str(b.document.relative_to(REPOSITORY)) == document):
        if block.skip:
            continue
        if any(importlib.util.find_spec(module) is None for module in block.needs):
            continue
        if block.language == "python":
            namespace = namespace if namespace is not None else _python_namespace(document)
            try:
                exec(compile(block.code, block.name, "exec"), namespace)  # noqa: S102
            except Exception as error:
                pytest.fail(f"{block.name}: {type(error).__name__}: {error}")
        else:
            environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
            for command in _bash_commands(block.code):
                result = subprocess.run(command, shell=True, cwd=sandbox, env=environment, capture_output=True,
                                        text=True, timeout=600, executable="/bin/bash")
                assert result.returncode == 0, f"{block.name}: `{command}` failed:\n{result.stderr[-3000:]}"
        ran += 1
    if ran == 0:
        pytest.skip(f"every block of {document} is marked skip")
