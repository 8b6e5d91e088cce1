"""Imports flow one way, ``app`` → ``retrieval``/``critic``, never back; no HTTP below app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"app", "fastapi", "starlette", "uvicorn"}


@pytest.mark.parametrize("package", ["retrieval", "critic"])
def test_lower_layers_never_import_app_or_http(package: str) -> None:
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN
            ]
    assert offenders == []
    assert list((REPO / package).rglob("*.py")), "the package must exist"


def test_pipeline_knows_nothing_of_http() -> None:
    tree = ast.parse((REPO / "app" / "pipeline.py").read_text())
    imported = {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    } | {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"fastapi", "starlette"}
