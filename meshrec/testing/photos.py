"""Real photographs for tests, from packages on the registries (never committed, never downloaded
by the tests): ultralytics' ``bus.jpg`` and scikit-image's ``astronaut.png``, located without
importing their packages. Test support only: the runtime never imports this module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

__all__ = ["astronaut_photo", "bus_photo", "package_file", "require_mediapipe"]


def package_file(package: str, *parts: str) -> Path | None:
    """The file ``parts`` inside the installed ``package`` (not imported), or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent.joinpath(*parts)
    return path if path.is_file() else None


def bus_photo() -> Path:
    """ultralytics/assets/bus.jpg (810x1080, several full-body pedestrians); skips without it."""
    path = package_file("ultralytics", "assets", "bus.jpg")  # its __init__ needs torchvision
    if path is None:
        pytest.skip("needs the photo ultralytics/assets/bus.jpg: pip install --no-deps ultralytics")
    return path


def astronaut_photo() -> Path:
    """skimage/data/astronaut.png (512x512, upper body); skips without it."""
    path = package_file("skimage", "data", "astronaut.png")
    if path is None:
        pytest.skip("needs the photo skimage/data/astronaut.png: pip install --no-deps scikit-image")
    return path


def require_mediapipe() -> None:
    """Skips unless BlazePose's runtime (mediapipe) imports."""
    try:
        import mediapipe.python.solutions.pose  # noqa: F401
    except ImportError as error:
        pytest.skip(f"BlazePose needs mediapipe ({error}): pip install --no-deps mediapipe==0.10.21 "
                    "&& pip install './plugins/detect[blazepose]'")
