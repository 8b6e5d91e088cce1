"""``helm lint`` and ``helm template`` for machines without the Helm CLI, over the Helm SDK.

Uses PyPI ``helm-python-sdk`` (Helm's Go SDK v4 through ctypes: no helm binary, no cluster, no
network). Run it with the deploy venv that ``scripts/ci-deploy.sh`` creates:

    .venv-deploy/bin/python scripts/helm_sdk.py lint helm/covrag [-f VALUES]... [--strict]
    .venv-deploy/bin/python scripts/helm_sdk.py template helm/covrag [-f VALUES]... \
        [--name covrag] [--namespace covrag] [-o rendered.yaml]

``-f`` files are merged left to right over the chart's values.yaml, as with the Helm CLI.
``template`` validates the merged values against values.schema.json first, then renders every
template into one multi-document YAML stream (NOTES.txt is printed to stderr with
``--show-notes``). Exit status: 0 on success, 1 when linting, validation or rendering fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (maps merge; anything else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _user_values(files: list[Path]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in files:
        parsed = helm.values_from_yaml(path.read_text(encoding="utf-8")) or {}
        values = _merge(values, parsed)
    return values


def cmd_lint(args: argparse.Namespace) -> int:
    values = _user_values(args.values)
    report = helm.lint(
        args.chart,
        values or None,
        strict=args.strict,
        namespace=args.namespace,
        kube_version=args.kube_version,
    )
    severities = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    worst = 0
    for message in report.get("messages") or []:
        severity = int(message.get("severity", 0))
        worst = max(worst, severity)
        label = severities.get(severity, str(severity))
        print(f"[{label}] {message.get('path', '')}: {message.get('error', '')}")
    errors = report.get("errors") or []
    for error in errors:
        print(f"[ERROR] {error}")
    failed = bool(errors) or worst >= 3 or (args.strict and worst >= 2)
    linted = report.get("total_charts_linted", 0)
    print(f"{linted} chart(s) linted, {'FAILED' if failed else 'no failures'}")
    return 1 if failed else 0


def cmd_template(args: argparse.Namespace) -> int:
    values = _user_values(args.values)
    with helm.Chart.load(args.chart) as chart:
        try:
            # Explicit, so a bad type fails here with the schema's message whatever the
            # render path does.
            chart.validate_schema(chart.merge_values(values))
            manifests = chart.render(
                values, name=args.name, namespace=args.namespace, is_install=True
            )
        except helm.HelmError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    documents: list[str] = []
    for path in sorted(manifests):
        text = manifests[path]
        if path.endswith("NOTES.txt"):
            if args.show_notes:
                print(text, file=sys.stderr)
            continue
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in text.split("\n---"):
            body = doc.strip("\n")
            if body.strip() and any(
                line.strip() and not line.lstrip().startswith("#") for line in body.splitlines()
            ):
                documents.append(f"# Source: {path}\n{body.lstrip('-').lstrip(chr(10))}\n")
    stream = "---\n" + "---\n".join(documents)
    if args.output:
        args.output.write_text(stream, encoding="utf-8")
        print(f"rendered {len(documents)} manifests to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(stream)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("chart", type=Path, help="chart directory")
        p.add_argument("-f", "--values", type=Path, action="append", default=[], help="values file")
        p.add_argument("--namespace", default="covrag")

    lint = sub.add_parser("lint", help="helm lint")
    common(lint)
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    lint.add_argument("--kube-version", default=None, help="e.g. v1.30.0")
    lint.set_defaults(func=cmd_lint)

    template = sub.add_parser("template", help="helm template")
    common(template)
    template.add_argument("--name", default="covrag", help="release name")
    template.add_argument("-o", "--output", type=Path, default=None, help="write here")
    template.add_argument("--show-notes", action="store_true", help="print NOTES.txt")
    template.set_defaults(func=cmd_template)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
