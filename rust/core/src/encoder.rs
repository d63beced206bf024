use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tch::Tensor;

use crate::batching::{self, DEFAULT_BATCH_TOKENS};
use crate::error::{Error, Result};
use crate::fingerprint::{self, Hasher, MODEL_FILE, TOKENIZER_FILE};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::model::Backbone;
use crate::pool;
use crate::tokenize::{Batch, TextTokenizer};

/// The text put before every text of a call, as sentence-transformers' `prompt` / `prompt_name`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Prompt<'a> {
    /// The model's `default_prompt_name`, if it has one; otherwise none.
    #[default]
    Default,
    /// One of the model's prompts, by name.
    Named(&'a str),
    /// This text (an empty one: no prompt, not even the default).
    Text(&'a str),
}

/// Per-call choices; `None` means the model's own setting or the engine's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions<'a> {
    /// Most texts per forward pass (default: as many as fit `batch_tokens`).
    pub batch_size: Option<usize>,
    /// Most padded tokens (rows × longest row) per forward pass (default [`DEFAULT_BATCH_TOKENS`]).
    pub batch_tokens: Option<usize>,
    /// The model's Normalize step (`None`: as the model says).
    pub normalize: Option<bool>,
    /// Keep the first `truncate_dim` dimensions, after the Normalize step (`None`: the model's
    /// `truncate_dim`, if any): Matryoshka truncation.
    pub truncate_dim: Option<usize>,
    /// L2-normalise the vectors last, after any truncation (sentence-transformers'
    /// `normalize_embeddings`).
    pub normalize_embeddings: bool,
    pub prompt: Prompt<'a>,
}

impl EncodeOptions<'_> {
    fn check(&self) -> Result<()> {
        if self.batch_size == Some(0) {
            return Err(Error::InvalidArgument(
                "batch_size must be at least 1".to_owned(),
            ));
        }
        if self.batch_tokens == Some(0) {
            return Err(Error::InvalidArgument(
                "batch_tokens must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Row-major `rows × dim` float32 vectors, in the order the texts were given.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub data: Vec<f32>,
    pub rows: usize,
    pub dim: usize,
    /// Texts longer than `max_seq_length`, embedded from their beginning only (0 from
    /// [`Encoder::encode_tokens`], whose caller tokenized and knows).
    pub truncated: usize,
}

impl Embeddings {
    pub fn row(&self, index: usize) -> &[f32] {
        &self.data[index * self.dim..(index + 1) * self.dim]
    }
}

/// A loaded bundle. Immutable after loading, so one `Encoder` can serve many threads at once.
pub struct Encoder {
    dir: PathBuf,
    manifest: Manifest,
    tokenizer: TextTokenizer,
    backbone: Backbone,
    /// Known from the start when loaded pinned; otherwise computed on first request.
    fingerprint: OnceLock<String>,
    /// Width of the vectors before any truncation (pooled, through the head).
    full_dim: usize,
    /// See [`Self::window_tokens`].
    window_tokens: usize,
}

/// After this many padded tokens, the memory the forward passes freed is handed back to the
/// system. glibc keeps freed blocks in its arenas, and batches of varying shapes leave them too
/// fragmented to reuse: measured on all-MiniLM-L6-v2, 30 calls of 1,000 mixed-length texts grew
/// the process from 424 to 506 MiB and kept growing; releasing every 16,384 tokens it stays at
/// 277–281 MiB (single-text calls: flat at 289 MiB over 3,000 calls). A release costs 1–30 ms,
/// against about 3 s of computing per 16,384 tokens on this machine.
const RELEASE_EVERY_TOKENS: usize = 16_384;

impl Encoder {
    /// Loads the bundle at `dir` and checks, with one tiny forward pass, that the backbone's
    /// output width is the `dim` the manifest promises.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = check_dir(dir.as_ref())?;
        let manifest = Manifest::load(dir)?;
        let tokenizer = TextTokenizer::load(
            &dir.join(TOKENIZER_FILE),
            manifest.max_seq_length,
            manifest.pad_token_id,
        )?;
        let backbone = Backbone::load(&dir.join(MODEL_FILE))?;
        Self::assemble(dir, manifest, tokenizer, backbone, OnceLock::new())
    }

    /// Loads the bundle at `dir` only if its files give `fingerprint` (see [`fingerprint`]);
    /// fails with [`Error::Changed`] otherwise. The manifest and tokenizer are parsed from the
    /// bytes that were hashed; `model.pt` is hashed through an open handle and loaded through that
    /// same handle, so a file renamed into its place meanwhile is never the one that runs.
    pub fn load_pinned(dir: impl AsRef<Path>, fingerprint: &str) -> Result<Self> {
        let dir = check_dir(dir.as_ref())?;
        if !fingerprint::is_fingerprint(fingerprint) {
            return Err(Error::InvalidArgument(format!(
                "{fingerprint:?} is not a bundle fingerprint (blake3: and 64 hex digits)"
            )));
        }
        let mut hasher = Hasher::new();
        let manifest_bytes =
            fingerprint::read_regular(&dir.join(MANIFEST_FILE), MANIFEST_MAX_BYTES)?;
        hasher.bytes(MANIFEST_FILE, &manifest_bytes);
        let tokenizer_bytes =
            fingerprint::read_regular(&dir.join(TOKENIZER_FILE), TOKENIZER_MAX_BYTES)?;
        hasher.bytes(TOKENIZER_FILE, &tokenizer_bytes);
        let model_path = dir.join(MODEL_FILE);
        let mut model = fingerprint::open_regular(&model_path)?;
        let before = FileState::of(&model, &model_path)?;
        hasher.open_file(MODEL_FILE, &mut model, &model_path)?;
        let actual = hasher.finish();
        if actual != fingerprint {
            return Err(Error::Changed {
                path: dir.to_owned(),
                expected: fingerprint.to_owned(),
                actual,
            });
        }
        let manifest = Manifest::from_bytes(&dir.join(MANIFEST_FILE), &manifest_bytes)?;
        let tokenizer = TextTokenizer::from_bytes(
            &dir.join(TOKENIZER_FILE),
            &tokenizer_bytes,
            manifest.max_seq_length,
            manifest.pad_token_id,
        )?;
        let (backbone, model) = load_open_model(&model_path, model)?;
        // Written in place between the hash and the load (a rename cannot reach the open file):
        // any write moves its change time.
        if FileState::of(&model, &model_path)? != before {
            return Err(Error::bundle(
                &model_path,
                "changed while it was being loaded; load it again",
            ));
        }
        Self::assemble(dir, manifest, tokenizer, backbone, OnceLock::from(actual))
    }

    fn assemble(
        dir: &Path,
        manifest: Manifest,
        tokenizer: TextTokenizer,
        backbone: Backbone,
        fingerprint: OnceLock<String>,
    ) -> Result<Self> {
        let mut encoder = Self {
            dir: dir.to_owned(),
            manifest,
            tokenizer,
            backbone,
            fingerprint,
            full_dim: 0,
            window_tokens: 0,
        };
        encoder.full_dim = encoder.check_width()?;
        // What the default prompt takes, with the special tokens, is not the text's to use.
        let reserved = match encoder.prompt_text(Prompt::Default)? {
            Some(prompt) => encoder.tokenizer.encode(&[prompt])?[0].len(),
            None => encoder.tokenizer.special_tokens(),
        };
        encoder.window_tokens = encoder.manifest.max_seq_length.saturating_sub(reserved);
        Ok(encoder)
    }

    /// The bundle's content fingerprint: the pinned one, or (for [`Self::load`]) that of its
    /// files as they are when first asked.
    pub fn fingerprint(&self) -> Result<&str> {
        if let Some(known) = self.fingerprint.get() {
            return Ok(known);
        }
        let computed = fingerprint::fingerprint(&self.dir)?;
        Ok(self.fingerprint.get_or_init(|| computed))
    }

    /// Runs one tiny text through the whole path and checks the width the manifest promises;
    /// returns the width before truncation.
    fn check_width(&self) -> Result<usize> {
        let ids = self.tokenizer.encode(&["fastembed_ext"])?;
        let batch = Batch::pad(&[ids[0].as_slice()], self.tokenizer.pad_token_id());
        let full = tch::no_grad(|| self.pooled(&batch, 0))
            .map_err(|err| Error::bundle(self.dir.join(MODEL_FILE), err))?
            .size()[1];
        let full = usize::try_from(full).unwrap_or(0);
        let promised = self.manifest.truncate_dim.unwrap_or(full);
        if promised > full || promised != self.manifest.dim {
            return Err(Error::bundle(
                self.dir.join(MANIFEST_FILE),
                format!(
                    "says dim {}{} but model.pt produces vectors of width {full}; re-export the model",
                    self.manifest.dim,
                    self.manifest
                        .truncate_dim
                        .map(|dim| format!(" (truncate_dim {dim})"))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(full)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    /// Width of the vectors before any Matryoshka truncation.
    pub fn full_dim(&self) -> usize {
        self.full_dim
    }

    /// The width of the vectors `options` ask for.
    pub fn output_dim(&self, options: &EncodeOptions) -> Result<usize> {
        match options.truncate_dim.or(self.manifest.truncate_dim) {
            None => Ok(self.full_dim),
            Some(dim) if (1..=self.full_dim).contains(&dim) => Ok(dim),
            Some(dim) => Err(Error::InvalidArgument(format!(
                "truncate_dim {dim} is outside 1..={} (this model's vectors have {} dimensions)",
                self.full_dim, self.full_dim
            ))),
        }
    }

    /// The prompt text `prompt` stands for (`None`: no prompt).
    pub fn prompt_text<'a>(&'a self, prompt: Prompt<'a>) -> Result<Option<&'a str>> {
        let text = match prompt {
            Prompt::Default => match &self.manifest.default_prompt_name {
                Some(name) => self.manifest.prompt(name)?,
                None => "",
            },
            Prompt::Named(name) => self.manifest.prompt(name)?,
            Prompt::Text(text) => text,
        };
        Ok(Some(text).filter(|text| !text.is_empty()))
    }

    /// Token ids each text is run with (special tokens added, truncated at `max_seq_length`).
    pub fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        self.tokenizer.encode(texts)
    }

    /// The most tokens of a text one vector sees: `max_seq_length` less the special tokens and
    /// the model's default prompt (which `encode` puts before every text unless told otherwise).
    pub fn window_tokens(&self) -> usize {
        self.window_tokens
    }

    /// Character spans of the windows that cut `text` into pieces this model embeds whole:
    /// `window` tokens each (default and maximum: [`Self::window_tokens`]), overlapping by
    /// `overlap` tokens. See [`crate::tokenize::TextTokenizer::windows`].
    pub fn windows(
        &self,
        text: &str,
        window: Option<usize>,
        overlap: usize,
    ) -> Result<Vec<(usize, usize)>> {
        let most = self.window_tokens();
        let window = window.unwrap_or(most);
        if window > most {
            return Err(Error::InvalidArgument(format!(
                "a window of {window} tokens is longer than this model embeds whole ({most} tokens: \
                 max_seq_length {} less its special tokens and default prompt)",
                self.manifest.max_seq_length
            )));
        }
        self.tokenizer.windows(text, window, overlap)
    }

    /// Embeds `texts`. Batches are planned by token count under a token budget
    /// ([`batching::plan`]); the mask keeps each vector independent of its batch companions.
    pub fn encode<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Embeddings> {
        options.check()?; // before the tokenizer's work
        self.output_dim(options)?;
        let (token_ids, truncated, skip) = self.tokenize_prompted(texts, options.prompt)?;
        let embeddings = self.encode_tokens_from(&token_ids, skip, options)?;
        Ok(Embeddings {
            truncated,
            ..embeddings
        })
    }

    /// Token ids of `texts` with `prompt` put before each (sentence-transformers prepends the
    /// prompt to the text, then tokenizes and truncates the whole), how many were truncated,
    /// and from which token pooling starts (past the prompt's tokens when the model leaves them
    /// out of pooling; else 0).
    pub fn tokenize_prompted<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        prompt: Prompt,
    ) -> Result<(Vec<Vec<u32>>, usize, usize)> {
        match self.prompt_text(prompt)? {
            None => {
                let (ids, truncated) = self.tokenizer.encode_counting(texts)?;
                Ok((ids, truncated, 0))
            }
            Some(prompt) => {
                let prompted: Vec<String> = texts
                    .iter()
                    .map(|text| format!("{prompt}{}", text.as_ref()))
                    .collect();
                let (ids, truncated) = self.tokenizer.encode_counting(&prompted)?;
                let skip = if self.manifest.include_prompt {
                    0
                } else {
                    self.tokenizer.prompt_length(prompt)?
                };
                Ok((ids, truncated, skip))
            }
        }
    }

    /// Embeds texts already tokenized by [`Self::tokenize`] (a server counts tokens before it
    /// decides which requests share a call, and does not tokenize twice).
    /// Their prompt, if any, is part of the token ids; `options.prompt` is not applied.
    pub fn encode_tokens<T: AsRef<[u32]>>(
        &self,
        token_ids: &[T],
        options: &EncodeOptions,
    ) -> Result<Embeddings> {
        self.encode_tokens_from(token_ids, 0, options)
    }

    /// As [`Self::encode_tokens`], pooling each row from its token `skip` on (the `skip` that
    /// [`Self::tokenize_prompted`] gives).
    pub fn encode_tokens_from<T: AsRef<[u32]>>(
        &self,
        token_ids: &[T],
        skip: usize,
        options: &EncodeOptions,
    ) -> Result<Embeddings> {
        options.check()?;
        let dim = self.output_dim(options)?;
        let lengths: Vec<usize> = token_ids.iter().map(|ids| ids.as_ref().len()).collect();
        let batches = batching::plan(
            &lengths,
            options.batch_size,
            options.batch_tokens.unwrap_or(DEFAULT_BATCH_TOKENS),
        );

        let mut data = vec![0.0_f32; token_ids.len() * dim];
        let mut pooled_rows = Vec::new();
        let mut padded = 0;
        for indices in &batches {
            let rows: Vec<&[u32]> = indices
                .iter()
                .map(|&index| token_ids[index].as_ref())
                .collect();
            padded += rows.len() * rows.iter().map(|row| row.len()).max().unwrap_or(0);
            let pooled = self.embed_batch(&rows, skip, dim, options)?;
            pooled_rows.resize(indices.len() * dim, 0.0);
            pooled.f_copy_data(&mut pooled_rows, indices.len() * dim)?;
            for (&index, vector) in indices.iter().zip(pooled_rows.chunks_exact(dim)) {
                data[index * dim..(index + 1) * dim].copy_from_slice(vector);
            }
        }
        if TOKENS_SINCE_RELEASE.fetch_add(padded, Ordering::Relaxed) + padded
            >= RELEASE_EVERY_TOKENS
        {
            release_memory();
        }
        Ok(Embeddings {
            data,
            rows: token_ids.len(),
            dim,
            truncated: 0,
        })
    }

    fn embed_batch(
        &self,
        rows: &[&[u32]],
        skip: usize,
        dim: usize,
        options: &EncodeOptions,
    ) -> Result<Tensor> {
        let batch = Batch::pad(rows, self.tokenizer.pad_token_id());
        tch::no_grad(|| {
            // sentence-transformers' order: pooling, Dense, Normalize, truncation, normalize_embeddings
            let mut vectors = self.pooled(&batch, skip)?;
            if options.normalize.unwrap_or(self.manifest.normalize) {
                vectors = pool::l2_normalize(&vectors);
            }
            if dim < self.full_dim {
                vectors = vectors.narrow(1, 0, i64::try_from(dim).unwrap_or(i64::MAX));
            }
            if options.normalize_embeddings {
                vectors = pool::l2_normalize(&vectors);
            }
            Ok(vectors.contiguous())
        })
    }

    /// Pooled vectors of `batch` (through the head, if any), pooling from token `skip` on.
    fn pooled(&self, batch: &Batch, skip: usize) -> Result<Tensor> {
        let tokens = self
            .backbone
            .token_embeddings(&batch.input_ids, &batch.attention_mask)?;
        let mask = if skip == 0 {
            batch.attention_mask.shallow_clone()
        } else {
            let mask = batch.attention_mask.copy();
            let width = mask.size()[1];
            let skip = i64::try_from(skip).unwrap_or(i64::MAX).min(width);
            let _ = mask.narrow(1, 0, skip).fill_(0);
            mask
        };
        let pooled = pool::pool(&self.manifest.pooling, &tokens, &mask);
        if self.manifest.head {
            self.backbone.head(&pooled)
        } else {
            Ok(pooled)
        }
    }
}

fn check_dir(dir: &Path) -> Result<&Path> {
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::bundle(
            dir,
            "not a directory (expected a fastembed_ext model bundle)",
        ))
    }
}

/// Loads `model.pt` from an already opened (and checked) file. On Linux libtorch opens it again
/// through /proc/self/fd, which is the same file whatever happened to its path since, and reads it
/// as fast as from its path; elsewhere the bytes are read into memory first.
fn load_open_model(path: &Path, mut file: std::fs::File) -> Result<(Backbone, std::fs::File)> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let handle = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if handle.exists() {
            return Ok((Backbone::load_named(&handle, path)?, file));
        }
    }
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut file).map_err(|err| Error::bundle(path, err))?;
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|err| Error::bundle(path, err))?;
    Ok((Backbone::from_bytes(path, &bytes)?, file))
}

// A manifest is a few hundred bytes and a tokenizer.json some megabytes; these only stop a
// mistaken path from reading without end.
const MANIFEST_MAX_BYTES: u64 = 1 << 20;
const TOKENIZER_MAX_BYTES: u64 = 1 << 30;

/// What changes when a file is written: its size, modification and change times, and identity.
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileState {
    fn of(file: &std::fs::File, path: &Path) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().map_err(|err| Error::bundle(path, err))?;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// Padded tokens computed, by every encoder of the process, since freed memory was last handed
/// back: the allocator's arenas are the process's, not an encoder's.
static TOKENS_SINCE_RELEASE: AtomicUsize = AtomicUsize::new(0);

/// Padded tokens computed since [`release_memory`] last ran (a server releases early when idle).
pub fn tokens_since_release() -> usize {
    TOKENS_SINCE_RELEASE.load(Ordering::Relaxed)
}

/// Hands the heap's free memory back to the system (glibc's `malloc_trim`; nothing elsewhere).
pub fn release_memory() {
    TOKENS_SINCE_RELEASE.store(0, Ordering::Relaxed);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
