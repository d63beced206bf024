//! The HTTP side: routes, request validation, response formats, listeners and shutdown.
//!
//! - `POST /embed`: text-embeddings-inference's request (`{"inputs": str | [str], "normalize",
//!   "prompt_name"}`)
//!   plus `model` or `fingerprint`. It answers `[[f32]]` as JSON, or with `Accept:
//!   text/x-pgvector` one pgvector literal per line (what PostgreSQL backends ask for: they pass
//!   the text on unparsed), or with `Accept: application/octet-stream` raw little-endian float32.
//! - `POST /v1/embeddings`: OpenAI's request and answer (`encoding_format` float or base64).
//! - `GET /health`, `GET /models`, `GET /metrics`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State as Shared};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use fastembed_core::{EncodeOptions, Prompt};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};

use crate::batcher::{Call, Job};
use crate::config::Config;
use crate::error::{ApiError, ServerError};
use crate::metrics::Metrics;
use crate::models::{fingerprints, Model, Registry};

pub struct State {
    config: Config,
    registry: Registry,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
}

impl State {
    pub fn new(config: Config, registry: Registry, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config,
            registry,
            metrics,
        }
    }
}

type AppState = Arc<State>;

fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/embed", post(embed))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/health", get(health))
        .route("/models", get(list_models))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

// ------------------------------------------------------------------------------------------------
// requests

/// What both embedding endpoints ask of a model, validated.
struct Request {
    texts: Vec<String>,
    normalize: Option<bool>,
    model: Option<String>,
    fingerprint: Option<String>,
    /// One of the model's prompts (text-embeddings-inference's `prompt_name`); with none, the
    /// model's default prompt applies, as in `Encoder.encode`.
    prompt_name: Option<String>,
    /// OpenAI's `dimensions`: the first this many dimensions (Matryoshka), of unit length when
    /// the model's vectors are.
    dimensions: Option<usize>,
}

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty request body: send a JSON object"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
        Err(err) => Err(ApiError::bad_request(format!("the request body is not valid JSON: {err}"))),
    }
}

fn texts(field: &str, value: Option<&Value>, config: &Config) -> Result<Vec<String>, ApiError> {
    let items = match value {
        None => return Err(ApiError::validation(format!("missing {field:?}: a string or a list of strings"))),
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                match item {
                    Value::String(text) => texts.push(text.clone()),
                    other => {
                        return Err(ApiError::validation(format!(
                            "{field}[{index}] is {}, expected a string",
                            kind(other)
                        )))
                    }
                }
            }
            texts
        }
        Some(other) => {
            return Err(ApiError::validation(format!(
                "{field} is {}, expected a string or a list of strings",
                kind(other)
            )))
        }
    };
    if items.is_empty() {
        return Err(ApiError::validation(format!("{field} is empty")));
    }
    if items.len() > config.max_inputs {
        return Err(ApiError::too_large(format!(
            "{} texts in one request; at most {} (send several requests)",
            items.len(),
            config.max_inputs
        )));
    }
    if let Some((index, text)) = items.iter().enumerate().find(|(_, t)| t.chars().count() > config.max_input_chars) {
        return Err(ApiError::too_large(format!(
            "{field}[{index}] has {} characters; at most {}",
            text.chars().count(),
            config.max_input_chars
        )));
    }
    Ok(items)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn optional_str(map: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::validation(format!("{key} is {}, expected a string", kind(other)))),
    }
}

fn optional_bool(map: &serde_json::Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::validation(format!("{key} is {}, expected true or false", kind(other)))),
    }
}

/// Waits for the model to embed `request`'s texts: tokenizes them (counting tokens for the
/// batcher), queues them, and returns the model and `rows × dim` vectors.
async fn compute(state: &State, request: Request) -> Result<(Arc<Model>, Vec<f32>, usize), ApiError> {
    let model = state
        .registry
        .get(request.model.as_deref(), request.fingerprint.as_deref())
        .await?;
    // the model's own width asks for nothing; any other goes through the engine's check
    let truncate_dim = request.dimensions.filter(|&d| d != model.encoder.dim());
    let options = EncodeOptions {
        truncate_dim,
        ..EncodeOptions::default()
    };
    if model.encoder.output_dim(&options).is_err() {
        return Err(ApiError::validation(format!(
            "dimensions {} is not supported: model {:?} makes vectors of at most {} dimensions",
            truncate_dim.unwrap_or_default(),
            model.name,
            model.encoder.full_dim()
        )));
    }
    let n = request.texts.len() as u64;
    let queued = state.metrics.queued_texts.fetch_add(n, Ordering::Relaxed) + n;
    if queued > state.config.max_queued_texts as u64 {
        state.metrics.queued_texts.fetch_sub(n, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("{} texts are waiting already; try again shortly", state.config.max_queued_texts),
        ));
    }
    let texts = request.texts;
    let prompt_name = request.prompt_name;
    let tokenize = move |encoder: &fastembed_core::Encoder| {
        let prompt = prompt_name.as_deref().map_or(Prompt::Default, Prompt::Named);
        encoder.tokenize_prompted(&texts, prompt).map(|(ids, _, skip)| (ids, skip))
    };
    // A few texts are tokenized here at once; many on the blocking pool, not to hold a worker.
    let tokenized = if n <= 64 {
        Ok(tokenize(&model.encoder))
    } else {
        let encoder = model.encoder.clone();
        tokio::task::spawn_blocking(move || tokenize(&encoder)).await
    };
    let (tokens, skip) = match tokenized {
        Ok(Ok(tokens)) => tokens,
        Ok(Err(err)) => {
            state.metrics.queued_texts.fetch_sub(n, Ordering::Relaxed);
            return Err(ApiError::validation(err.to_string()));
        }
        Err(err) => {
            state.metrics.queued_texts.fetch_sub(n, Ordering::Relaxed);
            return Err(ApiError::internal(err.to_string()));
        }
    };
    let token_count: usize = tokens.iter().map(Vec::len).sum();
    let (reply, answer) = oneshot::channel();
    let job = Job {
        tokens,
        call: Call {
            normalize: request.normalize,
            skip,
            truncate_dim,
            normalize_embeddings: truncate_dim.is_some() && model.encoder.manifest().normalize,
        },
        reply,
        queued_at: Instant::now(),
    };
    if model.queue.send(job).is_err() {
        state.metrics.queued_texts.fetch_sub(n, Ordering::Relaxed);
        return Err(ApiError::internal("the model's queue is closed (the server is stopping)"));
    }
    let vectors = answer
        .await
        .map_err(|_| ApiError::internal("the model stopped before answering"))?
        .map_err(|err| ApiError::internal(format!("the model failed: {err}")))?;
    state.metrics.texts.fetch_add(n, Ordering::Relaxed);
    state.metrics.tokens.fetch_add(token_count as u64, Ordering::Relaxed);
    Ok((model, vectors, token_count))
}

/// Holds one of the server's request slots; a request that finds none gets 429.
fn slot(state: &State) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!("{} requests are being served already; try again shortly", state.config.max_concurrent_requests),
        )
    })
}

// ------------------------------------------------------------------------------------------------
// handlers

async fn embed(Shared(state): Shared<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let response = match embed_inner(&state, &headers, &body).await {
        Ok(response) => response,
        Err(err) => tei_error(err),
    };
    state.metrics.answered("/embed", response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn embed_inner(state: &State, headers: &HeaderMap, body: &Bytes) -> Result<Response, ApiError> {
    let _slot = slot(state)?;
    let _in_flight = InFlight::new(&state.metrics);
    let map = parse_body(body)?;
    let request = Request {
        texts: texts("inputs", map.get("inputs"), &state.config)?,
        normalize: optional_bool(&map, "normalize")?,
        model: optional_str(&map, "model")?,
        fingerprint: optional_str(&map, "fingerprint")?,
        prompt_name: optional_str(&map, "prompt_name")?,
        dimensions: None,
    };
    let (model, vectors, _) = compute(state, request).await?;
    let dim = model.encoder.dim();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (content_type, body) = if accept.contains("text/x-pgvector") {
        ("text/x-pgvector", Body::from(pgvector_lines(&vectors, dim)))
    } else if accept.contains("application/octet-stream") {
        let mut bytes = Vec::with_capacity(vectors.len() * 4);
        for x in &vectors {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        ("application/octet-stream", Body::from(bytes))
    } else {
        let rows: Vec<&[f32]> = vectors.chunks_exact(dim).collect();
        ("application/json", Body::from(serde_json::to_vec(&rows).unwrap_or_default()))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-fastembed-model", header_value(&model.name));
    headers.insert("x-fastembed-fingerprint", header_value(&model.fingerprint));
    headers.insert("x-fastembed-dim", header_value(&dim.to_string()));
    headers.insert("x-fastembed-rows", header_value(&(vectors.len() / dim.max(1)).to_string()));
    Ok(response)
}

/// pgvector's text form, one vector per line, each float the shortest that reads back exactly.
fn pgvector_lines(vectors: &[f32], dim: usize) -> String {
    let mut out = String::with_capacity(vectors.len() * 12);
    let mut buffer = ryu::Buffer::new();
    for row in vectors.chunks_exact(dim) {
        out.push('[');
        for (i, x) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(buffer.format(*x));
        }
        out.push_str("]\n");
    }
    out
}

async fn openai_embeddings(Shared(state): Shared<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let response = match openai_inner(&state, &body).await {
        Ok(response) => response,
        Err(err) => openai_error(err),
    };
    state.metrics.answered("/v1/embeddings", response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

async fn openai_inner(state: &State, body: &Bytes) -> Result<Response, ApiError> {
    let _slot = slot(state)?;
    let _in_flight = InFlight::new(&state.metrics);
    let map = parse_body(body)?;
    let encoding = optional_str(&map, "encoding_format")?.unwrap_or_else(|| "float".to_owned());
    if encoding != "float" && encoding != "base64" {
        return Err(ApiError::validation(format!(
            "encoding_format {encoding:?} is not supported; use \"float\" or \"base64\""
        )));
    }
    let dimensions = match map.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|d| d >= 1) => n.as_u64().map(|d| d as usize),
        Some(other) => {
            return Err(ApiError::validation(format!(
                "dimensions is {}, expected a positive integer",
                kind(other)
            )))
        }
    };
    let request = Request {
        texts: texts("input", map.get("input"), &state.config)?,
        normalize: None,
        model: optional_str(&map, "model")?,
        fingerprint: None,
        prompt_name: None,
        dimensions,
    };
    let rows = request.texts.len();
    let (model, vectors, tokens) = compute(state, request).await?;
    let dim = vectors.len() / rows;
    let data: Vec<OpenAiEmbedding<'_>> = vectors
        .chunks_exact(dim)
        .enumerate()
        .map(|(index, row)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: if encoding == "base64" {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                Floats::Base64(base64(&bytes))
            } else {
                Floats::List(row)
            },
        })
        .collect();
    let answer = OpenAiList {
        object: "list",
        data,
        model: &model.name,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    Ok(axum::Json(answer).into_response())
}

// OpenAI's answer, typed so that each float is written as the shortest text of its f32 value.
#[derive(serde::Serialize)]
struct OpenAiList<'a> {
    object: &'static str,
    data: Vec<OpenAiEmbedding<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(serde::Serialize)]
struct OpenAiEmbedding<'a> {
    object: &'static str,
    index: usize,
    embedding: Floats<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Floats<'a> {
    List(&'a [f32]),
    Base64(String),
}

#[derive(serde::Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

async fn health(Shared(state): Shared<AppState>) -> Response {
    let names: Vec<String> = state.registry.all().await.iter().map(|m| m.name.clone()).collect();
    axum::Json(json!({"status": "ok", "models": names})).into_response()
}

async fn list_models(Shared(state): Shared<AppState>) -> Response {
    let models: Vec<Value> = state
        .registry
        .all()
        .await
        .iter()
        .map(|m| {
            let manifest = m.encoder.manifest();
            json!({
                "name": m.name,
                "fingerprint": m.fingerprint,
                "dim": manifest.dim,
                "max_seq_length": manifest.max_seq_length,
                "similarity": manifest.similarity.as_str(),
                "normalize": manifest.normalize,
                "architecture": manifest.architecture,
                "dtype": manifest.dtype,
            })
        })
        .collect();
    axum::Json(json!({"models": models})).into_response()
}

async fn metrics(Shared(state): Shared<AppState>) -> Response {
    let text = state.metrics.render(&fingerprints(&state.registry).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

// ------------------------------------------------------------------------------------------------
// errors and helpers

fn tei_error(err: ApiError) -> Response {
    (err.status, axum::Json(json!({"error": err.message, "error_type": err.kind}))).into_response()
}

fn openai_error(err: ApiError) -> Response {
    let body = json!({"error": {"message": err.message, "type": err.kind, "param": null, "code": null}});
    (err.status, axum::Json(body)).into_response()
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------------------------------------
// listening

/// Binds the socket and the port, serves until SIGTERM or SIGINT, then stops taking connections
/// and answers what it accepted before returning.
pub async fn serve(state: AppState, config: &Config, ready: impl FnOnce(Vec<String>)) -> Result<(), ServerError> {
    let app = router(state.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut lines = Vec::new();
    let mut servers = tokio::task::JoinSet::new();
    if let Some(path) = &config.socket {
        let listener = bind_socket(path)?;
        lines.push(format!("listening on unix:{}", path.display()));
        let mut stopped = stopped.clone();
        let app = app.clone();
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
    }
    if let Some(addr) = config.tcp {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServerError::Listen {
            what: format!("cannot listen on {addr}"),
            source,
        })?;
        let bound = listener.local_addr().map_err(ServerError::Io)?;
        lines.push(format!("listening on http://{bound}"));
        let mut stopped = stopped.clone();
        let app = app.clone();
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
    }
    let (workers, threads) = config.engine_shape();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    lines.push(format!("engine: {}, {} each", plural(workers, "worker"), plural(threads, "libtorch thread")));
    for model in state.registry.all().await {
        let manifest = model.encoder.manifest();
        lines.push(format!(
            "model {} ({}, {} dims, {}) {}",
            model.name,
            manifest.architecture,
            manifest.dim,
            manifest.similarity.as_str(),
            model.fingerprint
        ));
    }
    ready(lines);
    shutdown_signal().await;
    let _ = stop.send(true);
    while let Some(result) = servers.join_next().await {
        if let Ok(Err(err)) = result {
            eprintln!("fastembed-ext serve: {err}");
        }
    }
    if let Some(path) = &config.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServerError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::Listen {
                what: format!("{} is in use by a running server", path.display()),
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            });
        }
        // a socket file a stopped server left behind
        std::fs::remove_file(path).map_err(|source| ServerError::Listen {
            what: format!("cannot remove the stale socket {}", path.display()),
            source,
        })?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| ServerError::Listen {
        what: format!("cannot listen on {}", path.display()),
        source,
    })?;
    // Every local user may connect, as to PostgreSQL's own socket: the server only computes.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(ServerError::Io)?;
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(int) => int,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
