"""The hooks a meshrec plugin can implement.

A plugin is a module registered under the ``meshrec`` entry-point group (see the README). It
defines functions decorated with ``@meshrec.hookimpl`` whose names are the hook names below. An
implementation may take any subset of a hook's arguments, so hooks can gain arguments later
without breaking plugins; hooks never lose arguments.

Keep the plugin module cheap to import: register names and ``"module:Class"`` targets; the
network code is imported only when a user loads the method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from meshrec.datasets import DatasetRegistry
    from meshrec.detectors import DetectorRegistry
    from meshrec.methods import MethodRegistry

PROJECT_NAME = "meshrec"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def meshrec_register_methods(registry: "MethodRegistry") -> None:
    """Add methods to meshrec's method registry.

    Called once when meshrec first needs the list of methods. Call
    ``registry.add("package.module:MethodClass")`` (or the class itself) for each method the
    plugin provides; ``MethodClass`` subclasses :class:`meshrec.Method`, whose ``name``,
    ``summary`` and ``options`` are the method's single source of truth. Names are global: if two
    plugins register one name, the first one loaded keeps it and a warning names both.

    Example::

        @meshrec.hookimpl
        def meshrec_register_methods(registry):
            registry.add("meshrec_hmr.method:HMR")
    """


@hookspec
def meshrec_register_datasets(registry: "DatasetRegistry") -> None:
    """Add datasets and evaluation protocols to meshrec's dataset registry.

    Called once when meshrec first needs the list of datasets (``meshrec eval``). Call
    ``registry.add(name, "package.module:evaluate", summary=...)``, where ``evaluate`` follows
    :class:`meshrec.datasets.DatasetEvaluation`: it takes a loaded method, the dataset folder and
    the body-model folder, runs the method over the data and returns a dict of metrics. To run
    under ``torchrun``, it also declares ``shard=None`` (see ``DatasetEvaluation``).

    Example::

        @meshrec.hookimpl
        def meshrec_register_datasets(registry):
            registry.add("pw3d", "meshrec_hmr.evaluation:evaluate_pw3d",
                         summary="3DPW test set, as mmhuman3d reports it")
    """


@hookspec
def meshrec_register_detectors(registry: "DetectorRegistry") -> None:
    """Add person detectors and 2D keypoint detectors to meshrec's detector registry.

    Called once when meshrec first needs a detector (``meshrec.predict`` on an image without
    boxes or keypoints, ``meshrec plugins``). Call ``registry.add(name, "package.module:Class",
    kind=..., summary=...)``: ``kind`` is ``"person"`` for a detector returning boxes or
    ``"keypoints"`` for one returning keypoints in a named meshrec layout. The class follows
    :mod:`meshrec.detectors`: options as keyword arguments, ``detect(image) -> Detections``.

    Example::

        @meshrec.hookimpl
        def meshrec_register_detectors(registry):
            registry.add("hog", "meshrec_detect.hog:HOGPersonDetector", kind="person",
                         summary="OpenCV's HOG people detector, weights built into OpenCV")
    """
