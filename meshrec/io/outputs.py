"""Output folders of ``meshrec predict``: checked before any work, written atomically, described
by a manifest.

Each run writes ``manifest.json`` first (marked incomplete) and rewrites it at the end: inputs,
method, versions, start and end time, and the files it wrote. Files are written under a
temporary name and renamed, so an interrupted run leaves complete files only, and its manifest
says that the run did not finish. Files in the folder that the run did not write (left by an
earlier run) are listed as ``files_from_earlier_runs``, so two runs never mix silently.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from meshrec.errors import MeshrecError
from meshrec.io.meshes import atomic_path

__all__ = ["OutputFolder"]

MANIFEST = "manifest.json"


class OutputFolder:
    """A folder a run writes its results into.

    Args:
        path: the folder (created with its parents).
        command: what is writing (recorded in the manifest).

    Raises:
        MeshrecError: the folder cannot be created or written to (checked at once, before any
            work), naming the path and the reason.
    """

    def __init__(self, path: str | Path, command: str):
        self.path = Path(path).expanduser()
        self.command = command
        self.run_id = uuid.uuid4().hex[:12]
        self.written: list[str] = []
        self.manifest: dict[str, Any] = {}
        try:
            if self.path.exists() and not self.path.is_dir():
                raise MeshrecError(f"output folder {self.path} is a file; pass a folder with --out")
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".meshrec-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise MeshrecError(f"cannot write to the output folder {self.path}: {error.strerror or error}; "
                               "pass a writable folder with --out") from None
        self._earlier = sorted(p.name for p in self.path.iterdir() if p.name != MANIFEST and not p.name.startswith("."))

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def _save_manifest(self) -> None:
        with atomic_path(self.manifest_path) as temporary:
            temporary.write_text(json.dumps(self.manifest, indent=2) + "\n")

    def start(self, **details: Any) -> None:
        """Records the run (``details``: inputs, method, ...) as started and not complete."""
        import torch

        from meshrec import __version__

        self.manifest = {
            "run_id": self.run_id, "command": self.command, "complete": False,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None,
            "versions": {"meshrec": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
            **details, "files": [], "failed": [], "files_from_earlier_runs": self._earlier,
        }
        self._save_manifest()

    def write_prediction(self, prediction: Any, stem: str) -> list[Path]:
        """``<stem>.npz`` (every field) and ``<stem>.ply`` (all people's meshes in one file)."""
        written = [prediction.save(self.path / f"{stem}.npz")]
        if prediction.num_people:
            written.append(prediction.save(self.path / f"{stem}.ply"))
        self.written += [path.name for path in written]
        self.manifest["files"] = list(self.written)
        self._save_manifest()
        return written

    def finish(self, failed: list[tuple[str, str]] = ()) -> None:
        """Marks the run complete, with the inputs that failed (name, reason)."""
        mine = set(self.written)
        self.manifest.update(
            complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            failed=[{"input": name, "error": reason} for name, reason in failed],
            files_from_earlier_runs=[name for name in self._earlier if name not in mine])
        self._save_manifest()
        if self.manifest["files_from_earlier_runs"]:
            print(f"meshrec {self.command}: note: {self.path} also holds {len(self.manifest['files_from_earlier_runs'])} "
                  f"files of an earlier run (listed in {self.manifest_path})", file=sys.stderr)
