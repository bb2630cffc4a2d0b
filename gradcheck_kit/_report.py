"""Temporary: the report's types moved to ``gradcheck_kit.report`` (this module goes at the merge)."""

from gradcheck_kit.report import CheckResult  # noqa: F401
from gradcheck_kit.report import GradientReport  # noqa: F401
from gradcheck_kit.report import GroupSummary  # noqa: F401
from gradcheck_kit.report import InputInfo  # noqa: F401
from gradcheck_kit.report import Mismatch  # noqa: F401
from gradcheck_kit.report import Note  # noqa: F401
from gradcheck_kit.report import format_index  # noqa: F401
