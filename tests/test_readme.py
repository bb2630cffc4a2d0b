"""Every Python block of the README runs as written.

A block whose first line is ``# test_NAME.py`` is a pytest file: it runs through pytester with the
installed plugin and all its tests must pass. Any other block is executed in a fresh namespace, and
every ``test_*`` function it defines without parameters (Hypothesis ``@given`` tests) is then called.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


BLOCKS = _blocks()


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 8


PYTEST_FILES = [(line, source) for line, source in BLOCKS if re.fullmatch(r"# test_\w+\.py", source.split("\n")[0].strip())]
SCRIPTS = [(line, source) for line, source in BLOCKS if (line, source) not in PYTEST_FILES]


@pytest.mark.parametrize("line,source", SCRIPTS, ids=[f"line{line}" for line, _ in SCRIPTS])
def test_readme_block_runs(line, source, tmp_path):
    path = tmp_path / f"readme_line{line}.py"
    path.write_text(source, encoding="utf-8")
    namespace = runpy.run_path(str(path), run_name=f"readme_line{line}")
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            value()


@pytest.mark.parametrize("line,source", PYTEST_FILES, ids=[f"line{line}" for line, _ in PYTEST_FILES])
def test_readme_pytest_file_passes(line, source, pytester):
    name = source.split("\n")[0].strip()[2:-3]
    pytester.makepyfile(**{name: source})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1, result.stdout.str()
    assert not {"failed", "error", "errors"} & set(outcomes), result.stdout.str()
