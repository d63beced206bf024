//! A bundle's content fingerprint: one BLAKE3 hash over the three files the engine loads.
//!
//! BLAKE3 rather than SHA-256 because every backend that loads a pinned bundle hashes it: at about
//! 5 GB/s on one core it adds some 20 ms to all-MiniLM-L6-v2's first load and 0.3 s to
//! RoBERTa-large's, where SHA-256 (1.2 GB/s here) added 75 ms and 1.2 s.
//!
//! Loading a bundle runs its TorchScript, so whoever pins a name to a bundle (the PostgreSQL
//! registry, a model server) pins it to this value, and [`crate::Encoder::load_pinned`] refuses
//! a bundle whose bytes no longer give it.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::MANIFEST_FILE;

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const MODEL_FILE: &str = "model.pt";

/// The files a fingerprint covers, in the order they are hashed.
pub const FINGERPRINTED_FILES: [&str; 3] = [MANIFEST_FILE, TOKENIZER_FILE, MODEL_FILE];

const PREFIX: &str = "blake3:";

/// Feeds files into one digest. Each file contributes its name, its length and its bytes, so
/// moving bytes from one file to the next changes the result.
pub(crate) struct Hasher(blake3::Hasher);

impl Hasher {
    pub(crate) fn new() -> Self {
        Self(blake3::Hasher::new())
    }

    fn header(&mut self, name: &str, len: u64) {
        self.0.update(name.as_bytes());
        self.0.update(&[0]);
        self.0.update(&len.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, name: &str, bytes: &[u8]) {
        self.header(name, bytes.len() as u64);
        self.0.update(bytes);
    }

    fn file(&mut self, name: &str, path: &Path) -> Result<()> {
        let mut file = open_regular(path)?;
        self.open_file(name, &mut file, path)
    }

    /// Hashes an opened file from its start to its end (`path` names it in errors).
    pub(crate) fn open_file(&mut self, name: &str, file: &mut File, path: &Path) -> Result<()> {
        let len = file
            .metadata()
            .map_err(|err| Error::bundle(path, err))?
            .len();
        self.header(name, len);
        let mut buffer = vec![0_u8; 1 << 20];
        let mut read = 0_u64;
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(|err| Error::bundle(path, err))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            if read > len {
                break; // growing while being read: reported below
            }
            self.0.update(&buffer[..n]);
        }
        if read != len {
            return Err(Error::bundle(path, "changed while it was being read"));
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> String {
        format!("{PREFIX}{}", self.0.finalize().to_hex())
    }
}

/// Opens `path`, which must be a regular file (not a device, a FIFO or a directory: reading
/// those could block or never end).
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|err| Error::bundle(path, err))?;
    let meta = file.metadata().map_err(|err| Error::bundle(path, err))?;
    if !meta.is_file() {
        return Err(Error::bundle(path, "not a regular file"));
    }
    Ok(file)
}

/// Reads a whole regular file of at most `limit` bytes.
pub(crate) fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| Error::bundle(path, err))?;
    if bytes.len() as u64 > limit {
        return Err(Error::bundle(path, format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// The fingerprint of the bundle at `dir` as its files are now: `blake3:` and 64 hex digits.
pub fn fingerprint(dir: &Path) -> Result<String> {
    let mut hasher = Hasher::new();
    for name in FINGERPRINTED_FILES {
        hasher.file(name, &dir.join(name))?;
    }
    Ok(hasher.finish())
}

/// Whether `text` has the form of a fingerprint (it may still name no bundle).
pub fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix(PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bundle(files: [&[u8]; 3]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in FINGERPRINTED_FILES.iter().zip(files) {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn streaming_and_in_memory_agree_and_the_form_is_checked() {
        let files: [&[u8]; 3] = [b"{}", b"tok", &[7_u8; 3_000_000]];
        let dir = bundle(files);
        let mut in_memory = Hasher::new();
        for (name, bytes) in FINGERPRINTED_FILES.iter().zip(files) {
            in_memory.bytes(name, bytes);
        }
        let streamed = fingerprint(dir.path()).unwrap();
        assert_eq!(streamed, in_memory.finish());
        assert!(is_fingerprint(&streamed));
        assert!(!is_fingerprint("sha256:XYZ"));
        assert!(!is_fingerprint(&streamed[1..]));
    }

    #[test]
    fn bytes_moved_between_files_change_it() {
        let a = fingerprint(bundle([b"ab", b"c", b"d"]).path()).unwrap();
        let b = fingerprint(bundle([b"a", b"bc", b"d"]).path()).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = bundle([b"{}", b"t", b"m"]);
        std::fs::remove_file(dir.path().join(MODEL_FILE)).unwrap();
        let err = fingerprint(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.pt"), "{err}");
    }
}
