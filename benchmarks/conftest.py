"""Benchmark fixtures: devices, CUDA-synchronised timing, and build info in the machine record.

Benchmarks are measurements, never tests of speed: each one asserts only that the timed code
computes the right thing. Run them with ``pytest benchmarks``; ``--benchmark-disable`` runs each
body once as a smoke test (CI does that).
"""

from __future__ import annotations

import os
import platform

import pytest
import torch

import meshrec


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["meshrec"] = meshrec.info() | {"plugins": None}
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["processor"] = platform.processor()
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name()
        machine_info["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))


@pytest.fixture
def timed(benchmark):
    """``timed(fn, *args, rounds=None)``: benchmarks ``fn`` with a CUDA synchronise inside the timed
    call, so that GPU work is measured rather than its launch, and returns ``fn``'s result.
    ``rounds`` fixes the number of runs (e.g. 1 for a brute-force reference taking minutes)
    instead of pytest-benchmark's calibration."""

    def run(fn, *args, rounds: int | None = None, **kwargs):
        def call():
            result = fn(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return result

        if rounds is not None:
            return benchmark.pedantic(call, rounds=rounds, iterations=1)
        return benchmark(call)

    return run
