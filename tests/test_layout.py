"""The architecture, checked: one module talks to MLflow, the numerical core imports no orchestration or tracking
library, and every module stays small enough to read."""

import ast
from pathlib import Path

from conftest import ROOT

SOURCES = [p for p in ROOT.rglob("*.py") if not {".venv", "runs", "build"} & set(p.relative_to(ROOT).parts)]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_tracking_module_imports_mlflow():
    users = sorted(str(p.relative_to(ROOT)) for p in SOURCES if "mlflow" in _imports(p) and "tests" not in p.parts)
    assert users == ["tasks/backends/tracking.py"]


def test_the_core_is_plain_numerics():
    for path in (ROOT / "tasks" / "core").glob("*.py"):
        assert not {"prefect", "mlflow", "torch", "transformers"} & _imports(path), path


def test_no_module_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
