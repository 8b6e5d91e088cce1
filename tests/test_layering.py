"""Imports flow one way, ``evaluation`` → ``app`` → ``retrieval``/``critic``, never back; no
HTTP below app.

The serving packages name ``evaluation`` in one place only: ``app.cli.add_evaluation``, a guarded
import that adds the offline commands to the CLI when that package is installed. Everything else
serves without it (the API image leaves it out).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HTTP = {"fastapi", "starlette", "uvicorn"}
#: The one import of ``evaluation`` the serving packages may hold: (file, enclosing function).
HOOK = ("app/cli.py", "add_evaluation")


def _imports(path: Path) -> list[tuple[str, list[ast.AST]]]:
    """Every absolute import of ``path``: the imported module's top-level name and the chain
    of nodes enclosing the import statement, outermost first."""
    found: list[tuple[str, list[ast.AST]]] = []

    def visit(node: ast.AST, chain: list[ast.AST]) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found.extend((n.split(".")[0], chain) for n in names)
        for child in ast.iter_child_nodes(node):
            visit(child, [*chain, node])

    visit(ast.parse(path.read_text()), [])
    return found


def _sources(package: str) -> list[Path]:
    paths = sorted((REPO / package).rglob("*.py"))
    assert paths, f"the package {package} must exist"
    return paths


@pytest.mark.parametrize("package", ["retrieval", "critic"])
def test_lower_layers_never_import_app_evaluation_or_http(package: str) -> None:
    forbidden = {"app", "evaluation", *HTTP}
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for path in _sources(package)
        for name, _ in _imports(path)
        if name in forbidden
    ]
    assert offenders == []


def _is_guarded_hook(path: Path, chain: list[ast.AST]) -> bool:
    """Inside ``HOOK``'s function, in a ``try`` whose handler catches ModuleNotFoundError."""
    if path.relative_to(REPO).as_posix() != HOOK[0]:
        return False
    in_hook = any(isinstance(n, ast.FunctionDef) and n.name == HOOK[1] for n in chain)
    guarded = any(
        isinstance(n, ast.Try)
        and any(
            isinstance(h.type, ast.Name) and h.type.id == "ModuleNotFoundError" for h in n.handlers
        )
        for n in chain
    )
    return in_hook and guarded


def test_app_imports_evaluation_only_through_the_guarded_cli_hook() -> None:
    offenders = []
    hooks = 0
    for path in _sources("app"):
        for name, chain in _imports(path):
            if name != "evaluation":
                continue
            if _is_guarded_hook(path, chain):
                hooks += 1
            else:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    assert hooks == 1, "app.cli.add_evaluation registers the offline commands"


def test_evaluation_sits_on_top_and_imports_no_http() -> None:
    """It uses the serving packages' public API (no web framework of its own)."""
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for path in _sources("evaluation")
        for name, _ in _imports(path)
        if name in HTTP
    ]
    assert offenders == []


#: Run in a fresh interpreter where ``evaluation`` cannot be found, as in the API image.
WITHOUT_EVALUATION = """
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name == "evaluation" or name.startswith("evaluation."):
            raise ModuleNotFoundError(f"No module named {name!r}", name="evaluation")

sys.meta_path.insert(0, Absent())
import app.main
from app.cli import cli
from typer.main import get_command

print(" ".join(sorted(get_command(cli).commands)))
"""


def test_the_serving_cli_and_api_import_without_evaluation() -> None:
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_EVALUATION],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    commands = set(run.stdout.split())
    assert {"serve", "ask", "worker", "train-critic"} <= commands
    assert not commands & {"eval", "selfpractice"}


def test_the_cli_has_the_evaluation_commands_when_installed() -> None:
    from typer.main import get_command

    from app.cli import cli

    group = get_command(cli)
    assert {"eval", "selfpractice"} <= set(group.commands)
    eval_group = group.commands["eval"]
    assert set(eval_group.commands) == {"coverage", "qa"}


def test_serving_never_loads_evaluation() -> None:
    """The API process imports nothing of it, even where it is installed."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys, app.main; print('evaluation' in sys.modules)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "False"


def test_pipeline_knows_nothing_of_http() -> None:
    tree = ast.parse((REPO / "app" / "pipeline.py").read_text())
    imported = {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    } | {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"fastapi", "starlette"}
