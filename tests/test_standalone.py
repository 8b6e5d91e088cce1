"""The repository stands alone: a plain clone has no ``shared/`` folder beside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: How code would reach a folder beside the checkout (this file names them, so it is skipped).
PATTERNS = ("../shared", 'parent / "shared"', 'parents[3] / "shared"')


def test_nothing_reads_a_shared_folder_beside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    me = Path(__file__).relative_to(REPO).as_posix()
    offenders = []
    for name in tracked:
        path = REPO / name
        if name == me or not path.is_file() or path.suffix in {".png", ".gguf"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{name}: {p}" for p in PATTERNS if p in text]
    assert offenders == []


def test_the_qa_sets_ship_in_the_repository() -> None:
    qa = REPO / "data" / "qa"
    for name in ("dev", "unanswerable_dev", "calib", "train", "test"):
        assert (qa / f"{name}.jsonl").stat().st_size > 1000, name
    assert "CC BY-SA 4.0" in (qa / "README.md").read_text()
