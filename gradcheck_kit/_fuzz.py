"""Temporary: ``fuzz_gradients`` moved to ``gradcheck_kit.fuzz`` (this module goes at the merge)."""

from gradcheck_kit.fuzz import FuzzReport  # noqa: F401
from gradcheck_kit.fuzz import fuzz_gradients  # noqa: F401
