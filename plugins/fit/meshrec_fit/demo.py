"""``meshrec demo``: fit SMPL to noisy 2D keypoints of a person sitting in a synthetic scene.

Everything is generated here, nothing is downloaded: a floor and a box (as a point cloud and a
signed-distance grid), a ground-truth body sitting on the box, its OpenPose-25 keypoints seen by
a camera with Gaussian noise. The ``fit`` method (plugin meshrec-fit) then fits SMPL to the
keypoints twice, without and with the scene terms (penetration of the scene's SDF, floor
contact), and the demo reports MPJPE / PA-MPJPE and penetration of both, writes the meshes, the
scene, a picture and the numbers.

It uses the user's SMPL files when they are found (see :mod:`meshrec.body.files`), otherwise
meshrec's synthetic mannequin, and says which.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ImageDraw

import meshrec
from meshrec.body import SMPL, SMPL_JOINT_NAMES, KeypointModel, get_layout
from meshrec.camera import project
from meshrec.errors import BodyModelNotFoundError
from meshrec.io.meshes import write_obj, write_ply
from meshrec.io.render import MeshLayer, PointLayer, orthographic_view, perspective_view, render
from meshrec_fit.demo_scene import Box, FloorAndBoxes, look_at

__all__ = ["run_demo"]

IMAGE_SIZE = (1280, 720)
INTRINSICS = torch.tensor([[1000.0, 0.0, 640.0], [0.0, 1000.0, 360.0], [0.0, 0.0, 1.0]])
KEYPOINT_NOISE = 1.5  # pixels, standard deviation
LAYOUT = "openpose25"
# The ground truth: sitting, leaning forwards a little, arms resting, head turned.
SITTING = {"left_hip": (-1.45, 0.1, 0.15), "right_hip": (-1.5, -0.1, -0.1), "left_knee": (1.4, 0.0, 0.0),
           "right_knee": (1.65, 0.0, 0.0), "left_ankle": (-0.1, 0.0, 0.0), "right_ankle": (-0.2, 0.0, 0.0),
           "left_shoulder": (0.2, -0.3, -1.1), "right_shoulder": (0.2, 0.3, 1.1), "left_elbow": (0.0, -0.7, 0.0),
           "right_elbow": (0.0, 0.9, 0.0), "spine1": (0.15, 0.0, 0.0), "neck": (0.15, 0.25, 0.0)}  # fmt: skip
FOOT_POINTS = ("left_heel", "left_big_toe", "left_small_toe", "right_heel", "right_big_toe", "right_small_toe")


def _say(message: str) -> None:
    print(message, flush=True)


def _body_model(location: str | Path | None) -> tuple[torch.nn.Module, str]:
    try:
        model = SMPL(location, gender="neutral", create_transl=False)
        return model, f"your SMPL model ({model.model_file})"
    except BodyModelNotFoundError as error:
        from meshrec.body.mannequin import mannequin_smpl

        places = ", ".join(str(p) for p in meshrec.body.body_model_search_dirs(location))
        del error
        return mannequin_smpl(create_transl=False), (
            "meshrec's synthetic mannequin, a body-shaped stand-in with SMPL's layout (no SMPL files found in "
            f"{places}; see the README to use yours)")


def _ground_truth(body: torch.nn.Module):
    """The sitting body in the world frame (y up, floor y = 0) and the box it sits on."""
    pose = torch.zeros(23, 3)
    for joint, angles in SITTING.items():
        pose[SMPL_JOINT_NAMES.index(joint) - 1] = torch.tensor(angles)
    orient = torch.tensor([[0.0, 0.35, 0.0]])  # turned a little about the vertical
    out = body(body_pose=pose.reshape(1, 69), global_orient=orient)
    vertices, joints = out.vertices[0].detach(), out.joints[0].detach()
    foot = [meshrec.body.SMPL_OUTPUT_JOINT_NAMES.index(name) for name in FOOT_POINTS]
    lift = -joints[foot, 1].min()  # feet on the floor
    pelvis = joints[0] + torch.tensor([0.0, lift, 0.0])
    # The seat: a box under the pelvis, its top touching the lowest body point above it.
    footprint = (0.46, 0.42)
    centre_xz = (float(pelvis[0]), float(pelvis[2]) - 0.06)
    above = ((vertices[:, 0] - centre_xz[0]).abs() < footprint[0] / 2) & ((vertices[:, 2] - centre_xz[1]).abs() < footprint[1] / 2)
    seat_height = float(vertices[above, 1].min() + lift)
    box = Box(centre=(centre_xz[0], seat_height / 2, centre_xz[1]), size=(footprint[0], seat_height, footprint[1]))
    transl = torch.tensor([[0.0, float(lift), 0.0]])
    return pose.reshape(1, 69), orient, transl, box, pelvis


def _errors(keypoint_model, truth: tuple, fitted: meshrec.Prediction) -> dict[str, float]:
    from meshrec.metrics import mpjpe, pa_mpjpe

    target = keypoint_model(*truth)[0]
    points = keypoint_model(fitted.vertices, fitted.joints)[0]
    pelvis_target, pelvis_fit = truth[1][0, 0], fitted.joints[0, 0]
    return {
        "mpjpe_mm": 1000 * float(mpjpe(points - pelvis_fit, target - pelvis_target)),
        "pa_mpjpe_mm": 1000 * float(pa_mpjpe(points, target)),
        "root_error_mm": 1000 * float((pelvis_fit - pelvis_target).norm()),
    }


def _penetration(vertices: torch.Tensor, sdf_grid: tuple) -> dict[str, float]:
    from meshrec.metrics import penetration_error, scene_sdf

    distances = scene_sdf(vertices, *sdf_grid)
    inside = distances < 0
    return {
        "penetration_sum_mm": 1000 * float(penetration_error(vertices, *sdf_grid)),
        "penetrating_vertices": int(inside.sum()),
        "max_penetration_mm": 1000 * float((-distances).clamp(min=0).max()),
    }


def _picture(path: Path, scene: FloorAndBoxes, scene_points, truth_vertices, fitted_vertices, faces, keypoints,
             pelvis_world) -> None:
    camera_view = perspective_view(INTRINSICS.numpy(), IMAGE_SIZE)
    layers = [PointLayer(scene_points, (150, 150, 160), radius=0.8, opacity=0.5),
              MeshLayer(truth_vertices, faces, (120, 190, 120)),
              MeshLayer(fitted_vertices, faces, (235, 140, 60), opacity=0.6)]
    front = render(camera_view, layers)
    draw = ImageDraw.Draw(front)
    for u, v, confidence in keypoints:
        if confidence > 0:
            draw.ellipse((u - 3, v - 3, u + 3, v + 3), outline=(200, 30, 30), width=2)
    to_world = lambda p: scene.to_world(torch.as_tensor(p, dtype=scene.rotation.dtype)).numpy()
    top_view = orthographic_view(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), pelvis_world.numpy(), 260.0, (720, 720))
    top = render(top_view, [PointLayer(to_world(scene_points), (150, 150, 160), radius=0.8, opacity=0.5),
                            MeshLayer(to_world(truth_vertices), faces, (120, 190, 120)),
                            MeshLayer(to_world(fitted_vertices), faces, (235, 140, 60), opacity=0.6)])
    from PIL import Image

    canvas = Image.new("RGB", (front.width + top.width, max(front.height, top.height)), (255, 255, 255))
    canvas.paste(front, (0, 0))
    canvas.paste(top, (front.width, 0))
    labels = ImageDraw.Draw(canvas)
    labels.text((12, 10), "camera view: ground truth (green), fit with scene terms (orange), keypoints (red)", fill=(0, 0, 0))
    labels.text((front.width + 12, 10), "from above", fill=(0, 0, 0))
    canvas.save(path)


def run_demo(out: str | Path = "meshrec-demo", fast: bool = False, body_model: str | Path | None = None,
             seed: int = 0, progress: bool | None = None) -> dict[str, Any]:
    """Runs the demo (see the module docstring) and returns its numbers; files go to ``out``.

    Args:
        out: output folder (created).
        fast: a shorter optimisation schedule (for CI; the numbers are worse).
        body_model: where to look for SMPL files first (else the usual search order).
        seed: seed of the keypoint noise.
        progress: progress bars (default: on a terminal).
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    body, body_description = _body_model(body_model)
    _say(f"body model: {body_description}")

    pose, orient, transl, box, pelvis_world = _ground_truth(body)
    eye = pelvis_world + torch.tensor([1.5, 1.1, 2.7])
    rotation, translation = look_at(eye.double(), pelvis_world.double() + torch.tensor([0.0, -0.1, 0.0], dtype=torch.float64))
    scene = FloorAndBoxes(rotation, translation, [box])
    # The body in the camera frame: rotate the world-frame body about the SMPL origin and move it.
    world = body(body_pose=pose, global_orient=orient, transl=transl)
    truth = (scene.to_camera(world.vertices.detach().double()).float(), scene.to_camera(world.joints.detach().double()).float())
    scene_points = scene.points(60_000, seed=seed)
    centre = scene.to_camera(pelvis_world.double()[None])[0]
    sdf_grid = scene.sdf_grid((centre - 1.3).tolist(), (centre + 1.3).tolist(), spacing=0.025)
    _say(f"scene: floor and a {box.size[1]:.2f} m high box; {len(scene_points)} points; "
         f"SDF grid {tuple(sdf_grid[0].shape)} at 2.5 cm")

    keypoint_model = KeypointModel(get_layout(LAYOUT))
    pixels = project(keypoint_model(*truth)[0].detach(), INTRINSICS)
    generator = torch.Generator().manual_seed(seed)
    pixels = pixels + KEYPOINT_NOISE * torch.randn(pixels.shape, generator=generator)
    keypoints = torch.cat([pixels, torch.ones(len(pixels), 1)], dim=1).numpy()
    _say(f"keypoints: {LAYOUT}, Gaussian noise {KEYPOINT_NOISE} px, camera f = 1000 px, "
         f"{float(centre.norm()):.1f} m away")

    plane = scene.ground_plane().tolist()
    runs = {"without_scene": {}, "with_scene": {"scene_sdf": sdf_grid, "ground_plane": plane}}
    results: dict[str, Any] = {"body_model": body_description, "keypoint_layout": LAYOUT, "keypoint_noise_px": KEYPOINT_NOISE,
                               "schedule": "fast" if fast else "default",
                               "ground_truth": _penetration(truth[0], sdf_grid)}
    fitted = {}
    for name, options in runs.items():
        _say(f"fitting {name.replace('_', ' ')} terms ...")
        method = meshrec.load_method("fit", body_model=body, device="cpu", keypoint_layout=LAYOUT,
                                     schedule="fast" if fast else "default", progress=show, **options)
        run_started = time.perf_counter()
        prediction = meshrec.predict(None, method=method, keypoints=keypoints, camera=INTRINSICS.numpy())
        fitted[name] = prediction
        results[name] = {**_errors(keypoint_model, truth, prediction), **_penetration(prediction.vertices[0], sdf_grid),
                         "seconds": round(time.perf_counter() - run_started, 1)}

    faces = body.faces
    write_ply(out / "ground_truth.ply", truth[0][0], faces)
    write_obj(out / "ground_truth.obj", truth[0][0], faces)
    for name, prediction in fitted.items():
        write_ply(out / f"fit_{name}.ply", prediction.vertices[0], faces)
        write_obj(out / f"fit_{name}.obj", prediction.vertices[0], faces)
    write_ply(out / "scene.ply", scene_points)
    _picture(out / "demo.png", scene, scene_points.numpy(), truth[0][0].numpy(),
             fitted["with_scene"].vertices[0].detach().numpy(), faces, keypoints, pelvis_world)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["files"] = sorted(path.name for path in out.iterdir())
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    _say("")
    _say(f"{'':16s}{'MPJPE':>10s}{'PA-MPJPE':>10s}{'penetration':>13s}{'vertices in scene':>19s}")
    for name in ("without_scene", "with_scene"):
        r = results[name]
        _say(f"{name.replace('_', ' '):16s}{r['mpjpe_mm']:8.1f}mm{r['pa_mpjpe_mm']:8.1f}mm{r['penetration_sum_mm']:11.0f}mm"
             f"{r['penetrating_vertices']:19d}")
    _say(f"(MPJPE over the {len(get_layout(LAYOUT))} keypoints' 3D points, pelvis aligned; penetration: summed depth of "
         "vertices inside the scene, SA-HMR's PenE)")
    _say(f"wrote {', '.join(results['files'])} to {out} in {results['seconds']:.0f} s")
    return results
