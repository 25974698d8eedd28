"""The README's layout table names every module: the architecture a reader learns there is the one in src/."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.check
def test_every_module_is_in_the_readmes_layout_table():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/]+?)(?:\.py)?`", table))
    package = ROOT / "src" / "asrflow"
    modules = {p.relative_to(package).with_suffix("").as_posix() for p in package.rglob("*.py")}
    missing = sorted(m for m in modules if not m.endswith("__init__") and m.rsplit("/", 1)[-1] not in named)
    assert not missing, f"modules missing from README.md's layout table: {missing}"
