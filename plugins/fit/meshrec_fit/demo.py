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

import meshrec
from meshrec.body import SMPL, SMPL_JOINT_NAMES, KeypointModel, get_layout
from meshrec.camera import project
from meshrec.errors import BodyModelNotFoundError
from meshrec.io.meshes import write_obj, write_ply
from meshrec.io.render import Mesh, render_meshes
from meshrec.scene.points import Box
from meshrec_fit.demo_scene import FloorAndBoxes, look_at

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


def _is_mannequin(path: Path, faces: np.ndarray) -> bool:
    """Whether the body-model file ``path`` holds meshrec's synthetic mannequin rather than SMPL:
    the pickles meshrec writes carry ``pose_training_info["generator"]``; files without it (npz,
    re-saved copies) are recognised by the mannequin's own triangles (SMPL's are different)."""
    from meshrec.body import mannequin
    from meshrec.body.files import load_body_model_arrays

    info = load_body_model_arrays(path).get("pose_training_info")
    if isinstance(info, dict) and info.get("generator") == "meshrec.body.mannequin":
        return True
    reference = mannequin.make_smpl_arrays()["f"]
    return faces.shape == reference.shape and bool(np.array_equal(faces, reference))


def _body_model(location: str | Path | None) -> tuple[torch.nn.Module, str]:
    """The neutral SMPL model found at ``location`` (or the usual places), else the mannequin in
    memory, and a sentence saying which it is and where it came from."""
    try:
        model = SMPL(location, gender="neutral", create_transl=False)
    except BodyModelNotFoundError:
        from meshrec.body.mannequin import mannequin_smpl

        places = ", ".join(str(p) for p in meshrec.body.body_model_search_dirs(location))
        return mannequin_smpl(create_transl=False), (
            "meshrec's synthetic mannequin, a body-shaped stand-in with SMPL's layout (no SMPL files found in "
            f"{places}; see the README to use yours)")
    if _is_mannequin(Path(model.model_file), np.asarray(model.faces)):
        return model, (f"{model.model_file}: meshrec's synthetic mannequin (written by meshrec.testing), "
                       "not a licensed SMPL model")
    return model, f"SMPL model {model.model_file}"


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


# The picture: two panels (without / with the scene terms), each the fit against the ground truth.
PANEL_SIZE = (1000, 720)
TITLE_HEIGHT = 96
LEGEND_HEIGHT = 44
COLORS = {"ground truth": (60, 185, 90), "fit": (70, 120, 230), "inside the scene": (230, 30, 40),
          "floor and box": (196, 170, 130)}
FLOOR_TILES = ((222, 222, 218), (196, 196, 192))
GROUND_TRUTH_OPACITY = 0.2  # a ghost with a solid outline, so that a close fit does not hide it
BOX_OPACITY = 0.55  # see-through, so that a body sinking into the box shows
INSET_SIZE = (330, 330)  # the side view in each panel's corner
SIDE_EYE = (3.0, 0.25, 0.5)  # where the side view looks from, relative to the bodies' centre (world, metres)


def _font(size: int):
    """A scalable font at ``size`` px: Pillow's own (>= 10.1 with FreeType), else DejaVu Sans, else
    Pillow's small bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow, or Pillow without FreeType
        pass
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _scene_meshes(scene: FloorAndBoxes, to_view) -> list[Mesh]:
    """The floor (a checkerboard of 0.5 m tiles) and the boxes as triangle meshes in a view's
    camera frame (``to_view`` maps (N, 3) world points there)."""
    cells = int(round(2 * scene.floor_extent / 0.25))
    floor, floor_faces = scene.floor_mesh(cells)
    quad = torch.arange(len(floor_faces)) // 2
    tile = ((quad // cells) // 2 + (quad % cells) // 2) % 2
    meshes = [Mesh(to_view(floor.numpy()), floor_faces.numpy(),
                   face_colors=np.asarray(FLOOR_TILES, dtype=np.float64)[tile.numpy()], shading="flat")]
    for box in scene.boxes:
        vertices, faces = box.mesh()
        meshes.append(Mesh(to_view(vertices.numpy()), faces.numpy(), COLORS["floor and box"], opacity=BOX_OPACITY,
                           shading="flat"))
    return meshes


def _framing(points: np.ndarray, box: tuple[float, float, float, float], fill: float = 0.92) -> np.ndarray:
    """Intrinsics (3, 3) that show camera-frame ``points`` (N, 3) centred in the pixel ``box``
    (left, top, right, bottom), filling ``fill`` of it."""
    q = points[:, :2] / points[:, 2:]
    low, high = q.min(axis=0), q.max(axis=0)
    focal = fill * min((box[2] - box[0]) / (high[0] - low[0]), (box[3] - box[1]) / (high[1] - low[1]))
    centre = (low + high) / 2
    return np.array([[focal, 0.0, (box[0] + box[2]) / 2 - focal * centre[0]],
                     [0.0, focal, (box[1] + box[3]) / 2 - focal * centre[1]], [0.0, 0.0, 1.0]])


def _view(scene_meshes: list[Mesh], truth: np.ndarray, fit: np.ndarray, inside: np.ndarray, faces: np.ndarray,
          intrinsics: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (H, W, 3) view: the scene, the ground truth as a green ghost with its outline, the fit in
    blue with its vertices inside the scene in red."""
    colors = np.tile(np.asarray(COLORS["fit"], dtype=np.float64), (len(fit), 1))
    colors[inside] = COLORS["inside the scene"]
    meshes = [*scene_meshes, Mesh(fit, faces, colors),
              Mesh(truth, faces, COLORS["ground truth"], opacity=GROUND_TRUTH_OPACITY, outline=COLORS["ground truth"],
                   outline_width=3)]
    return render_meshes(meshes, intrinsics, size, background=(248, 248, 250))


def _dots(draw, points: np.ndarray, intrinsics: np.ndarray, offset: tuple[int, int], radius: float) -> None:
    """Penetrating vertices as red dots on top: visible even where the floor or box hides them."""
    if len(points):
        uv = points @ intrinsics.T
        for u, v in uv[:, :2] / uv[:, 2:]:
            u, v = u + offset[0], v + offset[1]
            draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=COLORS["inside the scene"])


def _picture(path: Path, scene: FloorAndBoxes, truth_vertices: np.ndarray, fits: dict[str, dict[str, Any]],
             faces: np.ndarray, results: dict[str, Any]) -> list[float]:
    """Writes the two-panel picture (without / with the scene terms); returns the seconds each
    panel took to render (its camera view and its side view).

    ``fits`` maps "without_scene" / "with_scene" to {"vertices": (V, 3), "inside": (V,) bool},
    camera frame, metres; ``results`` holds the numbers printed in the titles."""
    from PIL import Image, ImageDraw

    width, height = PANEL_SIZE
    names = ("without_scene", "with_scene")
    bodies = np.concatenate([truth_vertices] + [fits[name]["vertices"] for name in names])
    # The demo camera's view, framed on the bodies, left of the inset.
    main_box = (20, TITLE_HEIGHT + 10, width - INSET_SIZE[0] - 20, height - LEGEND_HEIGHT - 10)
    main_intrinsics = _framing(bodies, main_box)
    camera_scene = _scene_meshes(scene, lambda p: scene.to_camera(torch.as_tensor(p)).numpy())
    # The inset: seen from the body's right, at seat height, where depth errors and a body sunk
    # into the box or floor show.
    to_world = lambda p: scene.to_world(torch.as_tensor(p)).numpy()
    centre = to_world(bodies).mean(axis=0)
    rotation, translation = (m.numpy() for m in look_at(torch.as_tensor(centre + SIDE_EYE), torch.as_tensor(centre)))
    to_side = lambda world: np.asarray(world) @ rotation.T + translation
    side_scene = _scene_meshes(scene, to_side)
    side = {name: to_side(to_world(v)) for name, v in [("truth", truth_vertices)] +
            [(name, fits[name]["vertices"]) for name in names]}
    side_intrinsics = _framing(np.concatenate(list(side.values())), (0, 30, *INSET_SIZE), fill=0.9)

    canvas = Image.new("RGB", (2 * width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    title_font, number_font, small_font = _font(30), _font(24), _font(20)
    seconds = []
    titles = {"without_scene": "Fit without scene terms", "with_scene": "Fit with scene terms"}
    for index, name in enumerate(names):
        left = index * width
        fit, inside = fits[name]["vertices"], fits[name]["inside"]
        started = time.perf_counter()
        main = _view(camera_scene, truth_vertices, fit, inside, faces, main_intrinsics, PANEL_SIZE)
        inset = _view(side_scene, side["truth"], side[name], inside, faces, side_intrinsics, INSET_SIZE)
        seconds.append(time.perf_counter() - started)
        canvas.paste(Image.fromarray(main), (left, 0))
        _dots(draw, fit[inside], main_intrinsics, (left, 0), 2.5)
        inset_left, inset_top = left + width - INSET_SIZE[0] - 12, TITLE_HEIGHT + 8
        canvas.paste(Image.fromarray(inset), (inset_left, inset_top))
        _dots(draw, side[name][inside], side_intrinsics, (inset_left, inset_top), 2.0)
        draw.rectangle((inset_left, inset_top, inset_left + INSET_SIZE[0] - 1, inset_top + INSET_SIZE[1] - 1),
                       outline=(150, 150, 150), width=2)
        draw.text((inset_left + 10, inset_top + 6), "seen from the side", font=small_font, fill=(90, 90, 90))
        r = results[name]
        count = r["penetrating_vertices"]
        noun = "vertex" if count == 1 else "vertices"
        draw.rectangle((left, 0, left + width, TITLE_HEIGHT), fill=(255, 255, 255))
        draw.text((left + 20, 12), titles[name], font=title_font, fill=(20, 20, 20))
        draw.text((left + 20, 54), f"MPJPE {r['mpjpe_mm']:.0f} mm   PA-MPJPE {r['pa_mpjpe_mm']:.0f} mm   "
                                   f"penetration {r['penetration_sum_mm']:.0f} mm ({count} {noun})",
                  font=number_font, fill=COLORS["inside the scene"] if name == "without_scene" else (20, 120, 50))
    # One legend along the bottom, and a rule between the panels.
    draw.rectangle((0, height - LEGEND_HEIGHT, canvas.width, height), fill=(255, 255, 255))
    draw.line((width, 0, width, height), fill=(150, 150, 150), width=2)
    x, y = 20, height - LEGEND_HEIGHT + 9
    for label, color in COLORS.items():
        draw.rectangle((x, y, x + 24, y + 24), fill=color, outline=(60, 60, 60))
        draw.text((x + 32, y), label, font=number_font, fill=(20, 20, 20))
        x += 32 + int(draw.textlength(label, font=number_font)) + 40
    note = "penetration: summed depth of the vertices inside the floor or box"
    draw.text((2 * width - 20 - draw.textlength(note, font=small_font), y + 2), note, font=small_font, fill=(90, 90, 90))
    canvas.save(path)
    return seconds


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
    from meshrec.metrics import scene_sdf

    fits = {name: {"vertices": prediction.vertices[0].detach().double().numpy(),
                   "inside": (scene_sdf(prediction.vertices[0].detach(), *sdf_grid) < 0).numpy()}
            for name, prediction in fitted.items()}
    panel_seconds = _picture(out / "demo.png", scene, truth[0][0].double().numpy(), fits, np.asarray(faces), results)
    results["picture_seconds_per_panel"] = [round(t, 2) for t in panel_seconds]
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
