"""The docs' layout table (docs/concepts.md) names every module: the architecture a reader learns there is the one
in src/."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.check
def test_every_module_is_in_the_docs_layout_table():
    concepts = (ROOT / "docs" / "concepts.md").read_text()
    table = concepts.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/]+?)(?:\.py)?`", table))
    package = ROOT / "src" / "asrflow"
    modules = {p.relative_to(package).with_suffix("").as_posix() for p in package.rglob("*.py")}
    missing = sorted(m for m in modules if not m.endswith("__init__") and m.rsplit("/", 1)[-1] not in named)
    assert not missing, f"modules missing from docs/concepts.md's layout table: {missing}"


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The asrflow modules `module` imports, at its top or inside a function (a lazy import is an edge too)."""
    import ast

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target not in (module, "asrflow"):
                found.add(target)
    return found


@pytest.mark.check
def test_no_module_imports_one_that_imports_it_back():
    """Loading goes one way down (transcriber -> mlmodel -> registry -> models -> backends; the flavor calls the
    library, the library never imports the flavor), and so does every other pair: no import cycle in src/."""
    package = ROOT / "src" / "asrflow"
    paths = {
        ".".join(("asrflow", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in package.rglob("*.py")
    }
    graph = {m: imports_of(m, p, set(paths)) for m, p in paths.items()}

    def cycle_from(start: str) -> list[str] | None:
        path, seen = [start], set()

        def walk(node: str) -> list[str] | None:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    path.append(nxt)
                    if found := walk(nxt):
                        return found
                    path.pop()
            return None

        return walk(start)

    cycles = [c for m in sorted(graph) if (c := cycle_from(m))]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    assert "asrflow.flavor" not in graph["asrflow.transcriber"] and graph["asrflow.transcriber"]  # it saw imports


@pytest.mark.check
def test_the_floors_make_test_floors_installs_are_pyprojects():
    """floors.txt pins each floor that pyproject.toml declares (dependencies and extras), and nothing else: the
    versions `make test-floors` checks are the ones users are promised."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    extras = [line for lines in project["optional-dependencies"].values() for line in lines]
    for line in project["dependencies"] + extras:
        requirement = Requirement(line)
        floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if canonicalize_name(requirement.name) != "asrflow":
            assert floors or requirement.specifier, f"{line}: declare the version it needs (a floor)"
        if floors:
            declared[canonicalize_name(requirement.name)] = floors[0]
    pinned = {}
    for line in (ROOT / "floors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = Version(version)
    assert pinned == declared
