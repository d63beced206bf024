//! Counters and histograms, written in Prometheus' text format by `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Cumulative buckets over fixed upper bounds, as Prometheus histograms are.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if value <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micro
            .fetch_add((value * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", count.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const TEXTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];
const TOKENS: &[f64] = &[16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0];

pub struct Metrics {
    /// (endpoint, status) -> requests answered
    requests: Mutex<Vec<((&'static str, u16), u64)>>,
    pub texts: AtomicU64,
    pub tokens: AtomicU64,
    pub queued_texts: AtomicU64,
    pub in_flight: AtomicU64,
    pub busy_workers: AtomicU64,
    pub request_seconds: Histogram,
    pub batch_texts: Histogram,
    pub batch_tokens: Histogram,
    pub batch_seconds: Histogram,
    pub queue_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            texts: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            queued_texts: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            busy_workers: AtomicU64::new(0),
            request_seconds: Histogram::new(SECONDS),
            batch_texts: Histogram::new(TEXTS),
            batch_tokens: Histogram::new(TOKENS),
            batch_seconds: Histogram::new(SECONDS),
            queue_seconds: Histogram::new(SECONDS),
        }
    }
}

impl Metrics {
    pub fn answered(&self, endpoint: &'static str, status: u16, seconds: f64) {
        if let Ok(mut requests) = self.requests.lock() {
            match requests.iter_mut().find(|(key, _)| *key == (endpoint, status)) {
                Some((_, n)) => *n += 1,
                None => requests.push(((endpoint, status), 1)),
            }
        }
        self.request_seconds.observe(seconds);
    }

    pub fn render(&self, models: &[(String, String)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP fastembed_requests_total Requests answered, by endpoint and status.\n");
        out.push_str("# TYPE fastembed_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((endpoint, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "fastembed_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let counters = [
            ("fastembed_texts_total", "Texts embedded.", &self.texts),
            ("fastembed_tokens_total", "Tokens embedded (special tokens included, after truncation).", &self.tokens),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
        }
        let gauges = [
            ("fastembed_queue_texts", "Texts waiting for a model.", &self.queued_texts),
            ("fastembed_requests_in_flight", "Requests being served.", &self.in_flight),
            ("fastembed_workers_busy", "Engine workers computing a batch.", &self.busy_workers),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", value.load(Ordering::Relaxed));
        }
        self.request_seconds.write(&mut out, "fastembed_request_duration_seconds", "Time from a request's arrival to its answer.");
        self.queue_seconds.write(&mut out, "fastembed_queue_duration_seconds", "Time a request waited for its model.");
        self.batch_seconds.write(&mut out, "fastembed_batch_duration_seconds", "Time of one call of the engine.");
        self.batch_texts.write(&mut out, "fastembed_batch_texts", "Texts in one call of the engine.");
        self.batch_tokens.write(&mut out, "fastembed_batch_tokens", "Tokens in one call of the engine.");
        out.push_str("# HELP fastembed_model_info The models loaded, with their content fingerprint.\n");
        out.push_str("# TYPE fastembed_model_info gauge\n");
        for (name, fingerprint) in models {
            let _ = writeln!(out, "fastembed_model_info{{model=\"{name}\",fingerprint=\"{fingerprint}\"}} 1");
        }
        out
    }
}
