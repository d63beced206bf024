//! Text → token ids, truncated exactly as sentence-transformers truncates (special tokens
//! included in `max_seq_length`), and padded batches for the backbone.

use std::path::Path;
use std::sync::OnceLock;

use tch::Tensor;
use tokenizers::{
    PaddingParams, PostProcessor, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

use crate::error::{Error, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    pad_token_id: i64,
    /// Tokens the post-processor adds to every text ([CLS] and [SEP], <s> and </s>).
    special_tokens: usize,
    /// The same tokenizer without truncation, made on the first call that cuts texts into windows.
    untruncated: OnceLock<Tokenizer>,
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
        let special_tokens = inner
            .get_post_processor()
            .map_or(0, |post| post.added_tokens(false));
        Ok(Self {
            inner,
            pad_token_id: i64::from(pad_token_id),
            special_tokens,
            untruncated: OnceLock::new(),
        })
    }

    /// Token ids of each text, special tokens added, truncated; no padding.
    pub fn encode<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        Ok(self.encode_counting(texts)?.0)
    }

    /// As [`Self::encode`], with the number of texts longer than `max_seq_length`, whose end
    /// was cut off (nothing is truncated silently: callers tell their users).
    pub fn encode_counting<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
    ) -> Result<(Vec<Vec<u32>>, usize)> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, true)
            .map_err(|err| Error::Tokenize(err.to_string()))?;
        // truncation moves the cut-off tokens into `overflowing`
        let truncated = encodings
            .iter()
            .filter(|encoding| !encoding.get_overflowing().is_empty())
            .count();
        let ids = encodings
            .into_iter()
            .map(|encoding| encoding.get_ids().to_vec())
            .collect();
        Ok((ids, truncated))
    }

    /// How many tokens a prompted text begins with that belong to `prompt`: the prompt's own
    /// tokens with the special tokens before them, as sentence-transformers counts them (its
    /// token count less a trailing special token). Pooling leaves them out when the model says so.
    pub fn prompt_length(&self, prompt: &str) -> Result<usize> {
        let encoding = self
            .inner
            .encode_fast(prompt, true)
            .map_err(|err| Error::Tokenize(err.to_string()))?;
        let trailing_special = encoding.get_special_tokens_mask().last() == Some(&1);
        Ok(encoding.get_ids().len() - usize::from(trailing_special))
    }

    /// How many special tokens the tokenizer adds to every text ([CLS] and [SEP], <s> and </s>).
    pub fn special_tokens(&self) -> usize {
        self.special_tokens
    }

    /// Character spans `[start, end)` of windows of at most `window` tokens (special tokens not
    /// counted) over the whole of `text`, each starting `window - overlap` tokens after the one
    /// before. Spans start and end on token boundaries of this model's own tokenizer, so every
    /// token of the text is in at least one window; an empty text has none.
    pub fn windows(
        &self,
        text: &str,
        window: usize,
        overlap: usize,
    ) -> Result<Vec<(usize, usize)>> {
        if window == 0 || overlap >= window {
            return Err(Error::InvalidArgument(format!(
                "a window of {window} tokens with an overlap of {overlap}: the window must be at \
                 least 1 token and the overlap smaller than the window"
            )));
        }
        let untruncated = self.untruncated.get_or_init(|| {
            let mut plain = self.inner.clone();
            plain
                .with_truncation(None)
                .expect("turning truncation off cannot fail");
            plain
        });
        let encoding = untruncated
            .encode_char_offsets(text, false)
            .map_err(|err| Error::Tokenize(err.to_string()))?;
        let offsets = encoding.get_offsets();
        let mut spans = Vec::new();
        let mut start = 0;
        while start < offsets.len() {
            let end = (start + window).min(offsets.len());
            spans.push((offsets[start].0, offsets[end - 1].1));
            if end == offsets.len() {
                break;
            }
            start += window - overlap;
        }
        Ok(spans)
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
