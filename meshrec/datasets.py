"""Datasets and evaluation protocols that plugins register (``meshrec eval``)."""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

__all__ = ["DatasetRegistry", "DatasetSpec", "Evaluator"]


class Evaluator(Protocol):
    """What a registered dataset's target is: a function that evaluates a loaded method.

    Args:
        method: a loaded :class:`meshrec.Method`.
        data_root: the dataset's folder as the user has it.
        body_models: folder of the user's body-model files (ground truth needs them), or None.
        batch_size: items per batch.
        progress: whether to show a progress bar.
        **options: protocol options passed through from the caller.

    Returns:
        A JSON-serialisable dict: metric name -> value (millimetres for distances), plus any
        counts (e.g. ``"num_samples"``).
    """

    def __call__(
        self,
        method: Any,
        data_root: Path,
        body_models: Path | None,
        batch_size: int,
        progress: bool,
        **options: Any,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset / evaluation protocol.

    ``target`` is ``"package.module:function"`` (imported on first use) or the function itself,
    following :class:`Evaluator`.
    """

    name: str
    target: str | Callable[..., dict[str, Any]]
    summary: str = ""
    plugin: str = ""

    def load(self) -> Evaluator:
        target = self.target
        if isinstance(target, str):
            module_name, _, attribute = target.partition(":")
            if not attribute:
                raise ValueError(f"dataset {self.name!r}: target must be 'module:function', got {target!r}")
            target = getattr(importlib.import_module(module_name), attribute)
        if not callable(target):
            raise TypeError(f"dataset {self.name!r} (plugin {self.plugin!r}): {target!r} is not callable")
        return target


class DatasetRegistry:
    """The datasets plugins add through the ``meshrec_register_datasets`` hook.

    >>> registry.add("pw3d", "meshrec_hmr.evaluation:evaluate_pw3d", summary="3DPW test, mmhuman3d protocol")
    """

    def __init__(self) -> None:
        self._specs: dict[str, DatasetSpec] = {}
        self.current_plugin = ""

    def add(self, name: str, target: str | Callable[..., dict[str, Any]], summary: str = "") -> DatasetSpec:
        if not isinstance(name, str) or not name or name != name.lower():
            raise ValueError(f"dataset names are lower-case, got {name!r}")
        spec = DatasetSpec(name=name, target=target, summary=summary, plugin=self.current_plugin)
        existing = self._specs.get(name)
        if existing is not None:
            warnings.warn(
                f"meshrec: dataset {name!r} is registered by both {existing.plugin!r} and {spec.plugin!r}; "
                f"keeping {existing.plugin!r}'s.",
                stacklevel=2,
            )
            return existing
        self._specs[name] = spec
        return spec

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> DatasetSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[DatasetSpec]:
        return iter(sorted(self._specs.values(), key=lambda spec: spec.name))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)
