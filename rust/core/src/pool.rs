//! Pooling on tch tensors, written to match sentence-transformers' arithmetic step for step.

use tch::{Kind, Tensor};

/// Mean of the token embeddings over the positions where `attention_mask` is 1.
pub fn masked_mean(token_embeddings: &Tensor, attention_mask: &Tensor) -> Tensor {
    let mask = attention_mask
        .unsqueeze(-1)
        .expand_as(token_embeddings)
        .to_kind(token_embeddings.kind());
    let summed = (token_embeddings * &mask).sum_dim_intlist(1, false, Kind::Float);
    // Same floor as sentence-transformers, so an all-padding row gives zeros instead of NaN.
    let counts = mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9);
    summed / counts
}

/// Rows scaled to unit L2 norm, as `torch.nn.functional.normalize(x, p=2, dim=1)`.
pub fn l2_normalize(rows: &Tensor) -> Tensor {
    let norms = rows
        .norm_scalaropt_dim(2, 1, true)
        .clamp_min(1e-12)
        .expand_as(rows);
    rows / norms
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mean_ignores_masked_positions() {
        // One row, three tokens of width 2; the last token is padding and must not count.
        let tokens = Tensor::from_slice(&[1.0_f32, 2.0, 3.0, 4.0, 100.0, 100.0]).view([1, 3, 2]);
        let mask = Tensor::from_slice(&[1_i64, 1, 0]).view([1, 3]);
        let pooled = Vec::<f32>::try_from(masked_mean(&tokens, &mask).view(-1)).unwrap();
        assert_eq!(pooled, [2.0, 3.0]);
    }

    #[test]
    fn all_padding_row_gives_zeros_not_nan() {
        let tokens = Tensor::from_slice(&[5.0_f32, 5.0]).view([1, 1, 2]);
        let mask = Tensor::from_slice(&[0_i64]).view([1, 1]);
        let pooled = Vec::<f32>::try_from(masked_mean(&tokens, &mask).view(-1)).unwrap();
        assert_eq!(pooled, [0.0, 0.0]);
    }

    #[test]
    fn normalize_gives_unit_rows_and_leaves_zero_rows_at_zero() {
        let rows = Tensor::from_slice(&[3.0_f32, 4.0, 0.0, 0.0]).view([2, 2]);
        let unit = Vec::<f32>::try_from(l2_normalize(&rows).view(-1)).unwrap();
        assert_eq!(unit, [0.6, 0.8, 0.0, 0.0]);
    }
}
