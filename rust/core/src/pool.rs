//! Pooling on tch tensors, written to match sentence-transformers' arithmetic step for step.

use tch::{Kind, Tensor};

/// Mean of the token embeddings over the positions where `attention_mask` is 1.
pub fn masked_mean(token_embeddings: &Tensor, attention_mask: &Tensor) -> Tensor {
    let mask = attention_mask.unsqueeze(-1).expand_as(token_embeddings).to_kind(token_embeddings.kind());
    let summed = (token_embeddings * &mask).sum_dim_intlist(1, false, Kind::Float);
    // Same floor as sentence-transformers, so an all-padding row gives zeros instead of NaN.
    let counts = mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9);
    summed / counts
}

/// Rows scaled to unit L2 norm, as `torch.nn.functional.normalize(x, p=2, dim=1)`.
pub fn l2_normalize(rows: &Tensor) -> Tensor {
    let norms = rows.norm_scalaropt_dim(2, 1, true).clamp_min(1e-12).expand_as(rows);
    rows / norms
}
