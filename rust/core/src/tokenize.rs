//! Text → token ids, truncated exactly as sentence-transformers truncates (special tokens
//! included in `max_seq_length`), and padded batches for the backbone.

use std::path::Path;

use tch::Tensor;
use tokenizers::{
    PaddingParams, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    pad_token_id: i64,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and fixes its truncation to `max_seq_length`. Padding is left off:
    /// [`Batch::pad`] pads each batch to its own longest row.
    pub fn load(path: &Path, max_seq_length: usize, pad_token_id: u32) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|err| Error::bundle(path, err))?;
        Self::from_bytes(path, &bytes, max_seq_length, pad_token_id)
    }

    /// As [`Self::load`], from the bytes of `tokenizer.json` read from `path` (named in errors).
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        max_seq_length: usize,
        pad_token_id: u32,
    ) -> Result<Self> {
        let mut inner = Tokenizer::from_bytes(bytes)
            .map_err(|err| Error::bundle(path, format!("not a valid tokenizer.json: {err}")))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|err| {
                Error::bundle(path, format!("cannot truncate at {max_seq_length}: {err}"))
            })?;
        inner.with_padding(None::<PaddingParams>);
        if inner.id_to_token(pad_token_id).is_none() {
            return Err(Error::bundle(
                path,
                format!("pad_token_id {pad_token_id} is not in the vocabulary"),
            ));
        }
        Ok(Self {
            inner,
            pad_token_id: i64::from(pad_token_id),
        })
    }

    /// Token ids of each text, special tokens added, truncated; no padding.
    pub fn encode<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, true)
            .map_err(|err| Error::Tokenize(err.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|encoding| encoding.get_ids().to_vec())
            .collect())
    }

    pub fn pad_token_id(&self) -> i64 {
        self.pad_token_id
    }
}

/// Right-padded `input_ids` and `attention_mask`, both int64 `[rows, longest]`.
pub struct Batch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
}

impl Batch {
    /// Pads `rows` (token ids of each text) to the longest of them.
    pub fn pad(rows: &[&[u32]], pad_token_id: i64) -> Self {
        let longest = rows.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut input_ids = vec![pad_token_id; rows.len() * longest];
        let mut attention_mask = vec![0_i64; rows.len() * longest];
        for (row, ids) in rows.iter().enumerate() {
            let start = row * longest;
            for (slot, &id) in input_ids[start..start + ids.len()]
                .iter_mut()
                .zip(ids.iter())
            {
                *slot = i64::from(id);
            }
            attention_mask[start..start + ids.len()].fill(1);
        }
        let shape = [rows.len() as i64, longest as i64];
        Self {
            input_ids: Tensor::from_slice(&input_ids).view(shape),
            attention_mask: Tensor::from_slice(&attention_mask).view(shape),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pads_right_to_the_longest_row_and_keeps_ids_past_u16() {
        let long: &[u32] = &[101, 70_000, 65_536, 102];
        let short: &[u32] = &[101, 102];
        let batch = Batch::pad(&[long, short], 1);
        assert_eq!(batch.input_ids.size(), [2, 4]);
        let ids = Vec::<i64>::try_from(batch.input_ids.view(-1)).unwrap();
        let mask = Vec::<i64>::try_from(batch.attention_mask.view(-1)).unwrap();
        assert_eq!(ids, [101, 70_000, 65_536, 102, 101, 102, 1, 1]);
        assert_eq!(mask, [1, 1, 1, 1, 1, 1, 0, 0]);
    }
}
