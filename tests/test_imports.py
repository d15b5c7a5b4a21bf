"""The layers import downwards only, and everything is imported as ``orbithil.*``.

Every import in every module is read from its syntax tree (also those inside functions,
which run later but are dependencies all the same) and mapped to its layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {  # folder -> import name under orbithil
    "orbithil": "",
    "hal": "hal",
    "payload": "payload",
    "sim": "sim",
    "flight": "flight",
    "fpga": "fpga",
    "tools": "tools",
}
# What each layer may import besides itself and the root package (settings, errors).
ALLOWED = {
    "": set(),
    "hal": set(),
    "fpga": set(),
    "payload": {"hal"},
    "sim": {"hal", "payload", "fpga"},
    "flight": {"hal", "payload"},
    "tools": {"hal", "payload", "sim", "flight", "fpga"},
}
BARE = {"hal", "sim", "flight", "tools", "payload", "fpga"}


def _modules():
    for folder, layer in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join(["orbithil", *([layer] if layer else []), *parts])
            yield layer, name, path


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
    return found


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "orbithil":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else ""


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    edges: dict[str, set[str]] = {layer: set() for layer in ALLOWED}
    problems = []
    for layer, name, path in _modules():
        for module, line in _imports(name, path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module.split(".")[0] in BARE:
                problems.append(f"{where} imports {module!r}: use orbithil.{module}")
                continue
            target = _layer_of(module)
            if target is None or target in ("", layer):
                continue
            edges[layer].add(target)
            if target not in ALLOWED[layer]:
                problems.append(f"{where}: {layer or 'orbithil'} imports {module} ({target})")
    return edges, problems


def test_every_module_is_scanned():
    names = [name for _, name, _ in _modules()]
    assert len(names) > 80 and "orbithil.hal.backends" in names
    assert "orbithil.sim.cocotb_tests.tb_chip" in names


def test_layers_import_downwards_only():
    _, problems = _graph()
    assert not problems, "\n".join(problems)


def test_there_is_no_cycle_between_layers():
    edges, _ = _graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert "sim" not in edges["flight"] and not edges["hal"]


def test_the_packages_pyproject_installs_are_every_folder_with_code():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    wanted = {name for _, name, path in _modules() if path.name == "__init__.py"}
    data = {
        "orbithil.fpga.rtl",
        "orbithil.fpga.board",
        "orbithil.sim.tb",
        "orbithil.tools.ground.static",
    }  # files, no code
    for name in data:
        folder = ROOT / name.split(".", 1)[1].replace(".", "/")
        assert folder.is_dir() and not list(folder.glob("*.py")), folder
    wanted |= data
    assert listed == wanted, (sorted(wanted - listed), sorted(listed - wanted))
    mapping = config["package-dir"]
    for folder, layer in LAYERS.items():
        assert mapping["orbithil" + (f".{layer}" if layer else "")] == folder
