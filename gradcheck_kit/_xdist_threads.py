"""torch's intra-op threads in pytest-xdist workers: the machine's cores shared out among the workers.

Every worker would otherwise start as many threads as the machine has cores, and ``-n auto`` on a
small machine then runs slower than one process. A worker sets ``OMP_NUM_THREADS`` (which torch reads
when it is imported, so nothing imports torch here) to ``max(1, cores // workers)`` before the test
suite's conftest files load, unless ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is already set; a
``torch.set_num_threads`` call in a conftest or test still wins, as it comes later. Subprocesses the
tests start inherit the setting.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, MutableMapping

__all__ = ["USER_VARIABLES", "available_cores", "plan", "apply_in_worker"]

#: environment variables by which the user chooses the threads; when one is set the kit leaves them
USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan(workers: int, environ: Mapping[str, str], cores: int | None = None) -> tuple[int | None, str]:
    """``(threads, description)``: the threads each of ``workers`` workers should use, or ``None``
    where the user set them, and a phrase for the report header saying which."""
    for name in USER_VARIABLES:
        if environ.get(name):
            return None, f"xdist workers: torch threads as set by {name}={environ[name]}"
    cores = available_cores() if cores is None else cores
    workers = max(1, workers)
    threads = max(1, cores // workers)
    return threads, (
        f"xdist workers: torch threads {threads} per worker ({cores} cores / {workers} workers; "
        f"set OMP_NUM_THREADS to choose)"
    )


def apply_in_worker(workers: int, environ: MutableMapping[str, str]) -> int | None:
    """Set ``OMP_NUM_THREADS`` in an xdist worker (before torch loads) per :func:`plan`; where torch is
    already imported, call ``torch.set_num_threads`` too. Returns the threads set, or ``None``."""
    threads, _ = plan(workers, environ)
    if threads is None:
        return None
    environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads
