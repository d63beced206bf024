"""fastembed_ext.export: what a bundle holds, which folders it reads, what it refuses."""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_factory import PARITY_TEXTS, copy_with_modules, copy_with_pooling

import fastembed_ext
from fastembed_ext import FastembedExtError, ModelLoadError, UnsupportedModelError

from fastembed_ext.linear import FastembedLinear, FusedProjection, route_linear_layers

export_module = importlib.import_module("fastembed_ext.export")

MANIFEST_KEYS = {
    "format_version", "export_revision", "architecture", "dim", "max_seq_length", "pooling", "normalize", "similarity",
    "pad_token", "pad_token_id", "input_names", "torch_version", "transformers_version", "source", "dtype",
    "include_prompt", "head", "truncate_dim", "prompts", "default_prompt_name",
}


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "fastembed_ext.json").read_text(encoding="utf-8"))


def test_bundle_files_and_manifest(distilbert_bundle: Path, distilbert_256k: Path) -> None:
    import torch
    import transformers

    assert sorted(p.name for p in distilbert_bundle.iterdir()) == ["fastembed_ext.json", "model.pt", "tokenizer.json"]
    manifest = _manifest(distilbert_bundle)
    assert set(manifest) == MANIFEST_KEYS
    assert manifest == {
        "format_version": 2,
        "export_revision": export_module.EXPORT_REVISION,
        "architecture": "distilbert",
        "dim": 32,
        "max_seq_length": 250,
        "pooling": "mean",
        "include_prompt": True,
        "head": False,
        "normalize": False,
        "truncate_dim": None,
        "prompts": {},
        "default_prompt_name": None,
        "similarity": "dot",
        "pad_token": "[PAD]",
        "pad_token_id": 0,
        "input_names": ["input_ids", "attention_mask"],
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "source": str(distilbert_256k.resolve()),
        "dtype": "float32",
    }


def test_roberta_manifest(roberta_bundle: Path) -> None:
    manifest = _manifest(roberta_bundle)
    assert (manifest["architecture"], manifest["dim"], manifest["max_seq_length"]) == ("roberta", 32, 128)
    assert (manifest["normalize"], manifest["similarity"]) == (True, "cosine")
    assert (manifest["pad_token"], manifest["pad_token_id"]) == ("<pad>", 1)


def test_tokenizer_json_has_no_truncation_or_padding(distilbert_bundle: Path, roberta_bundle: Path) -> None:
    for bundle in (distilbert_bundle, roberta_bundle):
        saved = json.loads((bundle / "tokenizer.json").read_text(encoding="utf-8"))
        assert saved["truncation"] is None and saved["padding"] is None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(distilbert_bundle / "tokenizer.json"))
    assert len(tok.encode("fox " * 2000).ids) == 2002  # all of it: the engine truncates


def test_model_pt_is_the_backbone(distilbert_bundle: Path, distilbert_256k: Path) -> None:
    """model.pt takes (input_ids, attention_mask) int64 and gives the eager model's token
    embeddings on a padded batch it was not traced on."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tok = Tokenizer.from_file(str(distilbert_bundle / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(250)
    encodings = tok.encode_batch(PARITY_TEXTS)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int64)
    assert ids.shape[1] == 250 and int(mask.sum(1).min()) == 2

    module = torch.jit.load(str(distilbert_bundle / "model.pt"))
    eager = AutoModel.from_pretrained(str(distilbert_256k)).eval()
    with torch.no_grad():
        got = module(ids, mask)
        want = eager(input_ids=ids, attention_mask=mask).last_hidden_state
    assert got.dtype == torch.float32 and tuple(got.shape) == (len(PARITY_TEXTS), 250, 32)
    keep = mask.bool()
    assert float((got[keep] - want[keep]).abs().max()) < 1e-5

    # One short text, unpadded: the few-rows case of every linear layer.
    row = next(i for i in range(len(mask)) if 8 <= int(mask[i].sum()) <= 32)
    length = int(mask[row].sum())
    ids, mask = ids[row : row + 1, :length], mask[row : row + 1, :length]
    with torch.no_grad():
        got = module(ids, mask)
        want = eager(input_ids=ids, attention_mask=mask).last_hidden_state
    assert tuple(got.shape) == (1, length, 32)
    assert float((got - want).abs().max()) < 1e-5


def test_linear_layers_call_the_engine_operator(distilbert_bundle: Path) -> None:
    """Every linear layer of the exported graph is `fastembed::packed_linear` on nn.Linear's weight
    packed at export."""
    import torch

    graph = torch.jit.load(str(distilbert_bundle / "model.pt")).graph
    assert graph.findAllNodes("aten::linear") == [] and graph.findAllNodes("aten::gelu") == []
    assert graph.findAllNodes("fastembed::linear") == []
    nodes = graph.findAllNodes("fastembed::packed_linear")
    assert len(nodes) == 2 * 4  # two layers: q+k+v as one, out, ffn up, ffn down
    weights = [node.inputsAt(1).toIValue() for node in nodes]
    outputs = [node.inputsAt(2).toIValue() for node in nodes]
    assert all(w.dim() == 3 and w.shape[2] == 64 and w.is_contiguous() for w in weights)
    # [in, out] per layer, in ceil(out / 64) panels of 64 columns (zero padded past `out`)
    assert sorted((w.shape[1], out) for w, out in zip(weights, outputs)) == sorted(
        [(32, 3 * 32), (32, 32), (32, 64), (64, 32)] * 2
    )
    assert all(w.shape[0] == (out + 63) // 64 for w, out in zip(weights, outputs))
    # the FFN up-projection of each layer carries its GELU
    assert sorted(str(node.inputsAt(4).toIValue()) for node in nodes) == ["None"] * 6 + ["gelu"] * 2


def test_bert_intermediate_gelu_is_fused(minilm_bundle: Path) -> None:
    import torch

    graph = torch.jit.load(str(minilm_bundle / "model.pt")).graph
    activations = [node.inputsAt(4).toIValue() for node in graph.findAllNodes("fastembed::packed_linear")]
    assert activations.count("gelu") == 6 and graph.findAllNodes("aten::gelu") == []


def test_routing_keeps_values_and_replaces_float_linears_only(distilbert_256k: Path) -> None:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(distilbert_256k)).eval()
    ids = torch.tensor([[1, 2, 3, 4, model.config.vocab_size - 1, 5]])
    with torch.no_grad():
        want = model(input_ids=ids).last_hidden_state
    before = {name: m.weight.clone() for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    assert route_linear_layers(model) == len(before) > 0
    routed = dict(model.named_modules())
    for name, weight in before.items():
        module = routed[name]
        if type(module) is FastembedLinear:
            assert torch.equal(module.weight, weight)
        else:  # a query, key or value projection: its rows of the stacked weight
            fused = module.fused
            start = fused.starts[module.index]
            assert torch.equal(fused.projection.weight[start : start + len(weight)], weight)
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    attention = model.transformer.layer[0].attention
    assert type(attention.fused_query_key_value) is FusedProjection
    assert attention.fused_query_key_value.projection.weight.shape == (3 * 32, 32)
    ffn = model.transformer.layer[0].ffn
    assert ffn.lin1.activation == "gelu" and type(ffn.activation) is torch.nn.Identity
    assert ffn.lin2.activation is None
    with torch.no_grad():
        got = model(input_ids=ids).last_hidden_state
    assert float((got - want).abs().max()) < 1e-4


def test_overwrites_an_existing_bundle(distilbert_256k: Path, distilbert_bundle: Path, tmp_path: Path) -> None:
    dst = shutil.copytree(distilbert_bundle, tmp_path / "bundle")
    (dst / "stale-file").write_text("from an older export")
    assert fastembed_ext.export(distilbert_256k, dst) == dst
    assert sorted(p.name for p in dst.iterdir()) == ["fastembed_ext.json", "model.pt", "tokenizer.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temp dirs left behind


def test_refuses_to_overwrite_other_directories(distilbert_256k: Path, tmp_path: Path) -> None:
    dst = tmp_path / "mine"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me")
    with pytest.raises(FastembedExtError, match="not a fastembed_ext bundle"):
        fastembed_ext.export(distilbert_256k, dst)
    assert (dst / "notes.txt").read_text() == "keep me"


def test_interrupted_export_leaves_nothing(
    distilbert_256k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "_trace_and_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fastembed_ext.export(distilbert_256k, tmp_path / "out" / "bundle")
    assert list((tmp_path / "out").iterdir()) == []


def test_trace_that_disagrees_with_eager_is_refused(
    distilbert_256k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "_TRACE_TOLERANCE", -1.0)  # any difference, even 0, fails
    with pytest.raises(ModelLoadError, match="differs from eager"):
        fastembed_ext.export(distilbert_256k, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_unknown_quantization_is_refused(distilbert_256k: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quantize='int4' is not supported; use None or one of"):
        fastembed_ext.export(distilbert_256k, tmp_path / "bundle", quantize="int4")
    assert not (tmp_path / "bundle").exists()


def test_int8_export_quantizes_linear_layers_but_keeps_ffn_down_projections(
    minilm: Path, tmp_path: Path
) -> None:
    import torch

    bundle = fastembed_ext.export(minilm, tmp_path / "int8", quantize="int8")
    assert json.loads((bundle / "fastembed_ext.json").read_text())["dtype"] == "int8"
    graph = str(torch.jit.load(str(bundle / "model.pt")).inlined_graph)
    # 6 layers x (q, k, v, attention output, FFN up) quantised; the 6 FFN down-projections not.
    assert graph.count("quantized::linear_dynamic") == 30
    assert graph.count("fastembed::packed_linear") == 6 and graph.count("aten::linear") == 0

    int8 = fastembed_ext.Encoder(bundle).encode(PARITY_TEXTS)
    fp32 = fastembed_ext.Encoder(minilm).encode(PARITY_TEXTS)
    cosines = (int8 * fp32).sum(axis=1)  # both unit length
    assert np.abs(int8 - fp32).max() > 1e-4, "int8 vectors equal float32 ones: nothing was quantised"
    assert cosines.mean() > 0.97 and cosines.min() > 0.9, cosines


# --------------------------------------------------------------------------- layouts and settings


def test_st6_layout_reads_max_seq_length_from_the_tokenizer(roberta_st6: Path, tmp_path: Path) -> None:
    sbert = json.loads((roberta_st6 / "sentence_bert_config.json").read_text())
    assert "max_seq_length" not in sbert  # the 6.x layout keeps it in tokenizer_config.json
    modules = json.loads((roberta_st6 / "modules.json").read_text())
    assert modules[0]["type"].endswith("base.modules.transformer.Transformer")
    manifest = _manifest(fastembed_ext.export(roberta_st6, tmp_path / "b"))
    assert (manifest["max_seq_length"], manifest["normalize"], manifest["similarity"]) == (128, True, "cosine")


def test_plain_hf_folder(bert_hf: Path, tmp_path: Path) -> None:
    """Mean pooling, no normalisation, max_seq_length = tokenizer's 512 capped at 128 positions."""
    manifest = _manifest(fastembed_ext.export(bert_hf, tmp_path / "b"))
    assert manifest["architecture"] == "bert"
    assert (manifest["max_seq_length"], manifest["normalize"], manifest["similarity"]) == (128, False, "dot")


def test_do_lower_case_adds_a_lowercase_normalizer(distilbert_256k: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    src = shutil.copytree(distilbert_256k, tmp_path / "lower")
    (src / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 250, "do_lower_case": True}))
    bundle = fastembed_ext.export(src, tmp_path / "b")
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    texts = ["The Quick BROWN Fox", "MiXeD CaSe WoRdS"]
    ours = [e.ids for e in tok.encode_batch(texts)]
    assert ours == [e.ids for e in tok.encode_batch([t.lower() for t in texts])]
    st = SentenceTransformer(str(src), device="cpu")
    features = st.preprocess(texts)
    theirs = [[t for t, m in zip(r, k) if m] for r, k in zip(features["input_ids"].tolist(), features["attention_mask"].tolist())]
    assert ours == theirs


@pytest.mark.parametrize(("name", "expected"), [("dot", "dot"), ("cosine", "cosine")])
def test_similarity_fn_name(roberta: Path, tmp_path: Path, name: str, expected: str) -> None:
    src = shutil.copytree(roberta, tmp_path / "m")
    (src / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": name}))
    manifest = _manifest(fastembed_ext.export(src, tmp_path / "b"))
    assert manifest["normalize"] is True and manifest["similarity"] == expected


def test_unsupported_similarity(roberta: Path, tmp_path: Path) -> None:
    src = shutil.copytree(roberta, tmp_path / "m")
    (src / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "euclidean"}))
    with pytest.raises(UnsupportedModelError, match="similarity_fn_name 'euclidean' is not supported") as info:
        fastembed_ext.export(src, tmp_path / "b")
    assert str(src / "config_sentence_transformers.json") in str(info.value)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("pooling", "error", "what"),
    [
        ({"embedding_dimension": 32, "pooling_mode": "attention"}, UnsupportedModelError,
         "pooling 'attention' is not supported; the modes are cls, mean, max"),
        ({"embedding_dimension": 32, "pooling_mode": ["mean", "latent"]}, UnsupportedModelError, "pooling 'mean+latent'"),
        ({"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": "no"}, ModelLoadError,
         "include_prompt 'no' is not true or false"),
    ],
)
def test_unsupported_pooling(distilbert_256k: Path, tmp_path: Path, pooling: dict, error: type, what: str) -> None:
    src = copy_with_pooling(distilbert_256k, tmp_path / "m", pooling)
    with pytest.raises(error, match=re.escape(what)) as info:
        fastembed_ext.export(src, tmp_path / "b")
    assert str(src / "1_Pooling" / "config.json") in str(info.value)
    assert not (tmp_path / "b").exists()


def test_module_sequences_beyond_dense_and_normalize_are_refused(roberta: Path, tmp_path: Path) -> None:
    modules = json.loads((roberta / "modules.json").read_text())
    after = [*modules, {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}]
    src = copy_with_modules(roberta, tmp_path / "m", after)
    with pytest.raises(UnsupportedModelError, match=r"module sequence \['Transformer', 'Pooling', 'Normalize', 'Dense'\]") as info:
        fastembed_ext.export(src, tmp_path / "b")
    assert str(src / "modules.json") in str(info.value)
    other = [*modules[:2], {"idx": 2, "name": "2", "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}]
    src = copy_with_modules(roberta, tmp_path / "n", other)
    with pytest.raises(UnsupportedModelError, match="'sentence_transformers.models.LayerNorm'"):
        fastembed_ext.export(src, tmp_path / "b")


def test_unsupported_architecture(gpt2_hf: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"model_type\) 'gpt2' is not supported") as info:
        fastembed_ext.export(gpt2_hf, tmp_path / "b")
    assert str(gpt2_hf / "config.json") in str(info.value)


def test_missing_files(distilbert_256k: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        fastembed_ext.export(tmp_path / "absent", tmp_path / "b")
    src = shutil.copytree(distilbert_256k, tmp_path / "m")
    (src / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no such file") as info:
        fastembed_ext.export(src, tmp_path / "b")
    assert str(src / "config.json") in str(info.value)
    (src / "1_Pooling" / "config.json").unlink()
    with pytest.raises(ModelLoadError) as info:
        fastembed_ext.export(src, tmp_path / "b")
    assert str(src / "1_Pooling" / "config.json") in str(info.value)


def test_hub_id_offline(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="'org/some-model' is not a local path and could not be downloaded"):
        fastembed_ext.export("org/some-model", tmp_path / "b")


# --------------------------------------------------------------------------- resolve_bundle


def test_resolve_bundle_returns_bundles_as_they_are(distilbert_bundle: Path) -> None:
    assert export_module.resolve_bundle(distilbert_bundle) == distilbert_bundle.resolve()
    assert export_module.resolve_bundle(str(distilbert_bundle)) == distilbert_bundle.resolve()


def test_resolve_bundle_paths_that_do_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for missing in ("./nope", "~/surely-not-here-4711", str(tmp_path / "nope"), "models/nope"):
        with pytest.raises(ModelLoadError, match="no such file or directory"):
            export_module.resolve_bundle(missing)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="not a directory"):
        export_module.resolve_bundle("file.txt")


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTEMBED_EXT_CACHE", str(tmp_path / "c"))
    assert export_module.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FASTEMBED_EXT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert export_module.cache_dir() == tmp_path / "xdg" / "fastembed_ext"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert export_module.cache_dir() == Path.home() / ".cache" / "fastembed_ext"


def test_cache_key_follows_content(
    distilbert_256k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = shutil.copytree(distilbert_256k, tmp_path / "m")
    key = export_module.cache_key(src)
    assert key.startswith("m-") and export_module.cache_key(src) == key
    (src / "README.md").write_text("a new file")
    assert export_module.cache_key(src) != key
    key = export_module.cache_key(src)
    monkeypatch.setattr(export_module, "EXPORT_REVISION", export_module.EXPORT_REVISION + 1)
    assert export_module.cache_key(src) != key, "a new exporter must not reuse old exports"
    monkeypatch.undo()
    assert np.unique([export_module.cache_key(src), export_module.cache_key(distilbert_256k)]).size == 2
