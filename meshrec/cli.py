"""The ``meshrec`` command: ``info``, ``plugins``, ``predict``, ``eval``, ``demo``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["main"]

BODY_MODELS_HELP = ("folder (or file) with your SMPL files; searched first, then $MESHREC_BODY_MODELS, then "
                    "~/.cache/meshrec/body_models (each also in smpl/ and smplh/ sub-folders); 'mannequin': "
                    "meshrec's synthetic stand-in, which the fit method also uses when no SMPL files are found")


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _command_info(args: argparse.Namespace) -> int:
    import meshrec

    report = meshrec.info()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"meshrec            {report['meshrec']}")
    print(f"torch              {report['torch']} (CUDA {report['torch_cuda'] or 'none'}, "
          f"GPU {'available' if report['cuda_available'] else 'not available'})")
    print(f"python             {report['python']}")
    backends = ", ".join(report["compiled_backends"]) or "none"
    print(f"compiled backends  {backends}")
    print(f"CUDA architectures {report['cuda_archs'] or '-'}")
    line = report["op_backend"]
    if report["compiled_library_error"]:
        line += f" ({report['compiled_library_error']})"
    print(f"op backend         {line}")
    print(f"CPU kernels        {report['cpu_kernels'] or '-'}")
    plugins = report["plugins"]
    names = ", ".join(f"{p['name']} {p['version'] or ''}".strip() + ("" if p["status"] == "ok" else f" [{p['status']}]")
                      for p in plugins) or "none"
    print(f"plugins            {names}")
    return 0


def _command_plugins(args: argparse.Namespace) -> int:
    from meshrec.plugins import get_plugin_manager

    plugins = get_plugin_manager().plugins()
    if args.json:
        print(json.dumps([plugin.as_dict() for plugin in plugins], indent=2))
        return 0
    if not plugins:
        print("no meshrec plugins installed (see the README: pip install --no-build-isolation meshrec-hmr, ...)")
        return 0
    rows = [[p.name, p.distribution or "-", p.version or "-", ", ".join(p.methods) or "-",
             ", ".join(p.datasets) or "-", p.status] for p in plugins]
    _print_table(rows, ["name", "distribution", "version", "methods", "datasets", "status"])
    manager = get_plugin_manager()
    detectors = manager.detectors()
    for kind, registry in (("methods", manager.methods()), ("datasets", manager.datasets()), ("detectors", detectors)):
        if len(registry):
            print(f"\n{kind}:")
            width = max(len(entry.name) for entry in registry)
            for entry in registry:
                tag = f"[{detectors.kind_of(entry.name)}] " if registry is detectors else ""
                print(f"  {entry.name.ljust(width)}  {tag}{entry.summary or '-'}")
    for plugin in plugins:
        if plugin.error:
            print(f"\n{plugin.name}: {plugin.error}")
    return 0


def _load_annotations(path: Path) -> dict[str, dict[str, Any]]:
    from meshrec.errors import MeshrecError

    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MeshrecError(f"cannot read --annotations {path}: {error}") from None
    if not isinstance(content, dict):
        raise MeshrecError(f"--annotations {path} must map image file names to objects of extras, e.g. "
                           '{"a.jpg": {"bbox": [[x, y, w, h]], "keypoints": [[[u, v, c], ...]]}}')
    return content


def _load_array(path: str, flag: str) -> np.ndarray:
    """An array from a .npy, .npz (its only array), .json or, for points, .ply file."""
    from meshrec.errors import MeshrecError

    file = Path(path).expanduser()
    if not file.is_file():
        raise MeshrecError(f"{flag} {file}: " + ("is a folder, not a file" if file.is_dir() else "does not exist"))
    try:
        if file.suffix == ".npy":
            return np.load(file, allow_pickle=False)
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                if len(archive.files) != 1:
                    raise MeshrecError(f"{flag} {file}: holds {archive.files}; give a file with one array")
                return archive[archive.files[0]]
        if file.suffix == ".json":
            return np.asarray(json.loads(file.read_text()), dtype=np.float64)
        if file.suffix == ".ply":
            from meshrec.io.meshes import read_ply_points

            return read_ply_points(file)
    except MeshrecError:
        raise
    except Exception as error:  # numpy, json and zip errors all mean the same to the user
        raise MeshrecError(f"cannot read {flag} {file}: {type(error).__name__}: {error}") from None
    raise MeshrecError(f"{flag} {file}: unsupported file type {file.suffix!r} (use .npy, .npz, .json"
                       + (" or .ply)" if flag == "--scene" else ")"))


def _parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--option key=value`` pairs; values are JSON when they parse as JSON, else strings."""
    from meshrec.errors import MeshrecError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MeshrecError(f"--option {pair!r}: write it as NAME=VALUE, e.g. --option bbox_scale=1.0")
        try:
            options[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip().replace("-", "_")] = value
    return options


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    options = _parse_options(args.option or [])
    if getattr(args, "keypoint_layout", None):
        options["keypoint_layout"] = args.keypoint_layout
    if args.trust_checkpoint:
        options["trust_checkpoint"] = True
    return options


def _people(count: int) -> str:
    return f"{count} {'person' if count == 1 else 'people'}"


def _collect_images(inputs: Sequence[str]) -> list[Path]:
    from meshrec.errors import ImageReadError
    from meshrec.io.images import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageReadError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        else:
            files.append(path)
    return files


def _command_predict(args: argparse.Namespace) -> int:
    import meshrec
    from meshrec.errors import ImageReadError, MeshrecError
    from meshrec.io.images import check_image_file

    from meshrec.api import get_method_class

    get_method_class(args.method)  # an unknown method is named before anything is read
    if args.refine:
        get_method_class(args.refine)
    files = _collect_images(args.inputs)
    keypoint_only = not files
    if keypoint_only and not (args.keypoints or args.keypoint_sequence):
        raise MeshrecError("give image files or folders, or --keypoints FILE / --keypoint-sequence FILE for "
                           "methods that need no image")
    from meshrec import distributed

    if distributed.is_torchrun():  # under torchrun each rank predicts its share (meshrec/distributed.py)
        if keypoint_only:
            raise MeshrecError("under torchrun the ranks share image inputs; run keypoint-only inputs without torchrun")
        distributed.init(args.device)
        files = distributed.shard(files)
    out = distributed.output_folder(args.out)  # checked writable before any work
    failed: list[tuple[str, str]] = []
    readable: list[Path] = []
    for path in files:
        try:
            check_image_file(path, str(path))
            readable.append(path)
        except ImageReadError as error:
            if args.fail_fast:
                raise
            failed.append((str(path), str(error)))
            print(f"meshrec predict: skipping {path}: {error}", file=sys.stderr)
    if files and not readable:
        raise ImageReadError(failed[0][1] if len(files) == 1 else f"none of the {len(files)} inputs is a readable image")

    annotations = _load_annotations(Path(args.annotations)) if args.annotations else {}
    extras: dict[str, Any] = {}
    names = [str(path) for path in readable] if not keypoint_only else ["keypoints"]
    if annotations:
        for key in meshrec.Input.keywords():
            per_file = [annotations.get(str(path), annotations.get(path.name, {})).get(key) for path in readable]
            if any(value is not None for value in per_file):
                extras[key] = per_file
    shared = {"keypoints": args.keypoints, "keypoint_sequence": args.keypoint_sequence, "scene": args.scene}
    for key, file in shared.items():
        if file and key == "scene" and Path(file).suffix.lower() in (".obj", ".ply"):
            extras[key] = str(Path(file).expanduser())  # a mesh or scan: meshrec.predict samples it
        elif file:
            extras[key] = _load_array(file, "--" + key.replace("_", "-"))
    if args.bbox is not None:
        extras["bbox"] = np.asarray(args.bbox, dtype=np.float64)
    if args.camera is not None:
        fx, fy, cx, cy = args.camera
        extras["camera"] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    if distributed.job().distributed or args.resume:  # per-batch writes, finished inputs skipped
        if keypoint_only:
            raise MeshrecError("--resume is for image inputs; a keypoint-only prediction is one item")
        failures = distributed.predict_to_folder(
            readable, out, method=args.method, checkpoint=args.checkpoint, body_model=args.body_models,
            device=args.device, batch_size=args.batch_size, progress=args.progress, bbox_format=args.bbox_format,
            refine=args.refine, resume=args.resume, failed=failed, method_options=_method_options(args),
            detector=None if args.detector == "none" else (args.detector or "auto"),
            render=(lambda prediction, name, stem: _render_overlay(prediction, name, stem, extras.get("camera")))
            if args.render else None, **extras)
        if failures and distributed.job().is_main:
            print(f"meshrec predict: {failures} inputs could not be read and were skipped (listed in "
                  f"{out.path / 'manifest.json'})", file=sys.stderr)
        return 1 if failures else 0
    out.start(inputs=names if not keypoint_only else [], method=args.method, checkpoint=args.checkpoint)
    predictions = meshrec.predict(
        None if keypoint_only else names, method=args.method, checkpoint=args.checkpoint,
        body_model=args.body_models, device=args.device, batch_size=args.batch_size, progress=args.progress,
        bbox_format=args.bbox_format, refine=args.refine, **extras, **_method_options(args),
        **({"detector": None if args.detector == "none" else args.detector} if args.detector else {}),
    )
    if keypoint_only:
        predictions = [predictions]
        stems = ["keypoints" if not args.keypoint_sequence else Path(args.keypoint_sequence).stem]
    else:
        stems = [path.stem for path in readable]
    for name, stem, prediction in zip(names, stems, predictions):
        written = out.write_prediction(prediction, stem)
        if args.render and not keypoint_only:
            written += _render_overlay(prediction, name, out.path / stem, extras.get("camera"))
        print(f"{name}: {_people(prediction.num_people)} -> {', '.join(str(w) for w in written)}")
    out.finish(failed=failed)
    if failed:
        print(f"meshrec predict: {len(failed)} of {len(files)} inputs could not be read and were skipped "
              f"(listed in {out.manifest_path}): " + ", ".join(name for name, _ in failed), file=sys.stderr)
        return 1
    return 0


def _render_overlay(prediction: Any, image_file: str, stem: Path, camera: Any) -> list[Path]:
    """Writes <stem>_overlay.png (meshes over the photo) and <stem>_side.png (a side view)."""
    from PIL import Image

    from meshrec.io.images import read_image
    from meshrec.io.overlay import render_overlay, render_side_view

    image = read_image(image_file, name=image_file)
    files = [stem.with_name(stem.name + "_overlay.png"), stem.with_name(stem.name + "_side.png")]
    Image.fromarray(render_overlay(prediction, image, camera)).save(files[0])
    Image.fromarray(render_side_view(prediction, (image.shape[1], image.shape[0]), camera)).save(files[1])
    return files


def _command_eval(args: argparse.Namespace) -> int:
    import meshrec

    result = meshrec.evaluate(
        args.method, args.dataset, args.data_root, checkpoint=args.checkpoint, body_model=args.body_models,
        device=args.device, batch_size=args.batch_size, progress=args.progress, output=args.out,
        method_options=_method_options(args), **_parse_options(args.dataset_option or []),
    )
    from meshrec import distributed

    if not distributed.job().is_main:  # under torchrun every rank has the merged result; rank 0 reports it
        return 0
    print(json.dumps(result, indent=2))
    if args.out:
        print(f"results written to {args.out}", file=sys.stderr)
    return 0


def _command_demo(args: argparse.Namespace) -> int:
    import inspect

    from meshrec.api import get_method_class

    demo_of = get_method_class(args.method)
    extra: dict[str, Any] = {}
    if args.photo is not None:  # --photo (True: the method's sample photo) or --photo PATH
        if "photo" not in inspect.signature(demo_of.demo).parameters:
            raise SystemExit(f"meshrec demo: method {args.method!r} has no photo demo; `meshrec demo --photo` runs "
                             "the 'fit' method's (pip install --no-build-isolation ./plugins/fit ./plugins/detect)")
        extra = {"photo": True if args.photo == "" else Path(args.photo), "detector": args.detector}
        if args.camera is not None:
            fx, fy, cx, cy = args.camera
            extra["camera"] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    elif args.detector is not None or args.camera is not None:
        raise SystemExit("meshrec demo: --detector and --camera are the photo demo's (its keypoint detector and the "
                         "photo's intrinsics); add --photo")
    try:
        demo_of.demo(out=Path(args.out), fast=args.fast, body_model=args.body_models, progress=args.progress, **extra)
    except NotImplementedError as error:
        raise SystemExit(f"meshrec demo: {error}; `meshrec demo` runs the 'fit' method's demo") from None
    return 0


def _parser() -> argparse.ArgumentParser:
    from meshrec import __version__

    parser = argparse.ArgumentParser(prog="meshrec", description="3D human mesh recovery")
    parser.add_argument("--version", action="version", version=f"meshrec {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also: MESHREC_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="versions, compiled backends, active op backend, plugins")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_command_info)

    plugins = commands.add_parser("plugins", help="installed plugins with their methods and datasets")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(run=_command_plugins)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--method", required=True, help="method name (see `meshrec plugins`)")
        sub.add_argument("--checkpoint", help="the method's weights file")
        sub.add_argument("--body-models", metavar="DIR", help=BODY_MODELS_HELP)
        sub.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
        sub.add_argument("--batch-size", type=int, help="items per batch (default: the method's)")
        sub.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help="progress bar (default: on a terminal)")
        sub.add_argument("--option", action="append", metavar="NAME=VALUE",
                         help="a method option (repeatable; `meshrec plugins --options` lists them), "
                              "e.g. --option bbox_scale=1.0; values are JSON or strings")
        sub.add_argument("--trust-checkpoint", action="store_true",
                         help="unpickle the checkpoint fully (runs code it carries: only for files you trust)")

    predict = commands.add_parser("predict", help="meshes from images: per image an .npz and a .ply")
    predict.add_argument("inputs", nargs="*", help="image files or folders (none for keypoint-only methods)")
    common(predict)
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--bbox", type=float, nargs=4, metavar=("X", "Y", "W", "H"), help="one box for every image")
    predict.add_argument("--bbox-format", choices=("xywh", "xyxy"), default="xywh")
    predict.add_argument("--camera", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"), help="intrinsics (pixels)")
    predict.add_argument("--annotations", metavar="FILE", help="JSON mapping image file names to extras, e.g. "
                         '{"a.jpg": {"bbox": [[x, y, w, h]], "keypoints": [[[u, v, c], ...]]}}')
    predict.add_argument("--keypoints", metavar="FILE", help="(P, K, 3) or (K, 3) pixels and confidence for every "
                         "input (.npy, .npz, .json); per image: --annotations")
    predict.add_argument("--keypoint-sequence", metavar="FILE", help="(T, P, K, 3) or (T, K, 3) keypoints over T "
                         "frames (.npy, .npz, .json), for video methods")
    predict.add_argument("--keypoint-layout", metavar="NAME",
                         help="layout of the keypoints (the method option keypoint_layout: coco17, openpose25, h36m17)")
    predict.add_argument("--scene", metavar="FILE", help="(N, 3) scene points in the camera frame, metres "
                         "(.npy, .npz, .json), or a mesh / scan (.obj, .ply)")
    predict.add_argument("--refine", metavar="METHOD", help="refine the predictions with this method (e.g. fit)")
    predict.add_argument("--detector", metavar="NAME",
                         help="detector for images without boxes/keypoints (`meshrec plugins` lists them; "
                              "default: auto, the first installed that loads; 'none': off)")
    predict.add_argument("--render", action="store_true",
                         help="also write <name>_overlay.png (the meshes over the photo) and <name>_side.png")
    predict.add_argument("--resume", action="store_true",
                         help="skip inputs whose outputs an earlier run with the same method and checkpoint "
                              "finished (listed in a manifest of --out and still there); writes per batch")
    predict.add_argument("--fail-fast", action="store_true",
                         help="stop at the first unreadable image (default: skip it, report, exit 1)")
    predict.set_defaults(run=_command_predict)

    evaluate = commands.add_parser("eval", help="evaluate a method on a dataset / protocol")
    common(evaluate)
    evaluate.add_argument("--dataset", required=True, help="dataset name (see `meshrec plugins`)")
    evaluate.add_argument("--data-root", required=True, help="the dataset's folder")
    evaluate.add_argument("--dataset-option", action="append", metavar="NAME=VALUE",
                          help="an option of the dataset's evaluation (repeatable), e.g. --dataset-option limit=10")
    evaluate.add_argument("--out", help="write the results JSON here")
    evaluate.set_defaults(run=_command_eval)

    demo = commands.add_parser("demo", help="fit SMPL to noisy keypoints of a person in a synthetic scene, "
                               "with and without scene terms; no download (the meshrec-fit plugin's demo); "
                               "--photo: detect, fit and draw the people of a real photo")
    demo.add_argument("--photo", nargs="?", const="", default=None, metavar="PATH",
                      help="run the photo demo instead: detect the people's keypoints (meshrec-detect), fit a body "
                           "to each, draw them over the photo; without PATH, ultralytics' sample bus.jpg "
                           "(pip install ultralytics --no-deps)")
    demo.add_argument("--camera", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                      help="the photo demo's intrinsics in pixels (default: focal length = image diagonal, centred)")
    demo.add_argument("--detector", metavar="NAME", help="the photo demo's keypoint detector (default: the first "
                      "installed that loads; `meshrec plugins` lists them)")
    demo.add_argument("--method", default="fit", help="whose demo to run (default: fit)")
    demo.add_argument("--out", default="meshrec-demo", help="output folder (default: ./meshrec-demo)")
    demo.add_argument("--fast", action="store_true", help="shorter optimisation (CI); worse numbers")
    demo.add_argument("--body-models", metavar="DIR", help=BODY_MODELS_HELP)
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="progress bars (default: on a terminal)")
    demo.set_defaults(run=_command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from meshrec.errors import MeshrecError, front_door

    debug = args.debug or os.environ.get("MESHREC_DEBUG", "") not in ("", "0")
    token = front_door.set("cli")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"meshrec {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        message = str(error) or type(error).__name__
        expected = isinstance(error, (MeshrecError, FileNotFoundError, ValueError, TypeError, OSError))
        if not expected:
            message = f"{type(error).__name__}: {message} (run with --debug or MESHREC_DEBUG=1 for the traceback)"
        print(f"meshrec {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        front_door.reset(token)


if __name__ == "__main__":
    sys.exit(main())
