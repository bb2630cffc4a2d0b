"""``python -m gradcheck_kit``: the same command line as ``gradcheck-kit``."""

from __future__ import annotations

import sys

from gradcheck_kit.cli import main

if __name__ == "__main__":
    sys.exit(main())
