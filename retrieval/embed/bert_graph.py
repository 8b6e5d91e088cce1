"""An fp32 BERT encoder as an ONNX graph of onnxruntime's fused CPU kernels, built from safetensors.

Why build it: an exported BERT is ~400 small nodes (reshapes, transposes, masks); for a
12-token question their dispatch costs as much as the maths. ``EmbedLayerNormalization``,
``Attention``, ``BiasGelu`` and ``SkipLayerNormalization`` (the ``com.microsoft`` ops that
onnxruntime's transformer optimizer fuses an export into) make it 7 nodes a layer, from the
Hugging Face weights directly: no torch, no export, no file written, and bit-for-bit the fp32
model's maths (cosine 1.0000 to sentence-transformers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

MS = "com.microsoft"


def bert_onnx(model_dir: Path) -> bytes:
    """The serialized graph: inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64,
    right-padded), output ``last_hidden_state`` (float32, batch × tokens × hidden)."""
    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    eps = float(config["layer_norm_eps"])
    inits: list[TensorProto] = []

    def w(name: str, array: np.ndarray | None = None) -> str:
        """Register a weight (``array`` or the checkpoint's ``name``) and return its name."""
        value = weights[name] if array is None else array
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def linear(name: str) -> str:
        """A torch Linear's weight, transposed to MatMul's (in, out)."""
        return w(name + ".T", weights[name].T)

    def dense_add_norm(src: str, residual: str, module: str, out: str) -> list[NodeProto]:
        """BERT's ``*Output`` module (``module`` = its checkpoint prefix): dense, then bias,
        the residual and LayerNorm in one ``SkipLayerNormalization``."""
        return [
            helper.make_node("MatMul", [src, linear(module + "dense.weight")], [out + "_dense"]),
            helper.make_node(
                "SkipLayerNormalization",
                [
                    out + "_dense",
                    residual,
                    w(module + "LayerNorm.weight"),
                    w(module + "LayerNorm.bias"),
                    w(module + "dense.bias"),
                ],
                [out],
                domain=MS,
                epsilon=eps,
            ),
        ]

    nodes = [
        helper.make_node("Cast", [src], [src + "_i32"], to=TensorProto.INT32)
        for src in ("input_ids", "token_type_ids", "attention_mask")
    ]
    nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            [
                "input_ids_i32",
                "token_type_ids_i32",
                w("embeddings.word_embeddings.weight"),
                w("embeddings.position_embeddings.weight"),
                w("embeddings.token_type_embeddings.weight"),
                w("embeddings.LayerNorm.weight"),
                w("embeddings.LayerNorm.bias"),
                "attention_mask_i32",
            ],
            ["h0", "mask_index"],
            domain=MS,
            epsilon=eps,
        )
    )
    x = "h0"
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        att = p + "attention."
        qkv = [att + f"self.{part}" for part in ("query", "key", "value")]
        qkv_weight = w(att + "qkv.T", np.concatenate([weights[q + ".weight"].T for q in qkv], 1))
        qkv_bias = w(att + "qkv.bias", np.concatenate([weights[q + ".bias"] for q in qkv]))
        nodes += [
            helper.make_node(
                "Attention",
                [x, qkv_weight, qkv_bias, "mask_index"],
                [p + "ctx"],
                domain=MS,
                num_heads=int(config["num_attention_heads"]),
            ),
            *dense_add_norm(p + "ctx", x, att + "output.", p + "h1"),
            helper.make_node(
                "MatMul", [p + "h1", linear(p + "intermediate.dense.weight")], [p + "up"]
            ),
            helper.make_node(
                "BiasGelu", [p + "up", w(p + "intermediate.dense.bias")], [p + "act"], domain=MS
            ),
            *dense_add_norm(p + "act", p + "h1", p + "output.", p + "out"),
        ]
        x = p + "out"
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))

    tokens = ["batch", "tokens"]
    graph = helper.make_graph(
        nodes,
        "bert",
        [
            helper.make_tensor_value_info(name, TensorProto.INT64, tokens)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, [*tokens, int(config["hidden_size"])]
            )
        ],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    serialized: bytes = helper.make_model(graph, opset_imports=opsets).SerializeToString()
    return serialized


def bert_session(model_dir: Path, threads: int) -> InferenceSession:
    """An onnxruntime CPU session over ``bert_onnx(model_dir)``, ``threads`` intra-op."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        bert_onnx(model_dir), sess_options=options, providers=["CPUExecutionProvider"]
    )
