"""Write ``docs/configuration.md`` from ``app.config.Settings`` (so the two agree).

    .venv/bin/python scripts/settings_table.py          # print the page
    .venv/bin/python scripts/settings_table.py --write  # rewrite docs/configuration.md

``tests/test_docs.py`` fails when the page and ``Settings`` disagree.
"""

from __future__ import annotations

import sys
from itertools import groupby
from pathlib import Path

from app.config import Settings, Variable, variables

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

HEADER = """\
# Configuration

Every setting is an environment variable with the prefix `COVRAG_` (or a line in `.env`).
In code the settings are a tree of groups, `settings.<group>.<field>` (the second column).
This page is generated from `app.config.Settings`: regenerate it with
`.venv/bin/python scripts/settings_table.py --write`; `tests/test_docs.py` fails when the two
disagree. How the serving settings play together: [serving.md](serving.md); what a deployment
sets: [deploy.md](deploy.md).
"""


def row(variable: Variable) -> str:
    default = variable.info.default if variable.info.default is not None else "(none)"
    if isinstance(default, list):
        default = ",".join(map(str, default)) or "(none)"
    return (
        f"| `{variable.name}` | `{variable.group}.{variable.field}` | `{default}` "
        f"| {variable.info.description or ''} |"
    )


def table() -> str:
    """One section a group, one row a variable, in declaration order."""
    groups = Settings.groups()
    sections = []
    for name, group_variables in groupby(variables(), key=lambda v: v.group):
        summary = (groups[name].__doc__ or "").split("\n\n")[0].replace("\n", " ")
        rows = ["| variable | field | default | meaning |", "|---|---|---|---|"]
        rows += map(row, group_variables)
        sections.append(f"## {name}\n\n{summary}\n\n" + "\n".join(rows) + "\n")
    return "\n".join(sections)


def page() -> str:
    """The whole of ``docs/configuration.md``."""
    return f"{HEADER}\n{table()}"


def main(argv: list[str]) -> None:
    if argv == ["--write"]:
        PAGE.write_text(page())
    elif not argv:
        sys.stdout.write(page())
    else:
        raise SystemExit("usage: settings_table.py [--write]")


if __name__ == "__main__":
    main(sys.argv[1:])
