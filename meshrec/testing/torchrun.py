"""Launching a small torchrun job from a test: ``python -m torch.distributed.run --standalone``.

The one launcher of meshrec's and the plugins' distributed tests (CPU ranks, gloo). Test
support only: the runtime never imports this module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["torchrun"]


def torchrun(*args: str, script: str | Path | None = None, ranks: int = 2, cwd: str | Path | None = None,
             pythonpath: Sequence[str | Path] = (), timeout: float = 300,
             check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``python -m torch.distributed.run --standalone --nproc-per-node RANKS`` with
    ``-m meshrec ARGS`` (no ``script``) or ``SCRIPT ARGS``, one thread per rank (as torchrun
    itself sets; a single-process reference run with ``ranks=1`` then does the same float
    arithmetic).

    Args:
        args: the command line of ``meshrec`` (or of ``script``).
        script: a Python file to run on every rank instead of ``-m meshrec``.
        ranks: processes (CPU ranks; they join with gloo).
        cwd: working folder of the job.
        pythonpath: folders put in front of ``PYTHONPATH`` (e.g. a plugin's tests folder, so
            a script can import its test helpers).
        timeout: seconds before the job is killed.
        check: raise AssertionError (with the end of stdout and stderr) when the job fails.

    Returns:
        The finished process (``stdout``, ``stderr`` as text).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in pythonpath),
                                             *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a job launched from inside another one starts its own rendezvous
    target = [str(script)] if script is not None else ["-m", "meshrec"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
               *target, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=str(cwd) if cwd is not None else None)
    if check and result.returncode != 0:
        raise AssertionError(f"torchrun exited with {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result
