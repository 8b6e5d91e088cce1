"""Print the README's configuration table from ``app.config.Settings`` (so the two agree)."""

from __future__ import annotations

from app.config import Settings


def main() -> None:
    print("| variable | default | meaning |")
    print("|---|---|---|")
    for name, field in Settings.model_fields.items():
        default = field.default if field.default is not None else "(none)"
        if isinstance(default, list):
            default = ",".join(map(str, default)) or "(none)"
        print(f"| `COVRAG_{name.upper()}` | `{default}` | {field.description or ''} |")


if __name__ == "__main__":
    main()
