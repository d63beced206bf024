//! Continuous batching over a pool of engine workers. Each model has a queue and a task that forms
//! its batches; a batch is formed only when a worker is free, so requests that arrive while every
//! worker computes wait together and go, together, into the next free worker's call, up to a
//! token budget. A large request is cut into pieces (its texts sorted by length, so each piece
//! pads little) that several workers compute at once. The async runtime only parses and waits.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fastembed_core::{EncodeOptions, Encoder};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Vectors of one request: `rows × dim`, row-major, in the request's order.
pub type Vectors = Result<Vec<f32>, String>;

/// How a request's vectors are made from its tokens; requests that agree share forward passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Call {
    pub normalize: Option<bool>,
    /// Pooling starts at this token (past a prompt the model leaves out of pooling; else 0).
    pub skip: usize,
    /// Matryoshka: keep this many dimensions (OpenAI's `dimensions`).
    pub truncate_dim: Option<usize>,
    /// L2-normalise after truncating.
    pub normalize_embeddings: bool,
}

pub struct Job {
    pub tokens: Vec<Vec<u32>>,
    pub call: Call,
    pub reply: oneshot::Sender<Vectors>,
    pub queued_at: Instant,
}

/// A request is cut into at least this many pieces per worker when it is large (so the last
/// pieces even out the workers' shares), but no piece is smaller than `MIN_PIECE_TOKENS`: below
/// that, splitting costs more than it saves.
const PIECES_PER_WORKER: usize = 4;
const MIN_PIECE_TOKENS: usize = 1024;

/// Padded tokens computed since the last hand-back of free memory before an idle engine hands
/// it back early. Fewer: a few single queries allocate little, and trimming is not free. Not many
/// more: a burst of up to 2,048 tokens right after a periodic hand-back left MiniLM's server
/// 34 MiB above its idle size until the next one (`bench/soak_server.py`, once in 1,000,000 texts).
const IDLE_TRIM_TOKENS: usize = 256;

/// The engine's worker threads, which load every model and compute every batch.
///
/// Each worker runs its forward passes with `threads` libtorch threads. Several single-threaded
/// workers beat one worker with every core when requests are small: a short text's matrices are
/// too narrow to share among cores (one forward pass of a 12-token text is 4.2 ms on one core and
/// 2.95 ms on two, 70% more core time), and per-thread OpenMP and MKL state stays with its thread.
#[derive(Clone)]
pub struct Engine {
    commands: std::sync::mpsc::Sender<Command>,
    /// One permit per worker: a batch is formed only when one is free.
    free: Arc<Semaphore>,
    workers: usize,
}

enum Command {
    Load {
        path: std::path::PathBuf,
        reply: oneshot::Sender<Result<(Arc<Encoder>, String), fastembed_core::Error>>,
    },
    Run {
        encoder: Arc<Encoder>,
        batch: Vec<Piece>,
        /// Released when the batch is answered: the worker is free again.
        _worker: OwnedSemaphorePermit,
    },
}

impl Engine {
    pub fn start(workers: usize, threads: usize, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (commands, incoming) = std::sync::mpsc::channel::<Command>();
        let incoming = Arc::new(Mutex::new(incoming));
        for index in 0..workers {
            let incoming = incoming.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name(format!("fastembed-worker-{index}"))
                .spawn(move || {
                    // libtorch keeps the thread count per thread (OpenMP's and MKL's settings):
                    // every worker sets its own before its first operator.
                    fastembed_core::set_num_threads(threads);
                    loop {
                        let command = match incoming.lock() {
                            Ok(incoming) => incoming.recv(),
                            Err(_) => return,
                        };
                        let Ok(command) = command else { return }; // the engine was dropped
                        match command {
                            Command::Load { path, reply } => {
                                let loaded = Encoder::load(&path).and_then(|encoder| {
                                    let fingerprint = encoder.fingerprint()?.to_owned();
                                    Ok((Arc::new(encoder), fingerprint))
                                });
                                let _ = reply.send(loaded);
                            }
                            Command::Run { encoder, batch, _worker } => {
                                metrics.busy_workers.fetch_add(1, Ordering::Relaxed);
                                run(&encoder, batch, &metrics);
                                let last = metrics.busy_workers.fetch_sub(1, Ordering::Relaxed) == 1;
                                // The engine's free memory goes back to the system when it falls
                                // idle (the engine itself also does so every 16,384 tokens): the
                                // workers' allocator arenas would otherwise keep the largest
                                // batches' activations between bursts.
                                if last
                                    && fastembed_core::tokens_since_release() >= IDLE_TRIM_TOKENS
                                    && metrics.queued_texts.load(Ordering::Relaxed) == 0
                                {
                                    fastembed_core::release_memory();
                                }
                            }
                        }
                    }
                })?;
        }
        Ok(Self {
            commands,
            free: Arc::new(Semaphore::new(workers)),
            workers,
        })
    }

    pub async fn load(&self, path: std::path::PathBuf) -> Result<(Arc<Encoder>, String), fastembed_core::Error> {
        let (reply, answer) = oneshot::channel();
        let stopped = || fastembed_core::Error::Forward("the engine's workers have stopped".to_owned());
        self.commands.send(Command::Load { path, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// A request being computed, perhaps in pieces by several workers at once.
struct Request {
    tokens: Vec<Vec<u32>>,
    call: Call,
    queued_at: Instant,
    progress: Mutex<Progress>,
}

struct Progress {
    /// `rows × dim`, filled as pieces finish; allocated by the first piece that needs it.
    vectors: Vec<f32>,
    pieces_left: usize,
    error: Option<String>,
    reply: Option<oneshot::Sender<Vectors>>,
}

/// Some of a request's texts, by index, computed in one call of the engine.
struct Piece {
    request: Arc<Request>,
    rows: Vec<usize>,
    tokens: usize,
}

impl Piece {
    /// Whether this piece is its whole request, in order: its vectors are the answer as they are.
    fn is_whole(&self) -> bool {
        self.rows.len() == self.request.tokens.len() && self.rows.iter().enumerate().all(|(i, &row)| i == row)
    }
}

/// Cuts a job into pieces of at most `piece_tokens` tokens (a single longer text is a piece of
/// its own), longest texts first, so each piece's texts are alike in length.
fn split(job: Job, workers: usize, max_batch_tokens: usize) -> Vec<Piece> {
    let lengths: Vec<usize> = job.tokens.iter().map(Vec::len).collect();
    let total: usize = lengths.iter().sum();
    let piece_tokens = (total / (PIECES_PER_WORKER * workers)).clamp(MIN_PIECE_TOKENS, max_batch_tokens.max(MIN_PIECE_TOKENS));
    let mut cuts: Vec<(Vec<usize>, usize)> = Vec::new();
    if total <= piece_tokens {
        cuts.push(((0..lengths.len()).collect(), total));
    } else {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        let mut rows = Vec::new();
        let mut tokens = 0;
        for i in order {
            if !rows.is_empty() && tokens + lengths[i] > piece_tokens {
                cuts.push((std::mem::take(&mut rows), tokens));
                tokens = 0;
            }
            rows.push(i);
            tokens += lengths[i];
        }
        cuts.push((rows, tokens));
    }
    let request = Arc::new(Request {
        tokens: job.tokens,
        call: job.call,
        queued_at: job.queued_at,
        progress: Mutex::new(Progress {
            vectors: Vec::new(),
            pieces_left: cuts.len(),
            error: None,
            reply: Some(job.reply),
        }),
    });
    cuts.into_iter()
        .map(|(rows, tokens)| Piece {
            request: request.clone(),
            rows,
            tokens,
        })
        .collect()
}

/// Starts a model's batching task; jobs sent to the returned sender are answered on their
/// `reply` channel. It ends when every sender is dropped and its queue is empty.
pub fn spawn(engine: Engine, encoder: Arc<Encoder>, max_batch_tokens: usize, metrics: Arc<Metrics>) -> mpsc::UnboundedSender<Job> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        let mut pending: VecDeque<Piece> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match receiver.recv().await {
                    Some(job) => pending.extend(split(job, engine.workers, max_batch_tokens)),
                    None => return,
                }
            }
            // Wait for a free worker; what arrives meanwhile joins this batch. An idle server
            // answers a lone request at once.
            let Ok(worker) = engine.free.clone().acquire_owned().await else { return };
            while let Ok(job) = receiver.try_recv() {
                pending.extend(split(job, engine.workers, max_batch_tokens));
            }
            let mut batch = Vec::new();
            let mut tokens = 0;
            while let Some(piece) = pending.front() {
                // One piece of a request per batch: its other pieces are for the other workers.
                let again = batch.iter().any(|p: &Piece| Arc::ptr_eq(&p.request, &piece.request));
                if !batch.is_empty() && (again || tokens + piece.tokens > max_batch_tokens) {
                    break;
                }
                tokens += piece.tokens;
                batch.extend(pending.pop_front());
            }
            let texts: usize = batch.iter().map(|piece| piece.rows.len()).sum();
            metrics.queued_texts.fetch_sub(texts as u64, Ordering::Relaxed);
            metrics.batch_texts.observe(texts as f64);
            metrics.batch_tokens.observe(tokens as f64);
            let command = Command::Run {
                encoder: encoder.clone(),
                batch,
                _worker: worker,
            };
            if engine.commands.send(command).is_err() {
                return; // the workers are gone; the requests' replies were dropped with them
            }
        }
    });
    sender
}

/// Computes one batch on a worker and answers each request whose last piece it holds.
fn run(encoder: &Encoder, batch: Vec<Piece>, metrics: &Metrics) {
    let started = Instant::now();
    for piece in &batch {
        metrics.queue_seconds.observe(started.duration_since(piece.request.queued_at).as_secs_f64());
    }
    // Pieces asking for the same `Call` share one forward pass; the mask keeps every row's
    // vector independent of the others, so sharing changes speed, never values.
    let mut groups: Vec<(Call, Vec<Piece>)> = Vec::new();
    for piece in batch {
        let call = piece.request.call;
        match groups.iter_mut().find(|(c, _)| *c == call) {
            Some((_, members)) => members.push(piece),
            None => groups.push((call, vec![piece])),
        }
    }
    let mut done = Vec::new();
    for (call, pieces) in groups {
        let rows: Vec<&[u32]> = pieces
            .iter()
            .flat_map(|piece| piece.rows.iter().map(|&row| piece.request.tokens[row].as_slice()))
            .collect();
        let options = EncodeOptions {
            normalize: call.normalize,
            truncate_dim: call.truncate_dim,
            normalize_embeddings: call.normalize_embeddings,
            ..EncodeOptions::default()
        };
        let result = encoder.encode_tokens_from(&rows, call.skip, &options);
        drop(rows);
        match result {
            Ok(embeddings) if pieces.len() == 1 && pieces[0].is_whole() => {
                // the common case of a request alone in its call: its vectors go as they are
                done.extend(finish(&pieces[0], |progress| progress.vectors = embeddings.data));
            }
            Ok(embeddings) => {
                let dim = embeddings.dim;
                let mut offset = 0;
                for piece in &pieces {
                    let piece_rows = &embeddings.data[offset * dim..(offset + piece.rows.len()) * dim];
                    offset += piece.rows.len();
                    done.extend(finish(piece, |progress| {
                        if progress.vectors.is_empty() {
                            progress.vectors = vec![0.0; piece.request.tokens.len() * dim];
                        }
                        for (&row, vector) in piece.rows.iter().zip(piece_rows.chunks_exact(dim)) {
                            progress.vectors[row * dim..(row + 1) * dim].copy_from_slice(vector);
                        }
                    }));
                }
            }
            Err(err) => {
                for piece in &pieces {
                    done.extend(finish(piece, |progress| {
                        progress.error.get_or_insert_with(|| err.to_string());
                    }));
                }
            }
        }
    }
    metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
    for (reply, vectors) in done {
        let _ = reply.send(vectors); // the client may have gone; nothing to do then
    }
}

/// Records a piece's outcome in its request; when it was the request's last piece, returns the
/// reply to send (sent after the batch, not under the request's lock).
fn finish(piece: &Piece, record: impl FnOnce(&mut Progress)) -> Option<(oneshot::Sender<Vectors>, Vectors)> {
    let mut progress = piece.request.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    record(&mut progress);
    progress.pieces_left -= 1;
    if progress.pieces_left > 0 {
        return None;
    }
    let reply = progress.reply.take()?;
    let vectors = match progress.error.take() {
        Some(err) => Err(err),
        None => Ok(std::mem::take(&mut progress.vectors)),
    };
    Some((reply, vectors))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn job(lengths: &[usize]) -> Job {
        let (reply, _answer) = oneshot::channel();
        Job {
            tokens: lengths.iter().map(|&n| vec![7; n]).collect(),
            call: Call::default(),
            reply,
            queued_at: Instant::now(),
        }
    }

    #[test]
    fn a_small_request_is_one_whole_piece() {
        let pieces = split(job(&[5, 9, 3]), 8, 16_384);
        assert_eq!(pieces.len(), 1);
        assert!(pieces[0].is_whole());
        assert_eq!(pieces[0].tokens, 17);
    }

    #[test]
    fn a_large_request_is_cut_longest_first_and_keeps_every_row_once() {
        let lengths: Vec<usize> = (0..1000).map(|i| 8 + (i * 37) % 120).collect();
        let total: usize = lengths.iter().sum();
        let pieces = split(job(&lengths), 2, 16_384);
        assert!(pieces.len() >= 2 * PIECES_PER_WORKER, "{} pieces", pieces.len());
        let limit = (total / (2 * PIECES_PER_WORKER)).clamp(MIN_PIECE_TOKENS, 16_384);
        let mut seen: Vec<usize> = Vec::new();
        let mut previous_longest = usize::MAX;
        for piece in &pieces {
            assert!(piece.tokens <= limit);
            assert_eq!(piece.tokens, piece.rows.iter().map(|&r| lengths[r]).sum::<usize>());
            let longest = piece.rows.iter().map(|&r| lengths[r]).max().unwrap();
            assert!(longest <= previous_longest);
            previous_longest = piece.rows.iter().map(|&r| lengths[r]).min().unwrap();
            seen.extend(&piece.rows);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert_eq!(pieces[0].request.progress.lock().unwrap().pieces_left, pieces.len());
    }

    #[test]
    fn a_text_longer_than_a_piece_is_a_piece_of_its_own() {
        let pieces = split(job(&[3000, 10, 10]), 1, 1024);
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].rows, vec![0]);
        assert_eq!(pieces[1].rows, vec![1, 2]);
    }
}
