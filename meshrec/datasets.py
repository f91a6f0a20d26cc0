"""The datasets plugins register for ``meshrec eval`` / :func:`meshrec.evaluate`.

A dataset is registered by name with its evaluation function (:class:`DatasetEvaluation`),
which reads the data, runs the method and reports the metrics of the dataset's protocol through a
:class:`meshrec.metrics.Evaluator` (the one accumulator of metrics in meshrec).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from meshrec.registry import Registry, RegistryEntry

__all__ = ["DatasetEvaluation", "DatasetRegistry", "DatasetSpec"]


class DatasetEvaluation(Protocol):
    """What a registered dataset's target is: a function that evaluates a loaded method on it.

    Args:
        method: a loaded :class:`meshrec.Method`.
        data_root: the dataset's folder as the user has it.
        body_model: folder of the user's body-model files (ground truth needs them), or None.
        batch_size: items per batch.
        progress: whether to show a progress bar.
        **options: protocol options passed through from the caller.
        shard: only in a torchrun job of several ranks, and only to a function that declares
            it: ``(rank, world_size)``. The function evaluates its share of the samples (sample
            i belongs to rank ``i % world_size``: :func:`meshrec.distributed.shard_indices`),
            runs the same number of collective steps on every rank
            (:func:`meshrec.distributed.padded_batches`) and merges the ranks' accumulators
            before computing (:func:`meshrec.distributed.merge_evaluator`; per-item outputs
            that feed another accumulator: :func:`meshrec.distributed.gather_indexed`), so that
            every rank returns the single-process metrics. Any randomness is seeded per sample,
            never per rank. :func:`meshrec.evaluate` refuses a torchrun job for a function
            without ``shard``.

    Returns:
        A JSON-serialisable dict: metric name -> value (millimetres for distances), plus any
        counts (e.g. ``"num_samples"``).
    """

    def __call__(
        self,
        method: Any,
        data_root: Path,
        body_model: Path | None,
        batch_size: int,
        progress: bool,
        **options: Any,
    ) -> dict[str, Any]: ...


class DatasetSpec(RegistryEntry):
    """A registered dataset / evaluation protocol; its target follows :class:`DatasetEvaluation`
    ."""

    def check(self, target: Any) -> None:
        if not callable(target):
            raise TypeError(f"dataset {self.name!r} (plugin {self.plugin!r}): {target!r} is not callable")


class DatasetRegistry(Registry[DatasetSpec]):
    """The datasets plugins add through the ``meshrec_register_datasets`` hook.

    >>> registry.add("pw3d", "meshrec_hmr.evaluation:evaluate_pw3d", summary="3DPW test, mmhuman3d protocol")
    """

    kind = "dataset"
    entry_class = DatasetSpec
