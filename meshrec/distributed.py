"""Running meshrec over many processes, GPUs and machines with :mod:`torch.distributed`.

Launch any meshrec command (or your own script) with ``torchrun``; every process (a *rank*)
takes a deterministic share of the inputs and rank 0 merges the results::

    torchrun --nproc-per-node 4 -m meshrec predict frames/ --method hmr --checkpoint hmr.pth --out out/
    torchrun --nproc-per-node 4 -m meshrec eval --method hmr --dataset pw3d --data-root 3DPW ...

What each rank does:

- :func:`init` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``) and joins the process group: NCCL on ``cuda:LOCAL_RANK``
  when CUDA is present (and the device is not forced to CPU), else gloo on the CPU.
- :func:`shard` sorts the inputs (stable, by their string form) and takes every
  ``world_size``-th one starting at its rank: rank r gets items r, r + W, r + 2W, ... The
  split depends only on the inputs and W, so a re-run gets the same shares.
- :func:`gather` brings per-rank lists back to rank 0 in the original (sorted) order, and
  :func:`merge_evaluator` gathers a :class:`meshrec.metrics.Evaluator`'s per-sample values
  with their global sample indices, so the merged metrics equal a single-process run's
  (the same tensors in the same order, hence the same float64 numbers) and per-sample tables
  keep the single-process order. Evaluations whose state is not one row per sample (per-image
  match tables, counts, lists in image order) use :func:`gather_indexed`: every rank's
  per-item outputs in global item order, on every rank, then feed one accumulator in that
  order, exactly as a single process does.
- :func:`padded_batches` gives every rank the same number of batches, so that per-batch
  collectives match up.
- :class:`GlobalProgress` shows one bar, on rank 0, counting the items of every rank.

Outside a torchrun job every function works as a single process of a world of one, so code
written with them runs unchanged without ``torchrun``.
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from meshrec.errors import MeshrecError

__all__ = ["Job", "GlobalProgress", "gather", "gather_indexed", "init", "is_torchrun", "job", "merge_evaluator",
           "output_folder", "padded_batches", "predict", "predict_to_folder", "shard", "shard_indices"]

T = TypeVar("T")


def is_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (``torch.distributed.run``): its
    environment has ``RANK`` and ``WORLD_SIZE``."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass(frozen=True)
class Job:
    """This process's place in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of processes over all machines.
        local_rank: rank on this machine (selects the GPU).
        device: the device this rank computes on (``cuda:LOCAL_RANK`` or ``cpu``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _collective_device(self) -> torch.device:
        """Where the tensors of a collective live: NCCL reduces CUDA tensors only."""
        if self.distributed and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_reduce_max(self, value: int) -> int:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def all_reduce_sum(self, value: int) -> int:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self._collective_device)
        dist.all_reduce(tensor)
        return int(tensor.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


_JOB: Job | None = None


def init(device: str | torch.device | None = None) -> Job:
    """Joins the torchrun job (once per process) and returns this rank's :class:`Job`.

    Args:
        device: None: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU. ``"cpu"`` keeps a
            CUDA machine's ranks on the CPU (gloo). ``"cuda"`` means ``cuda:LOCAL_RANK``; a
            device with an explicit index is used as given.

    Outside torchrun this returns a world of one on ``device`` (nothing is initialised).

    Raises:
        MeshrecError: the process group cannot be joined (names torchrun's variables).
    """
    global _JOB
    if _JOB is not None:
        return _JOB
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = torch.device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() and (wanted is None or wanted.type == "cuda")
    if use_cuda:
        resolved = wanted if wanted is not None and wanted.index is not None else torch.device("cuda", local_rank)
    else:
        if wanted is not None and wanted.type == "cuda":
            raise MeshrecError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
        resolved = torch.device("cpu")
    if not is_torchrun():
        _JOB = Job(device=resolved)
        return _JOB
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(resolved)
        try:
            # torchrun's rendezvous put MASTER_ADDR / MASTER_PORT in the environment
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                    **({"device_id": resolved} if use_cuda else {}))
        except (RuntimeError, ValueError) as error:
            raise MeshrecError(f"rank {rank} could not join the torch.distributed job ({error}); start meshrec "
                               "with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT") from None
    _JOB = Job(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)
    atexit.register(_leave)
    return _JOB


def _leave() -> None:
    """At exit: leave the process group without a barrier (a rank that stops on an error must
    not wait for the others; torchrun stops them)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def job() -> Job:
    """The job :func:`init` joined, or a world of one when it has not been called."""
    return _JOB if _JOB is not None else Job()


def shutdown() -> None:
    """Leaves the process group (after a final barrier) and forgets the job."""
    global _JOB
    if _JOB is not None and _JOB.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _JOB = None


def _sort_key(item: Any) -> str:
    return str(item)


def shard_indices(count_or_items: int | Sequence[Any], rank: int | None = None,
                  world_size: int | None = None) -> list[int]:
    """Indices (into the *sorted* order of ``items``, or into ``range(count)``) of this rank's
    share: positions rank, rank + W, rank + 2W, ..."""
    current = job()
    rank = current.rank if rank is None else rank
    world_size = current.world_size if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    count = count_or_items if isinstance(count_or_items, int) else len(count_or_items)
    return list(range(rank, count, world_size))


def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This rank's share of ``items``: sorted (stable, by ``str(item)``; paths sort by their
    path), then strided: rank r of W takes sorted items r, r + W, r + 2W, ...

    Outside a torchrun job (world of one) this is every item, sorted.

    >>> shard(["c.jpg", "a.jpg", "b.jpg", "d.jpg"], rank=1, world_size=2)
    ['b.jpg', 'd.jpg']
    """
    ordered = sorted(items, key=_sort_key)
    return [ordered[i] for i in shard_indices(len(ordered), rank, world_size)]


def gather(local: Sequence[T], total: int | None = None) -> list[T] | None:
    """Rank 0 gets every rank's list (each this rank's results for :func:`shard`'s share, in
    that order) interleaved back into the sorted order of all items; other ranks get None.
    Objects travel pickled. In a world of one, returns ``list(local)``."""
    current = job()
    if not current.distributed:
        return list(local)
    parts: list[Any] = [None] * current.world_size if current.is_main else None
    dist.gather_object(list(local), parts, dst=0)
    if not current.is_main:
        return None
    count = sum(len(part) for part in parts) if total is None else total
    merged: list[Any] = [None] * count
    for rank, part in enumerate(parts):
        for position, value in zip(range(rank, count, current.world_size), part):
            merged[position] = value
    return merged


def gather_indexed(indices: Sequence[int], items: Sequence[T], total: int | None = None) -> list[T]:
    """Every rank's ``items`` in the order of their global ``indices``, returned on every rank.

    For evaluations whose accumulated state does not fit :func:`merge_evaluator` (one row per
    sample): each rank keeps its per-item outputs (e.g. one image's matched keypoints) with the
    item's global index, and after this call every rank feeds one accumulator with all items in
    index order, so the result is the single-process result exactly (same updates in the same
    order). A collective: every rank must call it (a rank with no items passes empty lists).
    Objects travel pickled (``all_gather_object``).

    Args:
        indices: (N,) the global index of each of this rank's items (for a
            :func:`shard_indices` share: those indices), any order.
        items: (N,) this rank's items, ``items[k]`` belonging to ``indices[k]``.
        total: when given, the indices of all ranks together must be exactly ``0 .. total - 1``.

    Returns:
        All items of all ranks sorted by index (stable). In a world of one: ``items`` sorted by
        ``indices``.

    Raises:
        MeshrecError: ``indices`` and ``items`` differ in length, two ranks (or one) gave the
            same index, or (with ``total``) an index is missing or out of range.

    >>> gather_indexed([2, 0], ["c", "a"])   # a world of one
    ['a', 'c']
    """
    current = job()
    indices = [int(i) for i in indices]
    if len(indices) != len(items):
        raise MeshrecError(f"rank {current.rank}: {len(indices)} indices for {len(items)} items")
    pairs = list(zip(indices, items))
    if current.distributed:
        parts: list[Any] = [None] * current.world_size
        dist.all_gather_object(parts, pairs)
        pairs = [pair for part in parts for pair in part]
    every = [index for index, _ in pairs]
    if len(set(every)) != len(every):
        raise MeshrecError("two ranks gave an item the same index; shard the items with "
                           "meshrec.distributed.shard_indices")
    if total is not None and sorted(every) != list(range(total)):
        raise MeshrecError(f"the ranks gave {len(every)} items with indices that are not 0 .. {total - 1}; "
                           "every item must be evaluated by exactly one rank")
    return [item for _, item in sorted(pairs, key=lambda pair: pair[0])]


def merge_evaluator(evaluator: Any, indices: Sequence[int] | torch.Tensor) -> Any:
    """Merges the :class:`meshrec.metrics.Evaluator` of every rank into one holding all ranks'
    samples in global sample order, so that ``compute()`` gives the single-process numbers.

    Args:
        evaluator: this rank's evaluator; every per-sample value it holds (one row per sample,
            the layout of ``Evaluator._add``) is merged.
        indices: (N,) the global index of each sample this rank fed, in feeding order
            (for a :func:`shard_indices` share: those indices).

    Returns:
        ``evaluator`` itself, refilled with every rank's samples in index order (on every rank,
        so each returns the same metrics). In a world of one, ``evaluator`` unchanged.

    Raises:
        MeshrecError: ``indices`` do not match the samples fed, or two ranks fed one index.
    """
    current = job()
    order = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if len(order) != len(evaluator):
        raise MeshrecError(f"rank {current.rank}: {len(order)} sample indices for an evaluator fed "
                           f"{len(evaluator)} samples")
    values = {key: torch.cat(parts).cpu() for key, parts in evaluator._values.items() if parts}
    for key, value in values.items():
        if value.shape[0] != len(order):
            raise MeshrecError(f"evaluator value {key!r} has {value.shape[0]} rows for {len(order)} samples; "
                               "merge_evaluator needs one row per sample")
    sequences = list(getattr(evaluator, "_sequences", []))
    if not current.distributed:
        return evaluator
    mine = {"indices": order, "values": values, "sequences": sequences}
    parts: list[Any] = [None] * current.world_size
    dist.all_gather_object(parts, mine)
    all_indices = torch.cat([part["indices"] for part in parts])
    if len(torch.unique(all_indices)) != len(all_indices):
        raise MeshrecError("two ranks evaluated the same sample; shard the samples with "
                           "meshrec.distributed.shard_indices")
    permutation = torch.argsort(all_indices, stable=True)
    keys = sorted({key for part in parts for key in part["values"]})
    for key in keys:
        if any(key not in part["values"] for part in parts if len(part["indices"])):
            raise MeshrecError(f"evaluator value {key!r} is missing on some ranks")
    evaluator._values = {
        key: [torch.cat([part["values"][key] for part in parts if key in part["values"]])[permutation]]
        for key in keys}
    evaluator._num_samples = len(all_indices)
    if hasattr(evaluator, "_sequences"):
        every = [sequence for part in parts for sequence in part["sequences"]]
        if every and len(every) != len(all_indices):
            raise MeshrecError(f"the evaluator holds {len(every)} sequence ids for {len(all_indices)} samples; "
                               "merge_evaluator needs one per sample")
        evaluator._sequences = [every[i] for i in permutation.tolist()] if every else []
    return evaluator


def padded_batches(items: Sequence[T], batch_size: int) -> Iterator[list[T]]:
    """``items`` in batches of ``batch_size``, followed by empty batches so that every rank
    runs the same number of iterations (per-batch collectives such as
    :class:`GlobalProgress` then match up)."""
    count = -(-len(items) // batch_size)
    total = job().all_reduce_max(count)
    for index in range(total):
        yield list(items[index * batch_size : (index + 1) * batch_size])


class GlobalProgress:
    """One progress bar, on rank 0, counting every rank's items: :meth:`update` sums the counts
    of all ranks (a collective: every rank must call it the same number of times, e.g. once per
    batch of :func:`padded_batches`, with 0 for an empty batch)."""

    def __init__(self, total: int, enabled: bool, **tqdm_options: Any):
        from tqdm.auto import tqdm

        self._job = job()
        self._bar = tqdm(total=total, disable=not (enabled and self._job.is_main), file=sys.stderr, **tqdm_options)

    def update(self, count: int) -> None:
        self._bar.update(self._job.all_reduce_sum(count))

    def __enter__(self) -> "GlobalProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.close()


# ---------------------------------------------------------------------------------------------
# predict in Python


def predict(inputs: Any, method: Any = "hmr", *, device: Any = None, **options: Any) -> list[Any] | None:
    """:func:`meshrec.predict` over a torchrun job: every rank predicts its :func:`shard` of
    ``inputs`` on its device and rank 0 gets every prediction (on the CPU) in input order.

    Args:
        inputs: a folder of images or a list of image paths (or arrays).
        method, device, **options: as for :func:`meshrec.predict`; per-input lists (``bbox=``
            a list with one entry per input, ...) are split along with the inputs.

    Returns:
        On rank 0 (and outside torchrun) the list of :class:`meshrec.Prediction`, one per input
        in input order (a folder: its images sorted); on the other ranks None.

    Run it under ``torchrun --nproc-per-node N your_script.py``; outside torchrun it is
    :func:`meshrec.predict` with a list result.
    """
    from pathlib import Path

    import meshrec
    from meshrec.io.images import IMAGE_SUFFIXES

    current = init(device)
    if isinstance(inputs, (str, Path)) and Path(inputs).expanduser().is_dir():
        folder = Path(inputs).expanduser()
        inputs = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    items = list(inputs)
    order = sorted(range(len(items)), key=lambda i: _sort_key(items[i]))
    mine = [order[i] for i in shard_indices(len(items))]
    per_input = {key: [value[i] for i in mine] if isinstance(value, list) and len(value) == len(items) else value
                 for key, value in options.items()}
    predictions = (meshrec.predict([items[i] for i in mine], method=method,
                                   device=current.device if current.distributed else device, **per_input)
                   if mine else [])
    gathered = gather([prediction.cpu() for prediction in predictions], total=len(items))
    if gathered is None:
        return None
    result: list[Any] = [None] * len(items)
    for position, prediction in zip(order, gathered):
        result[position] = prediction
    return result


# ---------------------------------------------------------------------------------------------
# predict into an output folder: sharded, resumable


def _rank_manifest_name(rank: int) -> str:
    return f"manifest.rank{rank}.json"


def completed_stems(folder: Any, method: str, checkpoint: Any = None,
                    options: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Inputs (by output stem) that an earlier run into ``folder`` finished: stem -> its files.

    An input counts as finished when a manifest in the folder (``manifest.json`` or a rank's
    ``manifest.rank<r>.json``, complete or not: every manifest is rewritten after each input's
    files are in place) lists its ``<stem>.npz`` (and ``<stem>.ply`` when it wrote one) among
    ``files`` or ``resumed_files``, that manifest's run used the same method, checkpoint and
    method options, and every listed file still exists. Files are written atomically, so an
    existing file is a whole file; an input whose files are gone or were never listed (the run
    stopped between its .npz and its .ply) is predicted again.
    """
    import json
    from pathlib import Path

    folder = Path(folder)
    listed: set[str] = set()
    for manifest_path in sorted(folder.glob("manifest*.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue  # unreadable: its files are simply predicted again
        if manifest.get("command") != "predict" or manifest.get("method") != method:
            continue
        if manifest.get("checkpoint") != (str(checkpoint) if checkpoint is not None else None):
            continue
        if "method_options" in manifest and manifest["method_options"] != (options or {}):
            continue
        listed.update(manifest.get("files", []))
        listed.update(manifest.get("resumed_files", []))
    stems: dict[str, list[str]] = {}
    for name in listed:
        if name.endswith(".npz"):
            stem = name[: -len(".npz")]
            files = [name] + ([stem + ".ply"] if stem + ".ply" in listed else [])
            if all((folder / file).is_file() for file in files):
                stems[stem] = files
    return stems


def output_folder(path: Any) -> Any:
    """The :class:`~meshrec.io.outputs.OutputFolder` this rank writes into: in a torchrun job
    its manifest is ``manifest.rank<r>.json`` (rank 0 merges them into ``manifest.json``)."""
    from meshrec.io.outputs import OutputFolder

    current = job()
    if not current.distributed:
        return OutputFolder(path, command="predict")

    class RankOutputFolder(OutputFolder):
        """An :class:`OutputFolder` whose manifest is this rank's ``manifest.rank<r>.json``."""

        @property
        def manifest_path(self):
            return self.path / _rank_manifest_name(current.rank)

    out = RankOutputFolder(path, command="predict")
    out._earlier = [name for name in out._earlier if not (name.startswith("manifest.") and name.endswith(".json"))]
    return out


def _merge_manifests(folder: Any, world_size: int) -> dict[str, Any]:
    """Rank 0: the job's ``manifest.json`` from the ranks' manifests."""
    import json
    import time
    from pathlib import Path

    from meshrec.io.meshes import atomic_path

    folder = Path(folder)
    parts = [json.loads((folder / _rank_manifest_name(rank)).read_text()) for rank in range(world_size)]
    first = parts[0]
    files = sorted({name for part in parts for name in part["files"]})
    merged = {
        "run_id": first["run_id"], "command": "predict", "complete": all(part["complete"] for part in parts),
        "started": min(part["started"] for part in parts), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": first["versions"], "world_size": world_size,
        "rank_manifests": [_rank_manifest_name(rank) for rank in range(world_size)],
        "inputs": sorted({name for part in parts for name in part.get("inputs", [])}),
        "method": first.get("method"), "checkpoint": first.get("checkpoint"),
        "method_options": first.get("method_options", {}),
        "files": files,
        "failed": [entry for part in parts for entry in part["failed"]],
        "resumed_inputs": sorted({name for part in parts for name in part.get("resumed_inputs", [])}),
        "resumed_files": sorted({name for part in parts for name in part.get("resumed_files", [])}),
        "files_from_earlier_runs": sorted({name for part in parts for name in part["files_from_earlier_runs"]}
                                          - set(files)),
    }
    with atomic_path(folder / "manifest.json") as temporary:
        temporary.write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def predict_to_folder(
    inputs: Sequence[Any],
    out: Any,
    *,
    method: str,
    checkpoint: Any = None,
    body_model: Any = None,
    device: Any = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    bbox_format: str = "xywh",
    refine: str | None = None,
    resume: bool = False,
    failed: Sequence[tuple[str, str]] = (),
    method_options: dict[str, Any] | None = None,
    detector: str | None = "auto",
    render: Callable[[Any, str, Any], list[Any]] | None = None,
    echo: bool = True,
    **extras: Any,
) -> int:
    """Predicts ``inputs`` (this rank's image paths) into the output folder ``out``, writing
    each input's ``<stem>.npz`` / ``<stem>.ply`` as soon as its batch is done, so that a job
    stopped midway keeps every finished input (see :func:`completed_stems`).

    Called by ``meshrec predict`` under torchrun or with ``--resume``; in a torchrun job,
    ``inputs`` is this rank's :func:`shard`, ``out`` a path, and each rank writes
    ``manifest.rank<r>.json``, merged by rank 0 into ``manifest.json`` at the end.

    Args:
        inputs: image paths (already checked readable), in order.
        out: the output folder (path; or an :class:`~meshrec.io.outputs.OutputFolder` outside
            a torchrun job).
        resume: skip the inputs an earlier run with the same method finished.
        failed: (input, reason) of inputs that were skipped as unreadable (for the manifest).
        extras: per-input lists (one entry per input) or shared arrays, as for
            :func:`meshrec.predict`.
        method, checkpoint, body_model, device, batch_size, progress, bbox_format, refine,
        detector, method_options: as for :func:`meshrec.predict`.
        render: ``render(prediction, input_name, out_folder / stem)`` writes pictures of a
            prediction and returns their paths (``meshrec predict --render``).
        echo: print a line per input written.

    Returns:
        The number of inputs that failed on any rank (every rank returns the same number).
    """
    from pathlib import Path

    import meshrec
    from meshrec.io.outputs import OutputFolder

    current = job()
    if not isinstance(out, OutputFolder):
        out = output_folder(out)
    names = [str(path) for path in inputs]
    stems = [Path(path).stem for path in inputs]
    method_options = dict(method_options or {})
    done = completed_stems(out.path, method, checkpoint, method_options) if resume else {}
    if resume and current.is_main:
        # half-written files of a killed run (atomic writes name them .<file>.partial-<pid>); no
        # rank of this job writes before the barrier below, so none of these is in use
        for stale in out.path.glob(".*.partial-*"):
            stale.unlink(missing_ok=True)
    todo = [index for index, stem in enumerate(stems) if stem not in done]
    skipped = [index for index, stem in enumerate(stems) if stem in done]
    # every rank has read the earlier manifests before any rank rewrites its own
    current.barrier()
    if current.distributed:
        run_id = [out.run_id]
        dist.broadcast_object_list(run_id, src=0)
        out.run_id = run_id[0]  # one id for the whole job, in every rank's manifest
    out.start(inputs=names, method=method, checkpoint=str(checkpoint) if checkpoint is not None else None,
              method_options=method_options, rank=current.rank, world_size=current.world_size,
              resumed_inputs=[names[i] for i in skipped],
              resumed_files=sorted(file for i in skipped for file in done[stems[i]]))
    if skipped and echo:
        print(f"meshrec predict: rank {current.rank}: {len(skipped)} of {len(names)} inputs already done "
              f"(--resume), {len(todo)} to predict", file=sys.stderr)

    loaded = refiner = None
    if todo:
        loaded = meshrec.load_method(method, checkpoint=checkpoint, body_model=body_model,
                                     device=current.device if current.distributed else device, **method_options)
        if refine is not None:
            refiner = meshrec.load_method(refine, body_model=loaded.body_model if loaded.body_model is not None
                                          else body_model, device=loaded.device)
    size = batch_size or (loaded.batch_size if loaded is not None else 1)
    total = current.all_reduce_sum(len(todo))
    show = progress if progress is not None else sys.stderr.isatty()
    with GlobalProgress(total, enabled=show, unit="img", desc=f"meshrec {method}") as bar:
        for batch in padded_batches(todo, size):
            if batch:
                per_batch = {key: [value[i] for i in batch] if isinstance(value, list) else value
                             for key, value in extras.items()}
                predictions = meshrec.predict([names[i] for i in batch], method=loaded, batch_size=size,
                                              progress=False, bbox_format=bbox_format, refine=refiner,
                                              detector=detector, **per_batch)
                for index, prediction in zip(batch, predictions):
                    written = out.write_prediction(prediction, stems[index])
                    if render is not None:
                        written += render(prediction, names[index], out.path / stems[index])
                    if echo:
                        count = prediction.num_people
                        print(f"{names[index]}: {count} {'person' if count == 1 else 'people'} -> "
                              f"{', '.join(str(w) for w in written)}")
            bar.update(len(batch))
    out.finish(failed=list(failed))
    failures = current.all_reduce_sum(len(failed))
    if current.distributed:
        current.barrier()  # every rank's manifest is final
        if current.is_main:
            _merge_manifests(out.path, current.world_size)
        current.barrier()
    return failures
