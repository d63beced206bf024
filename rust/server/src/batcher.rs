//! Continuous batching for one model: requests that arrive while the model computes wait in its
//! queue and go, together, into its next call of the engine, up to a token budget. One call runs
//! at a time per model, on a thread of its own, so the async workers only parse and wait.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use fastembed_core::{EncodeOptions, Encoder};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Vectors of one request: `rows × dim`, row-major, in the request's order.
pub type Vectors = Result<Vec<f32>, String>;

pub struct Job {
    pub tokens: Vec<Vec<u32>>,
    pub normalize: Option<bool>,
    pub reply: oneshot::Sender<Vectors>,
    pub queued_at: Instant,
}

impl Job {
    fn token_count(&self) -> usize {
        self.tokens.iter().map(Vec::len).sum()
    }
}

/// The one thread that runs libtorch: it loads every model and computes every batch. libtorch's
/// OpenMP team belongs to the thread that first runs a parallel region, and a second thread that
/// runs one (a pool handing calls around, or a model loaded on one thread and run on another)
/// makes every forward pass about twice as slow on this 2-core machine (measured: 3.5 against
/// 8.3 ms for one short text). Models share the thread: each already uses every core.
#[derive(Clone)]
pub struct Engine {
    commands: std::sync::mpsc::Sender<Command>,
}

enum Command {
    Load {
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<(Arc<Encoder>, String), fastembed_core::Error>>,
    },
    Run {
        encoder: Arc<Encoder>,
        jobs: Vec<Job>,
        done: oneshot::Sender<()>,
    },
}

impl Engine {
    pub fn start(threads: Option<usize>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (commands, incoming) = std::sync::mpsc::channel::<Command>();
        std::thread::Builder::new()
            .name("fastembed-engine".to_owned())
            .spawn(move || {
                if let Some(threads) = threads {
                    fastembed_core::set_num_threads(threads);
                }
                for command in incoming {
                    match command {
                        Command::Load { path, reply } => {
                            let loaded = Encoder::load(&path).and_then(|encoder| {
                                let fingerprint = encoder.fingerprint()?.to_owned();
                                Ok((Arc::new(encoder), fingerprint))
                            });
                            let _ = reply.send(loaded);
                        }
                        Command::Run { encoder, jobs, done } => {
                            run(&encoder, jobs, &metrics);
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(Self { commands })
    }

    pub async fn load(&self, path: std::path::PathBuf) -> Result<(Arc<Encoder>, String), fastembed_core::Error> {
        let (reply, answer) = oneshot::channel();
        let stopped = || fastembed_core::Error::Forward("the engine thread has stopped".to_owned());
        self.commands.send(Command::Load { path, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Starts a model's batching task; jobs sent to the returned sender are answered on their
/// `reply` channel. It ends when every sender is dropped.
pub fn spawn(engine: Engine, encoder: Arc<Encoder>, max_batch_tokens: usize, metrics: Arc<Metrics>) -> mpsc::UnboundedSender<Job> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match receiver.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            // Take what is already waiting, up to the budget; never wait for more (an idle
            // model answers a lone request at once).
            let mut tokens = first.token_count();
            let mut jobs = vec![first];
            while tokens < max_batch_tokens {
                match receiver.try_recv() {
                    Ok(job) if tokens + job.token_count() <= max_batch_tokens => {
                        tokens += job.token_count();
                        jobs.push(job);
                    }
                    Ok(job) => {
                        carried = Some(job);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let texts: usize = jobs.iter().map(|job| job.tokens.len()).sum();
            metrics.queued_texts.fetch_sub(texts as u64, Ordering::Relaxed);
            metrics.batch_texts.observe(texts as f64);
            metrics.batch_tokens.observe(tokens as f64);
            let (done, finished) = oneshot::channel();
            let command = Command::Run {
                encoder: encoder.clone(),
                jobs,
                done,
            };
            if engine.commands.send(command).is_err() {
                return; // the engine thread is gone; the jobs' replies were dropped with it
            }
            let _ = finished.await;
        }
    });
    sender
}

/// Computes one batch on the engine thread and answers each job.
fn run(encoder: &Encoder, jobs: Vec<Job>, metrics: &Metrics) {
    let started = Instant::now();
    for job in &jobs {
        metrics.queue_seconds.observe(started.duration_since(job.queued_at).as_secs_f64());
    }
    // Jobs asking for the same normalisation share one call; the mask keeps every row's vector
    // independent of the others, so sharing changes speed, never values.
    let mut groups: Vec<(Option<bool>, Vec<usize>)> = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        match groups.iter_mut().find(|(normalize, _)| *normalize == job.normalize) {
            Some((_, members)) => members.push(index),
            None => groups.push((job.normalize, vec![index])),
        }
    }
    let mut results: Vec<Option<Vectors>> = jobs.iter().map(|_| None).collect();
    for (normalize, members) in groups {
        let all: Vec<Vec<u32>> = members.iter().flat_map(|&i| jobs[i].tokens.iter().cloned()).collect();
        let options = EncodeOptions {
            normalize,
            ..EncodeOptions::default()
        };
        match encoder.encode_tokens(&all, &options) {
            Ok(embeddings) if members.len() == 1 => results[members[0]] = Some(Ok(embeddings.data)),
            Ok(embeddings) => {
                let dim = embeddings.dim;
                let mut offset = 0;
                for &i in &members {
                    let rows = jobs[i].tokens.len();
                    results[i] = Some(Ok(embeddings.data[offset * dim..(offset + rows) * dim].to_vec()));
                    offset += rows;
                }
            }
            Err(err) => {
                for &i in &members {
                    results[i] = Some(Err(err.to_string()));
                }
            }
        }
    }
    metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
    for (job, result) in jobs.into_iter().zip(results) {
        // the client may have gone; nothing to do then
        let _ = job.reply.send(result.unwrap_or_else(|| Err("not computed".to_owned())));
    }
}
