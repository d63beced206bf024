"""The names of a bundle's files (the Rust core uses the same: rust/core/src/fingerprint.rs and
manifest.rs). A module of its own because a PostgreSQL backend needs them without the exporter."""

MANIFEST_FILE = "fastembed_ext.json"
MODEL_FILE = "model.pt"
TOKENIZER_FILE = "tokenizer.json"
