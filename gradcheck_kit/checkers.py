"""``check_gradients`` where it has always been importable from; it lives in :mod:`gradcheck_kit.check`."""

from gradcheck_kit.check import FORWARD_AD, MODES, check_gradients

__all__ = ["check_gradients", "MODES", "FORWARD_AD"]
