"""The ONNX Runtime side of the benchmark: the same checkpoint exported to ONNX, run the way
fastembed-style libraries run it.

* Export: ``torch.onnx.export`` (TorchScript-based exporter, opset 17) of the Hugging Face
  backbone with dynamic batch and sequence axes, inputs ``input_ids`` and ``attention_mask``,
  output the token embeddings. The wrapper builds the additive 4-D attention mask itself and
  calls the embeddings and encoder stack directly, because transformers 5's mask helpers do not
  trace with dynamic shapes (traced through them, a graph is only right at the traced length).
* Run: ONNX Runtime CPU, graph optimisation level ALL, ``intra_op_num_threads`` = threads;
  tokenisation with the checkpoint's Hugging Face fast tokenizer (truncation at the model's
  max_seq_length, padding to the batch's longest); texts sorted by length as
  sentence-transformers sorts them, batches of 32; masked mean pooling and L2 normalisation
  (when the model has a Normalize module) in numpy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def st_settings(st_path: Path) -> tuple[int, bool]:
    """(max_seq_length, normalize) from a sentence-transformers folder."""
    max_len = json.loads((st_path / "sentence_bert_config.json").read_text())["max_seq_length"]
    modules = json.loads((st_path / "modules.json").read_text())
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    return int(max_len), normalize


def export_onnx(st_path: Path, dst: Path) -> Path:
    """Export the checkpoint's backbone to `dst` (skipped when it exists)."""
    if dst.exists():
        return dst
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(st_path), attn_implementation="eager").eval()

    class Backbone(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m
            self.body = m.encoder if hasattr(m, "encoder") else m.transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.m.embeddings(input_ids=input_ids)
            ext = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            out = self.body(hidden, attention_mask=ext)
            return out[0] if isinstance(out, tuple) else out.last_hidden_state  # MPNet's encoder: a tuple

    ids = torch.full((2, 12), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            Backbone(model), (ids, mask), str(tmp), dynamo=False, opset_version=17,
            input_names=["input_ids", "attention_mask"], output_names=["token_embeddings"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "attention_mask": {0: "batch", 1: "seq"},
                "token_embeddings": {0: "batch", 1: "seq"},
            },
        )
    tmp.rename(dst)
    return dst


class OrtEncoder:
    def __init__(self, st_path: Path, onnx_path: Path, threads: int) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.max_seq_length, self.normalize = st_settings(st_path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(st_path))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")  # as sentence-transformers sorts
        out: np.ndarray | None = None
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True,
                max_length=self.max_seq_length, return_tensors="np",
            )
            ids = enc["input_ids"].astype(np.int64, copy=False)
            mask = enc["attention_mask"].astype(np.int64, copy=False)
            (tok,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
            m = mask[:, :, None].astype(np.float32)
            vec = (tok * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            if self.normalize:
                vec /= np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
            if out is None:
                out = np.empty((len(texts), vec.shape[1]), dtype=np.float32)
            out[idx] = vec
        assert out is not None
        return out
