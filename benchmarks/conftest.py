"""pytest-benchmark suites for edgepath's hot paths (not tests: run with ``make bench``).

    .venv/bin/python -m pytest benchmarks --benchmark-only --benchmark-columns=median,iqr,ops

Each suite pins torch to ``EDGEPATH_BENCH_THREADS`` threads (default 2) so that numbers are
comparable between runs; the machine is recorded in the JSON that ``--benchmark-json`` writes.
"""

from __future__ import annotations

import os

import pytest

THREADS = int(os.environ.get("EDGEPATH_BENCH_THREADS", "2"))


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    import torch

    torch.set_num_threads(THREADS)


def pytest_benchmark_update_machine_info(config, machine_info) -> None:
    from edgepath.eval.machine import describe

    machine_info["edgepath"] = describe(threads=THREADS)
