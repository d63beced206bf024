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

/// Per-call choices; `None` means the model's own setting or the engine's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions {
    /// Most texts per forward pass (default: as many as fit `batch_tokens`).
    pub batch_size: Option<usize>,
    /// Most padded tokens (rows × longest row) per forward pass (default [`DEFAULT_BATCH_TOKENS`]).
    pub batch_tokens: Option<usize>,
    pub normalize: Option<bool>,
}

impl EncodeOptions {
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
        let encoder = Self {
            dir: dir.to_owned(),
            manifest,
            tokenizer,
            backbone,
            fingerprint,
        };
        encoder.check_width()?;
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

    fn check_width(&self) -> Result<()> {
        let ids = self.tokenizer.encode(&["fastembed_ext"])?;
        let batch = Batch::pad(&[ids[0].as_slice()], self.tokenizer.pad_token_id());
        let width = tch::no_grad(|| {
            self.backbone
                .token_embeddings(&batch.input_ids, &batch.attention_mask)
        })
        .map_err(|err| Error::bundle(self.dir.join(MODEL_FILE), err))?
        .size()[2];
        if usize::try_from(width).ok() != Some(self.manifest.dim) {
            return Err(Error::bundle(
                self.dir.join(MANIFEST_FILE),
                format!(
                    "says dim {} but model.pt produces vectors of width {width}; re-export the model",
                    self.manifest.dim
                ),
            ));
        }
        Ok(())
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

    /// Token ids each text is run with (special tokens added, truncated at `max_seq_length`).
    pub fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        self.tokenizer.encode(texts)
    }

    /// The most tokens of a text one vector sees: `max_seq_length` less the special tokens.
    pub fn window_tokens(&self) -> usize {
        self.manifest
            .max_seq_length
            .saturating_sub(self.tokenizer.special_tokens())
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
                 max_seq_length {} less its special tokens)",
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
        let (token_ids, truncated) = self.tokenizer.encode_counting(texts)?;
        let embeddings = self.encode_tokens(&token_ids, options)?;
        Ok(Embeddings {
            truncated,
            ..embeddings
        })
    }

    /// Embeds texts already tokenized by [`Self::tokenize`] (a server counts tokens before it
    /// decides which requests share a call, and does not tokenize twice).
    pub fn encode_tokens<T: AsRef<[u32]>>(
        &self,
        token_ids: &[T],
        options: &EncodeOptions,
    ) -> Result<Embeddings> {
        options.check()?;
        let normalize = options.normalize.unwrap_or(self.manifest.normalize);
        let dim = self.manifest.dim;
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
            let pooled = self.embed_batch(&rows, normalize)?;
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

    fn embed_batch(&self, rows: &[&[u32]], normalize: bool) -> Result<Tensor> {
        let batch = Batch::pad(rows, self.tokenizer.pad_token_id());
        tch::no_grad(|| {
            let tokens = self
                .backbone
                .token_embeddings(&batch.input_ids, &batch.attention_mask)?;
            let pooled = pool::masked_mean(&tokens, &batch.attention_mask);
            let pooled = if normalize {
                pool::l2_normalize(&pooled)
            } else {
                pooled
            };
            Ok(pooled.contiguous())
        })
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
