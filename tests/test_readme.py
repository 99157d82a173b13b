"""Every Python code block of the README runs (against real nodes, through LocalCluster)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_the_readme_has_python_examples() -> None:
    """The examples below exist (a renamed fence would silently skip them all)."""
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
@pytest.mark.timeout(120)
def test_readme_example_runs(index: int) -> None:
    """The README's Python block number `index` runs to completion without an error."""
    code = compile(BLOCKS[index], f"README.md python block {index}", "exec")
    exec(code, {"__name__": f"readme_example_{index}"})
