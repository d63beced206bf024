"""What each supported model type needs, in one table: adding a model type means adding a row.

A row names what the exporter reads from the Hugging Face ``config.json`` and what it rewrites in
the loaded ``transformers`` module before tracing:

* `hidden_size_key`: the config key of the token embeddings' width;
* `positions_after_padding`: position ids start after the padding index (RoBERTa's scheme), so
  ``max_position_embeddings - pad_token_id - 1`` positions are usable;
* `query_key_value`: the attention's q/k/v projections (attribute names), fused into one
  ``fastembed::packed_linear`` call (`linear.py`); None where the model has them as one layer;
* `linear_then_activation`: (feed-forward linear, its activation) attribute pairs; an exact GELU
  runs inside the operator; None where the activation does not follow one linear layer;
* `keep_float`: a regular expression of the linear layers int8 export leaves in float32 (the
  feed-forward down-projections, whose inputs carry outliers; see `quantize.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    model_type: str
    hidden_size_key: str
    positions_after_padding: bool
    query_key_value: tuple[str, str, str] | None
    linear_then_activation: tuple[str, str] | None
    keep_float: re.Pattern[str]


_BERT_DOWN = re.compile(r"layer\.\d+\.output\.dense$")

ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in (
        Architecture("bert", "hidden_size", False, ("query", "key", "value"), ("dense", "intermediate_act_fn"), _BERT_DOWN),
        Architecture("distilbert", "dim", False, ("q_lin", "k_lin", "v_lin"), ("lin1", "activation"),
                     re.compile(r"ffn\.lin2$")),
        Architecture("roberta", "hidden_size", True, ("query", "key", "value"), ("dense", "intermediate_act_fn"), _BERT_DOWN),
        Architecture("xlm-roberta", "hidden_size", True, ("query", "key", "value"), ("dense", "intermediate_act_fn"),
                     _BERT_DOWN),
        Architecture("mpnet", "hidden_size", True, ("q", "k", "v"), ("dense", "intermediate_act_fn"), _BERT_DOWN),
        # rotary positions; q/k/v already one linear layer (Wqkv); a gated GELU (GeGLU) feed-forward
        Architecture("modernbert", "hidden_size", False, None, None, re.compile(r"layers\.\d+\.mlp\.Wo$")),
    )
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)
