#![allow(clippy::unwrap_used)]
//! Integration tests over a real bundle: the MiniLM bundle `make test` exports and names in
//! FASTEMBED_EXT_TEST_BUNDLE. Its absence is a failure, not a skip.

use std::fs;
use std::path::{Path, PathBuf};

use fastembed_core::{EncodeOptions, Encoder, Error, Prompt, Similarity, MANIFEST_FILE};

fn bundle() -> PathBuf {
    let dir = std::env::var_os("FASTEMBED_EXT_TEST_BUNDLE")
        .expect("FASTEMBED_EXT_TEST_BUNDLE must name a MiniLM bundle (make test-rust exports one)");
    PathBuf::from(dir)
}

/// A copy of the test bundle that a test may damage.
fn copy_of_bundle() -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for name in ["model.pt", "tokenizer.json", MANIFEST_FILE] {
        fs::copy(bundle().join(name), copy.path().join(name)).unwrap();
    }
    copy
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    fs::write(path, manifest.to_string()).unwrap();
}

fn load_error(dir: &Path) -> Error {
    match Encoder::load(dir) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(err) => err,
    }
}

#[test]
fn encodes_unit_vectors_of_the_manifest_width() {
    let encoder = Encoder::load(bundle()).unwrap();
    assert_eq!(encoder.dim(), 384);
    assert_eq!(encoder.manifest().similarity, Similarity::Cosine);
    let texts = ["", "a", "The quick brown fox jumps over the lazy dog."];
    let embeddings = encoder.encode(&texts, &EncodeOptions::default()).unwrap();
    assert_eq!((embeddings.rows, embeddings.dim), (3, 384));
    for row in 0..3 {
        let norm: f32 = embeddings
            .row(row)
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {row} has norm {norm}");
    }
    let raw = encoder
        .encode(
            &texts,
            &EncodeOptions {
                normalize: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    let norm: f32 = raw.row(2).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "normalize=false still gave a unit vector"
    );
}

#[test]
fn a_vector_does_not_depend_on_its_batch() {
    let encoder = Encoder::load(bundle()).unwrap();
    let long = "padding makes this row much longer than the others ".repeat(20);
    let texts = ["short text", long.as_str(), "another one", "x"];
    let together = encoder.encode(&texts, &EncodeOptions::default()).unwrap();
    for (index, text) in texts.iter().enumerate() {
        let alone = encoder.encode(&[*text], &EncodeOptions::default()).unwrap();
        let diff = alone
            .row(0)
            .iter()
            .zip(together.row(index))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "texts[{index}] differs by {diff} when batched");
    }
    let one_by_one = encoder
        .encode(
            &texts,
            &EncodeOptions {
                batch_size: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    let diff = one_by_one
        .data
        .iter()
        .zip(&together.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-5, "batch_size=1 differs by {diff}");
}

#[test]
fn truncates_at_max_seq_length_special_tokens_included() {
    let encoder = Encoder::load(bundle()).unwrap();
    let ids = encoder.tokenize(&["word ".repeat(1000)]).unwrap();
    assert_eq!(ids[0].len(), 256);
    assert_eq!(
        (ids[0][0], ids[0][255]),
        (101, 102),
        "[CLS] … [SEP] must survive truncation"
    );
}

#[test]
fn counts_the_texts_it_truncates() {
    let encoder = Encoder::load(bundle()).unwrap();
    let long = "word ".repeat(400);
    let texts = [long.as_str(), "short", long.as_str(), &"word ".repeat(254)];
    let embeddings = encoder.encode(&texts, &EncodeOptions::default()).unwrap();
    assert_eq!(
        embeddings.truncated, 2,
        "254 words and [CLS] [SEP] fit exactly"
    );
}

#[test]
fn windows_cover_the_text_in_overlapping_token_windows() {
    let encoder = Encoder::load(bundle()).unwrap();
    assert_eq!(encoder.window_tokens(), 254);
    let text: String = (0..300)
        .map(|i| format!("Sentence {i} is here. "))
        .collect();
    let spans = encoder.windows(&text, Some(100), 20).unwrap();
    let chars: Vec<char> = text.chars().collect();
    let mut covered = vec![false; chars.len()];
    for (index, &(start, end)) in spans.iter().enumerate() {
        let piece: String = chars[start..end].iter().collect();
        let ids = encoder.tokenize(&[piece.as_str()]).unwrap();
        assert!(
            ids[0].len() <= 102,
            "window {index} has {} tokens",
            ids[0].len()
        );
        covered[start..end].iter_mut().for_each(|c| *c = true);
        if index > 0 {
            assert!(
                start < spans[index - 1].1,
                "window {index} does not overlap the one before"
            );
        }
    }
    assert!(chars
        .iter()
        .zip(&covered)
        .all(|(c, &k)| k || c.is_whitespace()));
    assert_eq!(spans.last().unwrap().1, text.trim_end().chars().count());
    assert!(encoder.windows("", None, 0).unwrap().is_empty());
    // the default window is all the model sees; longer, or an overlap as long, is refused
    assert_eq!(
        encoder.windows(&text, None, 0).unwrap()[0],
        encoder.windows(&text, Some(254), 0).unwrap()[0]
    );
    assert!(matches!(
        encoder.windows(&text, Some(255), 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        encoder.windows(&text, Some(10), 10),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn empty_input_gives_no_rows_and_zero_batch_size_is_refused() {
    let encoder = Encoder::load(bundle()).unwrap();
    let none: [&str; 0] = [];
    let embeddings = encoder.encode(&none, &EncodeOptions::default()).unwrap();
    assert_eq!((embeddings.rows, embeddings.data.len()), (0, 0));
    let err = encoder
        .encode(
            &["a"],
            &EncodeOptions {
                batch_size: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "batch_size must be at least 1");
}

#[test]
fn a_manifest_that_disagrees_with_the_model_width_is_refused() {
    let copy = copy_of_bundle();
    edit_manifest(copy.path(), |manifest| manifest["dim"] = 768.into());
    let err = load_error(copy.path());
    assert!(matches!(err, Error::Bundle { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(MANIFEST_FILE)
            && message.contains("says dim 768 but model.pt produces vectors of width 384"),
        "{message}"
    );
}

#[test]
fn missing_and_corrupt_files_are_named() {
    let copy = copy_of_bundle();
    fs::remove_file(copy.path().join("model.pt")).unwrap();
    let message = load_error(copy.path()).to_string();
    assert!(message.contains("model.pt: missing"), "{message}");

    let copy = copy_of_bundle();
    fs::write(copy.path().join("tokenizer.json"), "{ not json").unwrap();
    let message = load_error(copy.path()).to_string();
    assert!(
        message.contains("tokenizer.json: not a valid tokenizer.json"),
        "{message}"
    );

    let copy = copy_of_bundle();
    fs::write(copy.path().join("model.pt"), b"not a zip archive").unwrap();
    let message = load_error(copy.path()).to_string();
    assert!(
        message.contains("model.pt: not a loadable TorchScript module"),
        "{message}"
    );
}

#[test]
fn unsupported_manifests_say_what_is_unsupported() {
    let copy = copy_of_bundle();
    edit_manifest(copy.path(), |manifest| {
        manifest["pooling"] = "attention".into()
    });
    let err = load_error(copy.path());
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("pooling \"attention\" (known: cls, mean, max"),
        "{err}"
    );

    // an older engine refuses a newer bundle, naming both versions
    let copy = copy_of_bundle();
    edit_manifest(copy.path(), |manifest| {
        manifest["format_version"] = 99.into();
        manifest["pooling"] = serde_json::json!({"a layout": "this engine cannot read"});
    });
    let err = load_error(copy.path());
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message
            .contains("bundle format_version 99 (this fastembed_ext reads format_version 1 to 2")
            && message.contains("upgrade fastembed_ext"),
        "{message}"
    );
}

#[test]
fn pooling_modes_truncation_and_prompts_follow_the_manifest() {
    let encoder = Encoder::load(bundle()).unwrap();
    let texts = [
        "first text",
        "a somewhat longer second text, with more tokens",
    ];
    let plain = encoder.encode(&texts, &EncodeOptions::default()).unwrap();

    // Matryoshka: the first dimensions, renormalised only when asked
    let options = EncodeOptions {
        truncate_dim: Some(64),
        ..EncodeOptions::default()
    };
    let cut = encoder.encode(&texts, &options).unwrap();
    assert_eq!((cut.rows, cut.dim), (2, 64));
    assert_eq!(cut.row(1), &plain.row(1)[..64]);
    let options = EncodeOptions {
        truncate_dim: Some(64),
        normalize_embeddings: true,
        ..EncodeOptions::default()
    };
    let unit = encoder.encode(&texts, &options).unwrap();
    let norm: f32 = unit.row(0).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-6, "{norm}");
    let options = EncodeOptions {
        truncate_dim: Some(encoder.full_dim() + 1),
        ..EncodeOptions::default()
    };
    let err = encoder.encode(&texts, &options).unwrap_err().to_string();
    assert!(err.contains("truncate_dim 385 is outside 1..=384"), "{err}");

    // a prompt is text before the text
    let options = EncodeOptions {
        prompt: Prompt::Text("query: "),
        ..EncodeOptions::default()
    };
    let prompted = encoder.encode(&texts, &options).unwrap();
    let joined = encoder
        .encode(&["query: first text"], &EncodeOptions::default())
        .unwrap();
    assert_eq!(prompted.row(0), joined.row(0));
    let options = EncodeOptions {
        prompt: Prompt::Named("query"),
        ..EncodeOptions::default()
    };
    let err = encoder.encode(&texts, &options).unwrap_err().to_string();
    assert!(
        err.contains("prompt name \"query\" is not one of this model's prompts (it has none)"),
        "{err}"
    );

    // another pooling mode, read from the manifest
    let copy = copy_of_bundle();
    edit_manifest(copy.path(), |manifest| {
        manifest["format_version"] = 2.into();
        manifest["pooling"] = "cls+max".into();
        manifest["dim"] = 768.into();
    });
    let both = Encoder::load(copy.path()).unwrap();
    let pooled = both
        .encode(
            &texts,
            &EncodeOptions {
                normalize: Some(false),
                ..EncodeOptions::default()
            },
        )
        .unwrap();
    assert_eq!(pooled.dim, 768);
    assert_ne!(&pooled.row(0)[..384], &pooled.row(0)[384..]);
}

#[test]
fn encoder_is_shared_across_threads() {
    fn assert_sync<T: Send + Sync>() {}
    assert_sync::<Encoder>();
    let encoder = Encoder::load(bundle()).unwrap();
    let texts: Vec<String> = (0..16)
        .map(|i| format!("sentence number {i} about something"))
        .collect();
    let serial = encoder.encode(&texts, &EncodeOptions::default()).unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| encoder.encode(&texts, &EncodeOptions::default()).unwrap()))
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap().data, serial.data);
        }
    });
}

#[test]
fn a_pinned_load_gives_the_same_vectors_and_refuses_a_changed_bundle() {
    let copy = copy_of_bundle();
    let unpinned = Encoder::load(copy.path()).unwrap();
    let pinned_to = unpinned.fingerprint().unwrap().to_owned();
    assert_eq!(pinned_to, fastembed_core::fingerprint(copy.path()).unwrap());

    let pinned = Encoder::load_pinned(copy.path(), &pinned_to).unwrap();
    assert_eq!(pinned.fingerprint().unwrap(), pinned_to);
    let texts = ["pinned and unpinned agree", "to the last bit"];
    assert_eq!(
        pinned
            .encode(&texts, &EncodeOptions::default())
            .unwrap()
            .data,
        unpinned
            .encode(&texts, &EncodeOptions::default())
            .unwrap()
            .data
    );

    // One byte of the tokenizer changed (a space added): same bundle shape, other content.
    let tokenizer = copy.path().join("tokenizer.json");
    let mut bytes = fs::read(&tokenizer).unwrap();
    bytes.push(b' ');
    fs::write(&tokenizer, bytes).unwrap();
    match Encoder::load_pinned(copy.path(), &pinned_to) {
        Err(Error::Changed {
            expected, actual, ..
        }) => {
            assert_eq!(expected, pinned_to);
            assert_ne!(actual, pinned_to);
        }
        Err(other) => panic!("expected Error::Changed, got {other}"),
        Ok(_) => panic!("a changed bundle loaded pinned to its old fingerprint"),
    }
    // Asked for again, an unpinned encoder reports what it was computed from the first time.
    assert_eq!(unpinned.fingerprint().unwrap(), pinned_to);
    assert!(matches!(
        Encoder::load_pinned(copy.path(), "blake3:nothex"),
        Err(Error::InvalidArgument(_))
    ));
}
