"""Read JSONL where a bad line is reported with its number and the rest is still used."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: What a line parser may raise for a malformed line.
LINE_ERRORS = (ValueError, KeyError, TypeError, AttributeError)


def read_jsonl(path: Path, parse: Callable[[dict[str, Any], int], T]) -> tuple[list[T], list[str]]:
    """``parse(row, line_number)`` per non-blank line → (items, ``file:line: why`` errors)."""
    items: list[T] = []
    errors: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(parse(json.loads(line), lineno))
        except LINE_ERRORS as exc:
            errors.append(f"{path.name}:{lineno}: {exc}")
    return items, errors


def question_of(row: dict[str, Any]) -> str:
    """The row's non-empty question, or ``ValueError``."""
    question = str(row["question"]).strip()
    if not question:
        raise ValueError("empty question")
    return question
