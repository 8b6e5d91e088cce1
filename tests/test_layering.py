"""Imports flow one way, ``evaluation`` → ``app`` → ``workers`` → ``critic`` →
``llm``/``retrieval``, never back; no HTTP in the libraries below.

The serving packages name ``evaluation`` in one place only:
``app.cli.commands.add_evaluation``, a guarded import that adds the offline commands to the CLI
when that package is installed. Everything else serves without it (the API image leaves it out).
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
HOOK = ("app/cli/commands.py", "add_evaluation")


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


#: Which of our packages each package may import. Everything flows one way:
#: ``evaluation`` → ``app`` → ``workers`` → ``critic`` → ``llm``/``retrieval``.
OURS = {"app", "retrieval", "critic", "llm", "workers", "evaluation"}
ALLOWED = {
    "retrieval": set(),
    "llm": set(),
    "critic": {"retrieval", "llm"},
    "workers": {"critic", "retrieval", "llm"},
    "app": {"retrieval", "critic", "llm", "workers"},
    "evaluation": {"app", "retrieval", "critic", "llm"},
}
#: Packages that serve no HTTP of their own (``workers`` holds the critic worker's server).
NO_HTTP = {"retrieval", "llm", "critic", "evaluation"}


def test_the_layer_table_covers_every_package() -> None:
    on_disk = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench"}
    assert on_disk == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below(package: str) -> None:
    forbidden = (OURS - ALLOWED[package] - {package}) | (HTTP if package in NO_HTTP else set())
    if package == "app":
        forbidden -= {"evaluation"}  # its one guarded hook is checked below
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for path in _sources(package)
        for name, _ in _imports(path)
        if name in forbidden
    ]
    assert offenders == []


def test_only_the_cli_starts_workers() -> None:
    """The API process never imports worker tooling; the CLI's ``worker`` commands do."""
    offenders = [
        str(path.relative_to(REPO))
        for path in _sources("app")
        for name, _ in _imports(path)
        if name == "workers" and path.parent.name != "cli"
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
    assert hooks == 1, "app.cli.commands.add_evaluation registers the offline commands"


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
from app.cli.commands import cli
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

    from app.cli.commands import cli

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


def test_the_core_knows_no_http_api_or_cli() -> None:
    """The answer loop (``app.core``) is reached from the HTTP layer and the CLI, never back."""
    offenders = []
    for path in _sources("app/core"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(REPO)}: {n}"
                for n in names
                if n.split(".")[0] in HTTP or n.startswith(("app.api", "app.cli"))
            ]
    assert offenders == []


#: The HTTP layer's endpoint families: each a folder of ``app/api`` with router, serving and
#: protocol, as vLLM's ``entrypoints/openai``.
API = REPO / "app" / "api"
FAMILIES = sorted(p.parent.name for p in API.glob("*/router.py"))


def _modules(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, relative imports resolved;
    ``from a import b`` counts both ``a`` and ``a.b``, since ``b`` may be a submodule."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _other_routers(source: str, family: str) -> list[str]:
    """The routers of other families that ``app/api/<family>/router.py`` imports."""
    routers = {f"app.api.{f}.router" for f in FAMILIES} - {f"app.api.{family}.router"}
    return sorted(_modules(source, f"app.api.{family}") & routers)


def test_the_api_has_its_endpoint_families() -> None:
    wanted = {"query", "retrieve", "collections", "calibration", "jobs", "openai"}
    assert wanted <= set(FAMILIES)
    for family in wanted:
        assert {"router.py", "serving.py", "protocol.py"} <= {
            p.name for p in (API / family).glob("*.py")
        }


@pytest.mark.parametrize("family", FAMILIES)
def test_a_router_imports_no_other_familys_router(family: str) -> None:
    """Shared logic lives in serving modules; routes only parse, call and respond."""
    assert _other_routers((API / family / "router.py").read_text(), family) == []


@pytest.mark.parametrize(
    "line",
    [
        "import app.api.query.router",
        "from app.api.query.router import router",
        "from app.api.query import router",
        "from ..query import router",
        "from ..query.router import query",
    ],
)
def test_the_router_check_finds_each_spelling(line: str) -> None:
    assert _other_routers(line, "retrieve") == ["app.api.query.router"]
    assert _other_routers(line.replace("query", "retrieve"), "retrieve") == []


def test_jobs_and_metrics_work_on_domain_values() -> None:
    """``app.background`` and ``app.telemetry`` take domain types and plain values; reading a
    stored request or building a response is the serving layer's (``app.api``)."""
    paths = [REPO / "app" / "background.py", *sorted((REPO / "app" / "telemetry").glob("*.py"))]
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for path in paths
        for module in _modules(path.read_text(), "app")
        if module.startswith("app.api") or module.split(".")[0] == "pydantic"
    ]
    assert offenders == []
