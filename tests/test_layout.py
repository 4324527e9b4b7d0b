"""The architecture, checked: packages import only downwards, no module reaches for another's private names or
imports in a cycle, one module talks to MLflow, the numerical core imports no orchestration or tracking library,
and every module and function stays small enough to read."""

import ast
from pathlib import Path

from conftest import ROOT

SOURCES = [p for p in ROOT.rglob("*.py") if not {".venv", "runs", "build"} & set(p.relative_to(ROOT).parts)]
PRODUCT = ("cli", "flows", "tasks")
# top to bottom: a package may import its own layer and the layers below it, never one above (docs/architecture.md)
LAYERS = [("cli",), ("flows",), ("tasks.steps",), ("tasks.ops",), ("tasks.backends",), ("tasks.schema",),
          ("tasks.tasktypes",), ("tasks.core",), ("tasks.common", "tasks.errors", "tasks")]
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """The index in LAYERS of the longest package prefix of `module`; None outside the product."""
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            inside = module == name or (module.startswith(name + ".") and name != "tasks")  # the bare package only
            if inside and (best is None or len(name) > len(best[1])):
                best = (i, name)
    return best and best[0]


def imports(source: str, known: set[str]) -> list[tuple[str, str, int]]:
    """(imported module, name taken from it or '', line) for every product import, at any depth of the code;
    `from tasks import tasktypes` is the module tasks.tasktypes. Attribute reads `mod._x` on an imported product
    module are reported as the private name `_x` taken from it."""
    tree, found, alias = ast.parse(source), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PRODUCT:
                    found.append((a.name, "", node.lineno))
                    alias[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in PRODUCT:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in known:
                    found.append((sub, "", node.lineno))
                    alias[a.asname or a.name] = sub
                else:
                    found.append((node.module, a.name, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in alias \
                and node.attr.startswith("_"):
            found.append((alias[node.value.id], node.attr, node.lineno))
    return found


def problems(module: str, source: str, known: set[str]) -> list[str]:
    """What `module` (its source text) does against the rules: an import from a layer above its own, or a private
    name of another module."""
    out, own = [], layer(module)
    for target, name, line in imports(source, known):
        there = layer(target)
        if own is not None and there is not None and there < own:
            out.append(f"{module}:{line}: imports {target}, a layer above ({' > '.join(LAYERS[there])} is above "
                       f"{' > '.join(LAYERS[own])})")
        if name.startswith("_") and not name.startswith("__") and target != module:
            out.append(f"{module}:{line}: uses {target}.{name}, a private name of another module")
    return out


def _product() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in SOURCES if p.relative_to(ROOT).parts[0] in PRODUCT}


def test_imports_go_down_the_layers_and_never_reach_for_private_names():
    sources = _product()
    found = [msg for module, text in sources.items() for msg in problems(module, text, set(sources))]
    assert found == []


def test_the_layer_rule_catches_a_fabricated_module():
    known = set(_product())
    upward = "from tasks.backends import tracking\n\ndef f():\n    return tracking.read_study\n"
    assert problems("tasks.core.fabricated", upward, known) == [
        "tasks.core.fabricated:1: imports tasks.backends.tracking, a layer above (tasks.backends is above tasks.core)"]
    late = "def f():\n    from tasks.ops.validate import check_study\n    return check_study\n"
    assert "imports tasks.ops.validate" in problems("tasks.schema.fabricated", late, known)[0]
    private = "from tasks.backends import models\n\nmodels._cache = None\nfrom tasks.core.plan import _x\n"
    assert sorted(p.split(": ")[1] for p in problems("tasks.ops.fabricated", private, known)) == [
        "uses tasks.backends.models._cache, a private name of another module",
        "uses tasks.core.plan._x, a private name of another module"]
    assert problems("tasks.ops.fabricated", "from tasks.core import plan\nfrom tasks.schema.study import Study\n",
                    known) == []  # downwards, public


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every import cycle found by a depth-first walk of module -> imported modules, as 'a -> b -> a'."""
    state, found = {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                found.append(" -> ".join([*path[path.index(t):], m, t]) if t in path else f"{m} -> {t}")
            elif t not in state:
                visit(t, [*path, m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    return found


def test_no_import_cycles():
    sources = _product()
    graph = {m: {t for t, _, _ in imports(text, set(sources)) if t in sources and t != m} for m, text in sources.items()}
    assert cycles(graph) == []
    # the check itself, on fabricated modules: a loop through a function-level import is one
    known = {"tasks.backends.a", "tasks.backends.b", "tasks.backends.c"}
    texts = {"tasks.backends.a": "from tasks.backends import b\n",
             "tasks.backends.b": "def f():\n    from tasks.backends.c import g\n",
             "tasks.backends.c": "import tasks.backends.a\n"}
    fabricated = {m: {t for t, _, _ in imports(text, known)} for m, text in texts.items()}
    assert cycles(fabricated) == ["tasks.backends.a -> tasks.backends.b -> tasks.backends.c -> tasks.backends.a"]


def test_only_the_tracking_module_imports_mlflow():
    users = sorted(str(p.relative_to(ROOT)) for p in SOURCES if "mlflow" in _libraries(p) and "tests" not in p.parts)
    assert users == ["tasks/backends/tracking.py"]


def _libraries(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_is_plain_numerics():
    for path in (ROOT / "tasks" / "core").glob("*.py"):
        assert not {"prefect", "mlflow", "torch", "transformers"} & _libraries(path), path


def test_no_module_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}


def long_functions(source: str) -> dict[str, int]:
    """name:line -> length of every function (nested ones too) longer than MAX_FUNCTION_LINES."""
    return {f"{node.name}:{node.lineno}": node.end_lineno - node.lineno + 1 for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}


def test_no_function_over_60_lines():
    long = {f"{p.relative_to(ROOT)}:{name}": n for p in SOURCES for name, n in long_functions(p.read_text()).items()}
    assert long == {}
    nested = "def outer():\n    async def inner():\n" + "        x = 1\n" * 60 + "    return inner\n"
    assert long_functions(nested) == {"outer:1": 63, "inner:2": 61}


def test_every_module_has_a_layer():  # a new package is placed in LAYERS before it is used
    assert [m for m in _product() if layer(m) is None] == []
