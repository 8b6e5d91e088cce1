"""Structured output as a regex grammar vLLM enforces while decoding."""

from __future__ import annotations

import re
from typing import Any

_JSON_VALUE = {"boolean": "(true|false)", "integer": r"-?[0-9]{1,9}"}


def compact_json_pattern(schema: dict[str, Any]) -> str:
    """A regex for one compact JSON object of a flat schema, its keys in declared order.

    Why not ``response_format``: under a JSON-schema grammar SmolLM2 puts blank lines between
    every token, which triples the decoded tokens; a regex leaves it no whitespace to spend.
    Strings exclude quotes, backslashes and newlines, so the reply always parses; a string's
    ``pattern`` (the whole value's regex, no anchors) replaces that default and must exclude
    them too.
    """
    parts = []
    for key, spec in schema["properties"].items():
        kind = spec.get("type")
        if kind == "string" and "pattern" in spec:
            value = f'"{spec["pattern"]}"'
        elif kind == "string":
            low, high = spec.get("minLength", 0), spec.get("maxLength", 200)
            value = f'"[^"\\\\\\n]{{{low},{high}}}"'
        elif kind in _JSON_VALUE:
            value = _JSON_VALUE[kind]
        else:
            raise ValueError(f"compact_json_pattern: unsupported type {kind!r} for {key!r}")
        parts.append(f'"{re.escape(key)}": {value}')
    return r"\{" + ", ".join(parts) + r"\}"
