//! Pooling on tch tensors, written to match sentence-transformers' arithmetic step for step
//! (its `Pooling` module on right-padded batches, which are the only ones this engine makes).

use std::fmt;
use std::str::FromStr;

use tch::{Kind, Tensor};

/// How token embeddings become one vector: sentence-transformers' `pooling_mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token the mask keeps (`[CLS]`/`<s>`; the first text token when a prompt is excluded).
    Cls,
    /// Mean over the tokens the mask keeps.
    Mean,
    /// Per-dimension maximum over the tokens the mask keeps.
    Max,
    /// The masked sum divided by the square root of the token count.
    MeanSqrtLenTokens,
    /// Mean weighted by position (1, 2, 3, …), as SGPT trained it.
    WeightedMean,
    /// The last token the mask keeps.
    LastToken,
}

impl PoolingMode {
    pub const ALL: [Self; 6] = [
        Self::Cls,
        Self::Mean,
        Self::Max,
        Self::MeanSqrtLenTokens,
        Self::WeightedMean,
        Self::LastToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cls => "cls",
            Self::Mean => "mean",
            Self::Max => "max",
            Self::MeanSqrtLenTokens => "mean_sqrt_len_tokens",
            Self::WeightedMean => "weightedmean",
            Self::LastToken => "lasttoken",
        }
    }
}

impl fmt::Display for PoolingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PoolingMode {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|mode| mode.as_str()).collect();
                format!("pooling {name:?} (known: {})", known.join(", "))
            })
    }
}

/// The vectors of `modes`, concatenated in that order (sentence-transformers' order), from token
/// embeddings `[rows, tokens, dim]` and the 0/1 mask of the tokens to pool `[rows, tokens]`.
pub fn pool(modes: &[PoolingMode], token_embeddings: &Tensor, mask: &Tensor) -> Tensor {
    let parts: Vec<Tensor> = modes
        .iter()
        .map(|mode| match mode {
            PoolingMode::Cls => first_kept(token_embeddings, mask),
            PoolingMode::Mean => masked_mean(token_embeddings, mask),
            PoolingMode::Max => masked_max(token_embeddings, mask),
            PoolingMode::MeanSqrtLenTokens => masked_mean_sqrt_len(token_embeddings, mask),
            PoolingMode::WeightedMean => weighted_mean(token_embeddings, mask),
            PoolingMode::LastToken => last_kept(token_embeddings, mask),
        })
        .collect();
    match parts.as_slice() {
        [one] => one.shallow_clone(),
        _ => Tensor::cat(&parts, -1),
    }
}

fn float_mask(token_embeddings: &Tensor, mask: &Tensor) -> Tensor {
    mask.unsqueeze(-1)
        .expand_as(token_embeddings)
        .to_kind(token_embeddings.kind())
}

fn masked_sum_and_count(token_embeddings: &Tensor, mask: &Tensor) -> (Tensor, Tensor) {
    let mask = float_mask(token_embeddings, mask);
    let summed = (token_embeddings * &mask).sum_dim_intlist(1, false, Kind::Float);
    // Same floor as sentence-transformers, so an all-padding row gives zeros instead of NaN.
    let counts = mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9);
    (summed, counts)
}

/// Mean of the token embeddings over the positions where `attention_mask` is 1.
pub fn masked_mean(token_embeddings: &Tensor, attention_mask: &Tensor) -> Tensor {
    let (summed, counts) = masked_sum_and_count(token_embeddings, attention_mask);
    summed / counts
}

fn masked_mean_sqrt_len(token_embeddings: &Tensor, mask: &Tensor) -> Tensor {
    let (summed, counts) = masked_sum_and_count(token_embeddings, mask);
    summed / counts.sqrt()
}

fn masked_max(token_embeddings: &Tensor, mask: &Tensor) -> Tensor {
    let dropped = float_mask(token_embeddings, mask).eq(0.0);
    token_embeddings
        .masked_fill(&dropped, f64::NEG_INFINITY)
        .amax(1, false)
}

fn gather_rows(token_embeddings: &Tensor, positions: &Tensor) -> Tensor {
    let dim = token_embeddings.size()[2];
    let index = positions
        .unsqueeze(-1)
        .unsqueeze(1)
        .expand([-1, 1, dim], false);
    token_embeddings.gather(1, &index, false).squeeze_dim(1)
}

fn first_kept(token_embeddings: &Tensor, mask: &Tensor) -> Tensor {
    let first = mask.to_kind(Kind::Int).argmax(1, false);
    gather_rows(token_embeddings, &first)
}

fn last_kept(token_embeddings: &Tensor, mask: &Tensor) -> Tensor {
    let tokens = mask.size()[1];
    let (values, from_end) = mask.to_kind(Kind::Int).flip([1]).max_dim(1, false);
    let from_end = from_end.where_self(&values.ne(0), &Tensor::from(tokens - 1));
    let last = (from_end.neg() + (tokens - 1)).to_kind(Kind::Int64);
    gather_rows(
        &(token_embeddings * float_mask(token_embeddings, mask)),
        &last,
    )
}

fn weighted_mean(token_embeddings: &Tensor, mask: &Tensor) -> Tensor {
    let tokens = mask.size()[1];
    // Right padding: every row's positions count 1, 2, 3, … from its first token.
    let weights = Tensor::arange_start(1, tokens + 1, (Kind::Float, token_embeddings.device()))
        .view([1, -1, 1]);
    let weighted = mask.unsqueeze(-1).to_kind(Kind::Float) * weights;
    let summed = (token_embeddings * &weighted).sum_dim_intlist(1, false, Kind::Float);
    summed
        / weighted
            .sum_dim_intlist(1, false, Kind::Float)
            .clamp_min(1e-9)
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

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.view(-1)).unwrap()
    }

    /// One row of three tokens of width 2 (the last one padding), and a fully kept row.
    fn batch() -> (Tensor, Tensor) {
        let tokens = Tensor::from_slice(&[
            1.0_f32, 2.0, 3.0, -4.0, 100.0, 100.0, //
            5.0, 1.0, -1.0, 7.0, 2.0, 2.0,
        ])
        .view([2, 3, 2]);
        let mask = Tensor::from_slice(&[1_i64, 1, 0, 1, 1, 1]).view([2, 3]);
        (tokens, mask)
    }

    #[test]
    fn mean_ignores_masked_positions() {
        let tokens = Tensor::from_slice(&[1.0_f32, 2.0, 3.0, 4.0, 100.0, 100.0]).view([1, 3, 2]);
        let mask = Tensor::from_slice(&[1_i64, 1, 0]).view([1, 3]);
        assert_eq!(values(&masked_mean(&tokens, &mask)), [2.0, 3.0]);
    }

    #[test]
    fn every_mode_on_a_padded_batch() {
        let (tokens, mask) = batch();
        let run = |mode| values(&pool(&[mode], &tokens, &mask));
        assert_eq!(run(PoolingMode::Cls), [1.0, 2.0, 5.0, 1.0]);
        assert_eq!(run(PoolingMode::LastToken), [3.0, -4.0, 2.0, 2.0]);
        assert_eq!(run(PoolingMode::Max), [3.0, 2.0, 5.0, 7.0]);
        assert_eq!(run(PoolingMode::Mean), [2.0, -1.0, 2.0, 10.0 / 3.0]);
        let sqrt2 = 2.0_f32.sqrt();
        let sqrt3 = 3.0_f32.sqrt();
        assert_eq!(
            run(PoolingMode::MeanSqrtLenTokens),
            [4.0 / sqrt2, -2.0 / sqrt2, 6.0 / sqrt3, 10.0 / sqrt3]
        );
        // weights 1, 2 (, 3): (1*1 + 2*3) / 3, (1*2 - 2*4) / 3; (5 - 2 + 6) / 6, (1 + 14 + 6) / 6
        assert_eq!(run(PoolingMode::WeightedMean), [7.0 / 3.0, -2.0, 1.5, 3.5]);
        assert_eq!(
            values(&pool(&[PoolingMode::Cls, PoolingMode::Max], &tokens, &mask)),
            [1.0, 2.0, 3.0, 2.0, 5.0, 1.0, 5.0, 7.0]
        );
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for mode in PoolingMode::ALL {
            assert_eq!(mode.as_str().parse::<PoolingMode>().unwrap(), mode);
        }
        let err = "attention".parse::<PoolingMode>().unwrap_err();
        assert!(
            err.contains("\"attention\"") && err.contains("lasttoken"),
            "{err}"
        );
    }

    #[test]
    fn all_padding_row_gives_zeros_not_nan() {
        let tokens = Tensor::from_slice(&[5.0_f32, 5.0]).view([1, 1, 2]);
        let mask = Tensor::from_slice(&[0_i64]).view([1, 1]);
        assert_eq!(values(&masked_mean(&tokens, &mask)), [0.0, 0.0]);
    }

    #[test]
    fn normalize_gives_unit_rows_and_leaves_zero_rows_at_zero() {
        let rows = Tensor::from_slice(&[3.0_f32, 4.0, 0.0, 0.0]).view([2, 2]);
        assert_eq!(values(&l2_normalize(&rows)), [0.6, 0.8, 0.0, 0.0]);
    }
}
