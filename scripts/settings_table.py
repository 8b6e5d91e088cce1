"""Write ``docs/configuration.md`` from ``app.config.Settings`` (so the two agree).

    .venv/bin/python scripts/settings_table.py          # print the page
    .venv/bin/python scripts/settings_table.py --write  # rewrite docs/configuration.md

``tests/test_docs.py`` fails when the page and ``Settings`` disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.config import Settings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

HEADER = """\
# Configuration

Every setting is an environment variable with the prefix `COVRAG_` (or a line in `.env`).
This page is generated from `app.config.Settings`: regenerate it with
`.venv/bin/python scripts/settings_table.py --write`; `tests/test_docs.py` fails when the two
disagree. How the serving settings play together: [serving.md](serving.md); what a deployment
sets: [deploy.md](deploy.md).
"""


def table() -> str:
    """The settings table, one row a field, in declaration order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default is not None else "(none)"
        if isinstance(default, list):
            default = ",".join(map(str, default)) or "(none)"
        rows.append(f"| `COVRAG_{name.upper()}` | `{default}` | {field.description or ''} |")
    return "\n".join(rows) + "\n"


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
