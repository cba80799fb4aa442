"""Rules of the design that a refactor could silently break."""

import ast
import subprocess
import sys
from pathlib import Path

import palsgd
from palsgd.core.algorithms import ALGORITHMS

ROOT = Path(palsgd.__file__).parent
# Which layers each layer may import (besides itself): core <- sim, real <- harness <- cli; reports read
# result folders through core alone. harness starts real/ only as a subprocess (torchrun), never imports it.
MAY_IMPORT = {
    "core": set(),
    "sim": {"core"},
    "real": {"core"},
    "harness": {"core", "sim"},
    "reports": {"core"},
    "cli": {"core", "sim", "harness", "reports"},
}
WITHOUT_TORCH = ("core", "sim", "harness", "reports", "cli")


def test_sim_and_real_implement_exactly_the_same_algorithms():
    from palsgd.real.algorithms import ALGORITHM_CLASSES
    from palsgd.sim.algorithms import REGISTRY

    assert tuple(REGISTRY) == ALGORITHMS
    assert set(ALGORITHM_CLASSES) == set(ALGORITHMS)


def test_cli_harness_and_reports_do_not_import_torch():
    code = ("import sys, palsgd.cli, palsgd.harness.commands.simulate, palsgd.harness.machinery.launch, "
            "palsgd.harness.machinery.sweep, palsgd.harness.commands.validate, palsgd.reports.render; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def layer_files(layer: str) -> list[Path]:
    return [ROOT / "cli.py"] if layer == "cli" else sorted((ROOT / layer).rglob("*.py"))


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module name, line, at module level) of every import in ``path``; relative imports are
    resolved against the file's package (``palsgd.<folders>``). At module level = outside any function,
    so it runs when the module is imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
    in_function = {id(n) for f in functions for n in ast.walk(f)}
    package = ["palsgd", *path.parent.relative_to(ROOT).parts]
    out = []
    for node in ast.walk(tree):
        top = id(node) not in in_function
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else node.module
            if node.level and node.module:
                out.append((f"{base}.{node.module}", node.lineno, top))
            elif node.level:  # "from . import store" imports the module <package>.store
                out += [(f"{base}.{alias.name}", node.lineno, top) for alias in node.names]
            else:
                out.append((base, node.lineno, top))
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "palsgd" and len(parts) > 1 and parts[1] in MAY_IMPORT else None


def test_parser_resolves_relative_imports():
    found = {m for m, _, _ in imports(ROOT / "harness" / "machinery" / "store.py")}
    assert {"palsgd.core", "palsgd.core.results", "tomli_w"} <= found
    assert layer_of("palsgd.sim.algorithms.base") == "sim" and layer_of("palsgd") is None


def test_layers_import_only_the_layers_below_them():
    """Every import anywhere in a module (also inside functions) follows ``MAY_IMPORT``."""
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for layer, allowed in MAY_IMPORT.items() for path in layer_files(layer)
             for module, line, _ in imports(path)
             if layer_of(module) not in (None, layer, *allowed)]
    assert not wrong, "\n".join(wrong)


def test_harness_machinery_does_not_import_its_commands():
    """harness/ has two floors: machinery/ (launch, store, netem, sweep, calibrate, compare, ...) and
    commands/ (one module per command) above it; the machinery never reaches up."""
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted((ROOT / "harness" / "machinery").rglob("*.py"))
             for module, line, _ in imports(path) if module.startswith("palsgd.harness.commands")]
    assert not wrong, "\n".join(wrong)
    assert {p.parent.name for p in (ROOT / "harness").rglob("*.py")} == {"harness", "machinery", "commands"}


def test_no_module_outside_real_imports_torch_when_imported():
    """torch is imported at module level in ``real/`` only; elsewhere only inside a function, if at all."""
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for layer in WITHOUT_TORCH for path in layer_files(layer)
             for module, line, top in imports(path) if top and module.split(".")[0] == "torch"]
    assert not wrong, "\n".join(wrong)


PACKAGE_DIRS = ("core", "sim", "real", "harness", "reports")


def module_name(path: Path) -> str:
    parts = ["palsgd", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    paths = [ROOT / "__init__.py", ROOT / "cli.py", *(p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py"))]
    return {module_name(p): p for p in paths}


def module_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports anywhere (also inside functions): ``from X import y``
    counts as importing ``X.y`` when that is a module, else ``X``. Imports under ``if TYPE_CHECKING:``
    never run and are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
                   for n in ast.walk(node)}
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else node.module
            base = f"{base}.{node.module}" if node.level and node.module else base
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in found if m in modules}


def test_no_import_cycles():
    """No module of the package reaches itself through imports, wherever in a module they are: a cycle
    only works by the order in which modules happen to be imported (a package importing its own
    submodules, as ``palsgd.sim`` or ``palsgd.real.algorithms`` do, is no cycle: Python runs the package
    first)."""
    modules = package_modules()
    graph = {m: {d for d in module_imports(p, modules) if not m.startswith(d + ".")} for m, p in modules.items()}
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append(" -> ".join([*path[path.index(module):], module]))
            return
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_imports_inside_functions_are_deferred_on_purpose():
    """A module imports what it needs at its top. Inside a function only an import that is deferred on
    purpose (an optional or slow dependency), with the reason in a comment on its line; ``cli.py`` defers
    every layer so that ``palsgd --help`` and a bad option answer at once (its docstring says so)."""
    wrong = []
    for path in package_modules().values():
        if path.name == "cli.py" and path.parent == ROOT:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        wrong += [f"{path.relative_to(ROOT)}:{line} imports {module} inside a function without a reason"
                  for module, line, top in imports(path) if not top and "#" not in lines[line - 1]]
    assert not wrong, "\n".join(wrong)
