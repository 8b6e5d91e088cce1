"""The README documents every setting, as ``scripts/settings_table.py`` prints it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_configuration_table_matches_settings() -> None:
    table = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    readme = (REPO / "README.md").read_text()
    missing = [row for row in table.splitlines() if row not in readme]
    assert missing == []
