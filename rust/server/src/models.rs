//! The models a server holds: loaded at start (`--model NAME=PATH`) or on first use from a
//! directory of bundles (`--models-dir`), each once, each with its batching queue. A request
//! names a model, or gives the fingerprint of the bundle it wants: the backend of a database
//! knows the content its registry pinned, whatever the server calls it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use fastembed_core::Encoder; // the models' encoders, shared with the engine's workers
use tokio::sync::{mpsc, Mutex, RwLock};

use crate::batcher::{self, Engine, Job};
use crate::config::{valid_name, Config};
use crate::error::{ApiError, ServerError};
use crate::metrics::Metrics;

pub struct Model {
    pub name: String,
    pub encoder: Arc<Encoder>,
    pub fingerprint: String,
    pub queue: mpsc::UnboundedSender<Job>,
}

pub struct Registry {
    models: RwLock<Vec<Arc<Model>>>,
    default: Option<String>,
    dir: Option<PathBuf>,
    loading: Mutex<()>,
    max_batch_tokens: usize,
    metrics: Arc<Metrics>,
    engine: Engine,
}

impl Registry {
    pub async fn load(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ServerError> {
        let registry = Self {
            models: RwLock::new(Vec::new()),
            default: config.models.first().map(|(name, _)| name.clone()),
            dir: config.models_dir.clone(),
            loading: Mutex::new(()),
            max_batch_tokens: config.max_batch_tokens,
            engine: {
                let (workers, threads) = config.engine_shape();
                Engine::start(workers, threads, metrics.clone()).map_err(ServerError::Io)?
            },
            metrics,
        };
        for (name, path) in &config.models {
            registry.add(name, path.clone()).await?;
        }
        Ok(registry)
    }

    async fn add(&self, name: &str, path: PathBuf) -> Result<Arc<Model>, ServerError> {
        let (encoder, fingerprint) = self.engine.load(path).await.map_err(|source| ServerError::Model {
            name: name.to_owned(),
            source,
        })?;
        let model = Arc::new(Model {
            name: name.to_owned(),
            queue: batcher::spawn(self.engine.clone(), encoder.clone(), self.max_batch_tokens, self.metrics.clone()),
            encoder,
            fingerprint,
        });
        self.models.write().await.push(model.clone());
        Ok(model)
    }

    pub async fn all(&self) -> Vec<Arc<Model>> {
        self.models.read().await.clone()
    }

    /// The model a request asks for: by fingerprint, by name (loading it from the models
    /// directory on first use), or the first one the server was started with.
    pub async fn get(&self, name: Option<&str>, fingerprint: Option<&str>) -> Result<Arc<Model>, ApiError> {
        if let Some(fingerprint) = fingerprint {
            // by content, whatever the server calls it; a name given beside it is not needed
            let models = self.models.read().await;
            return match models.iter().find(|m| m.fingerprint == fingerprint) {
                Some(model) => Ok(model.clone()),
                None => Err(ApiError::unknown_model(format!(
                    "no model with fingerprint {fingerprint} is loaded (loaded: {})",
                    describe(&models)
                ))),
            };
        }
        let Some(name) = name.or(self.default.as_deref()) else {
            return Err(ApiError::bad_request("no model given and the server has no default model"));
        };
        if let Some(model) = self.models.read().await.iter().find(|m| m.name == name) {
            return Ok(model.clone());
        }
        let Some(dir) = &self.dir else {
            let models = self.models.read().await;
            return Err(ApiError::unknown_model(format!("unknown model {name:?} (loaded: {})", describe(&models))));
        };
        if !valid_name(name) {
            return Err(ApiError::validation(format!("invalid model name {name:?}")));
        }
        let path = dir.join(name);
        if !path.join(fastembed_core::MANIFEST_FILE).is_file() {
            return Err(ApiError::unknown_model(format!(
                "unknown model {name:?}: no bundle {name} in the models directory"
            )));
        }
        let _one_at_a_time = self.loading.lock().await;
        if let Some(model) = self.models.read().await.iter().find(|m| m.name == name) {
            return Ok(model.clone()); // loaded by the request we waited for
        }
        self.add(name, path)
            .await
            .map_err(|err| ApiError::internal(format!("cannot load model {name:?}: {err}")))
    }
}

fn describe(models: &[Arc<Model>]) -> String {
    if models.is_empty() {
        return "none".to_owned();
    }
    let names: Vec<String> = models.iter().map(|m| format!("{} ({})", m.name, m.fingerprint)).collect();
    names.join(", ")
}

/// Model name -> fingerprint, for the metrics.
pub async fn fingerprints(registry: &Registry) -> Vec<(String, String)> {
    registry
        .all()
        .await
        .iter()
        .map(|m| (m.name.clone(), m.fingerprint.clone()))
        .collect::<HashMap<_, _>>()
        .into_iter()
        .collect()
}
