"""Make pytester's in-process runs cheap and safe with torch loaded.

After each in-process run, pytester puts ``sys.modules`` back as it was, dropping every module the
run imported. torch cannot be imported twice (its lazily loaded parts register operator libraries
once per process), and importing it again would cost a second per run anyway. So here pytester keeps
the library modules a run imported and drops only the test files it wrote; torch's lazy parts the
checkers need are loaded once up front, and torch's heap is kept out of the full garbage
collections each run ends with.
"""

from __future__ import annotations

import gc
import sys
from typing import Callable, Iterator

import _pytest.pytester
import pytest
import torch

import gradcheck_kit as gk
from gradcheck_kit import _config
from gradcheck_kit.pytest_plugin import route_report

_Snapshot = _pytest.pytester.SysModulesSnapshot


class _KeepLibraries(_Snapshot):  # type: ignore[misc,valid-type]
    def __init__(self, preserve: Callable[[str], bool] | None = None) -> None:
        def keep(name: str) -> bool:
            if preserve is not None and preserve(name):
                return True
            path = getattr(sys.modules.get(name), "__file__", None) or ""
            return not path.startswith(_TMP)

        super().__init__(preserve=keep)


_TMP = ""  # the session's basetemp, where pytester writes its test files


@pytest.fixture(autouse=True, scope="module")
def _keep_libraries_across_inner_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    global _TMP
    _TMP = str(tmp_path_factory.getbasetemp())
    listening = route_report in _config._LISTENERS
    _config.remove_report_listener(route_report)  # keep the warm-up out of this run's own summary
    try:
        gk.assert_gradients_close(torch.sin, torch.ones(2, dtype=torch.float64))  # torch's lazy imports
        gk.assert_grad_equals(lambda x: x.sin().sum(), torch.ones(2, dtype=torch.float64), lambda x: x.cos())
    finally:
        if listening:
            _config.add_report_listener(route_report)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_pytest.pytester, "SysModulesSnapshot", _KeepLibraries)
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
