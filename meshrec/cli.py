"""The ``meshrec`` command: ``info``, ``plugins``, ``predict``, ``eval``, ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["main"]


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
    for kind, registry in (("methods", manager.methods()), ("datasets", manager.datasets())):
        if len(registry):
            print(f"\n{kind}:")
            width = max(len(entry.name) for entry in registry)
            for entry in registry:
                print(f"  {entry.name.ljust(width)}  {entry.summary or '-'}")
    for plugin in plugins:
        if plugin.error:
            print(f"\n{plugin.name}: {plugin.error}")
    return 0


def _load_annotations(path: Path) -> dict[str, dict[str, Any]]:
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"meshrec: cannot read annotations {path}: {error}") from None
    if not isinstance(content, dict):
        raise SystemExit(f"meshrec: annotations {path} must map image file names to objects of extras")
    return content


def _write_prediction(prediction, out_dir: Path, stem: str) -> list[Path]:
    from meshrec.io.meshes import write_ply

    written = [prediction.save_npz(out_dir / f"{stem}.npz")]
    vertices = prediction.vertices.detach().cpu().numpy()
    faces = prediction.faces.detach().cpu().numpy() if prediction.faces is not None else None
    if len(vertices):
        merged = vertices.reshape(-1, 3)
        merged_faces = None
        if faces is not None:
            offsets = np.arange(len(vertices))[:, None, None] * vertices.shape[1]
            merged_faces = (faces[None] + offsets).reshape(-1, 3)
        written.append(write_ply(out_dir / f"{stem}.ply", merged, merged_faces))
    return written


def _command_predict(args: argparse.Namespace) -> int:
    import meshrec
    from meshrec.io.images import IMAGE_SUFFIXES

    files: list[Path] = []
    for item in args.inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    if not files:
        raise SystemExit("meshrec predict: no input images found")
    annotations = _load_annotations(Path(args.annotations)) if args.annotations else {}
    extras: dict[str, Any] = {}
    for key in meshrec.Input.keywords():
        per_file = []
        for path in files:
            entry = annotations.get(str(path), annotations.get(path.name, {}))
            per_file.append(entry.get(key))
        if any(value is not None for value in per_file):
            extras[key] = per_file
    if args.bbox is not None:
        extras["bbox"] = [np.asarray(args.bbox, dtype=np.float64)] * len(files)
    if args.camera is not None:
        fx, fy, cx, cy = args.camera
        extras["camera"] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = meshrec.predict(
        [str(path) for path in files], method=args.method, checkpoint=args.checkpoint,
        body_model=args.body_models, device=args.device, batch_size=args.batch_size,
        progress=None if args.progress is None else args.progress, bbox_format=args.bbox_format, **extras,
    )
    for path, prediction in zip(files, predictions):
        written = _write_prediction(prediction, out_dir, path.stem)
        print(f"{path}: {prediction.num_people} people -> {', '.join(str(w) for w in written)}")
    return 0


def _command_eval(args: argparse.Namespace) -> int:
    import meshrec

    result = meshrec.evaluate(
        args.method, args.dataset, args.data_root, checkpoint=args.checkpoint, body_model=args.body_models,
        device=args.device, batch_size=args.batch_size, progress=args.progress, output=args.out,
    )
    print(json.dumps(result, indent=2))
    if args.out:
        print(f"results written to {args.out}", file=sys.stderr)
    return 0


def _command_demo(args: argparse.Namespace) -> int:
    from meshrec.api import get_method_class

    demo_of = get_method_class(args.method)
    try:
        demo_of.demo(out=Path(args.out), fast=args.fast, body_model=args.body_models, progress=args.progress)
    except NotImplementedError as error:
        raise SystemExit(f"meshrec demo: {error}; `meshrec demo` runs the 'fit' method's demo") from None
    return 0


def _parser() -> argparse.ArgumentParser:
    from meshrec import __version__

    parser = argparse.ArgumentParser(prog="meshrec", description="3D human mesh recovery")
    parser.add_argument("--version", action="version", version=f"meshrec {__version__}")
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
        sub.add_argument("--body-models", help="folder with the SMPL files (default: $MESHREC_BODY_MODELS)")
        sub.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
        sub.add_argument("--batch-size", type=int, help="items per batch (default: the method's)")
        sub.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help="progress bar (default: on a terminal)")

    predict = commands.add_parser("predict", help="meshes from images: per image an .npz and a .ply")
    predict.add_argument("inputs", nargs="+", help="image files or folders")
    common(predict)
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--bbox", type=float, nargs=4, metavar=("X", "Y", "W", "H"), help="one box for every image")
    predict.add_argument("--bbox-format", choices=("xywh", "xyxy"), default="xywh")
    predict.add_argument("--camera", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"), help="intrinsics (pixels)")
    predict.add_argument("--annotations", help="JSON mapping image file names to extras, e.g. "
                         '{"a.jpg": {"bbox": [[x, y, w, h]], "keypoints": [[[u, v, c], ...]]}}')
    predict.set_defaults(run=_command_predict)

    evaluate = commands.add_parser("eval", help="evaluate a method on a dataset / protocol")
    common(evaluate)
    evaluate.add_argument("--dataset", required=True, help="dataset name (see `meshrec plugins`)")
    evaluate.add_argument("--data-root", required=True, help="the dataset's folder")
    evaluate.add_argument("--out", help="write the results JSON here")
    evaluate.set_defaults(run=_command_eval)

    demo = commands.add_parser("demo", help="fit SMPL to noisy keypoints of a person in a synthetic scene, "
                               "with and without scene terms; no download (the meshrec-fit plugin's demo)")
    demo.add_argument("--method", default="fit", help="whose demo to run (default: fit)")
    demo.add_argument("--out", default="meshrec-demo", help="output folder (default: ./meshrec-demo)")
    demo.add_argument("--fast", action="store_true", help="shorter optimisation (CI); worse numbers")
    demo.add_argument("--body-models", help="folder with your SMPL files (default: the usual search order)")
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="progress bars (default: on a terminal)")
    demo.set_defaults(run=_command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from meshrec.errors import MeshrecError

    try:
        return args.run(args)
    except (MeshrecError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"meshrec {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
