"""The package's shape (docs/DESIGN.md): imports only downward, no import cycle, no private name across files,
small folders and files. Read from the source with `ast`; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pabench"
GROUND = {"errors", "units", "atomic"}  # the ground floor: anyone may import it
# Which top-level parts of pabench each layer may import (itself and the ground floor always).
ALLOWED = {
    "core": set(),
    "kernels": set(),
    "backends": {"core", "kernels"},
    "parallel": set(),  # torch.distributed and the ranks' processes: below everything that runs a model
    "engine": {"backends", "core", "kernels", "parallel"},
    "bench": {"engine", "backends", "core", "kernels", "parallel"},
    "kernelbench": {"kernels"},
    # report and plot read exports, where a backend is a name: they ask `backends.is_paged(name)` (torch-free)
    "report": {"bench", "backends"},
    "plot": {"report", "backends"},
    "explain": {"core"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module_level_only: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every pabench import in `path`; TYPE_CHECKING blocks
    are skipped (they never run), and with `module_level_only` so are imports inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, [], child.lineno) for a in child.names if a.name.split(".")[0] == "pabench")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - child.level + 1]
                                    + ([base] if base else []))
                if base.split(".")[0] == "pabench":
                    found.append((base, [a.name for a in child.names], child.lineno))
            visit(child)

    visit(tree)
    return found


def _targets(base: str, names: list[str]) -> list[str]:
    """The modules an import runs: `from pabench.x import y` is pabench.x.y when y is a module, else pabench.x."""
    subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
    return subs if subs and len(subs) == len(names) else [base] + subs


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {t for base, names, _ in _imports(path, module_level_only=True) for t in _targets(base, names)
                       if t in MODULES and t != name}
    return graph


def test_the_walk_sees_the_package():
    assert {"pabench.cli", "pabench.core.block_manager", "pabench.bench.runner", "pabench.errors"} <= set(MODULES)
    graph = _graph()
    assert "pabench.core.block_manager" in graph["pabench.core"]  # core's __init__ re-exports BlockManager
    assert "pabench.cli.options" in graph["pabench.cli.run"]  # `from pabench.cli import options` is the module


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of `graph` closes, each as the path that closes it."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    return cycles


def test_no_import_cycle_at_module_level():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_walk_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert _targets("pabench.core", ["BlockManager"]) == ["pabench.core"]


@pytest.mark.parametrize("where", ["pabench", "benchmarks", "tests"])
def test_no_private_name_crosses_a_file(where):
    bad = []
    for path in sorted((ROOT / where).rglob("*.py")):
        for base, names, line in _imports(path, module_level_only=False):
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {n} from {base}")
    assert not bad, "\n".join(bad)


def test_imports_go_only_downward():
    bad = []
    for name, path in MODULES.items():
        layer = _layer(name)
        if layer in (None, "cli") or layer in GROUND or layer in ("__main__",):
            continue
        allowed = ALLOWED[layer] | {layer} | GROUND
        for base, names, line in _imports(path, module_level_only=False):
            for target in _targets(base, names):
                other = _layer(target)
                if other is not None and other not in allowed:
                    bad.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {target}")
    assert not bad, "\n".join(bad)


def test_the_ground_floor_imports_no_other_layer():
    for name in ("pabench.errors", "pabench.units", "pabench.atomic"):
        imported = {_layer(t) for base, names, _ in _imports(MODULES[name], False) for t in _targets(base, names)}
        assert imported <= GROUND, f"{name} imports {imported - GROUND}"


def test_folders_and_files_stay_small():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 5, f"top-level pabench/ holds {sorted(top)}"
    for folder in [p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"]:
        files = list(folder.glob("*.py"))
        assert len(files) <= 11, f"{folder.name}/ holds {len(files)} files"  # ~10 modules plus __init__
    wide = [f"{p.relative_to(ROOT)}:{i}" for p in MODULES.values()
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if len(line) > 120]
    assert not wide, f"lines over 120 columns: {wide}"
    long = {p.relative_to(ROOT).as_posix(): n for p in MODULES.values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
