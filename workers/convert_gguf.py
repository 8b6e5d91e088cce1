"""Convert the SmolLM2-135M-Instruct Q4_1 GGUF into a Hugging Face bf16 folder vLLM can serve.

Standalone on purpose: it runs by file path under the vLLM venv's python (which has torch,
transformers, gguf and accelerate), not under the app's venv (which has no torch). So it imports
only the standard library and those packages, never covrag modules.

Why convert at all: vLLM's GGUF support needs CUDA kernels, so on CPU it cannot serve the GGUF.
Why this recipe: a GGUF-loaded model remembers its quantization config and refuses to
`save_pretrained` ("quantized with GGUF and is not serializable"), so the dequantized weights are
copied into a fresh model built from the same config, minus `quantization_config`.

The result is written to a temporary folder next to --out and renamed into place at the end, so a
half-finished conversion never looks complete.

Usage: python convert_gguf.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out DIR
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


def convert(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize `gguf_path` and save a bf16 model + tokenizer folder at `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = gguf_path.resolve()
    out_dir = out_dir.resolve()
    if (out_dir / "config.json").exists():
        print(f"already converted: {out_dir}")
        return out_dir

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.bfloat16,
    )
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings (lm_head == embed_tokens) may show up as "missing"; anything else is a bug.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    fresh.generation_config = loaded.generation_config
    del loaded

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # mkdtemp (and safetensors' atomic write) leave 0700/0600; make the folder world-readable.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out_dir.exists():  # a leftover without config.json: not a finished conversion
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True, help="input .gguf file")
    parser.add_argument("--out", type=Path, required=True, help="output Hugging Face folder")
    args = parser.parse_args(argv)
    if not args.gguf.is_file():
        parser.error(f"no such file: {args.gguf}")
    start = time.monotonic()
    out = convert(args.gguf, args.out)
    print(f"converted {args.gguf.name} -> {out} in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
