//! Prometheus metrics, rendered at `GET /metrics`.
//!
//! Every handle is registered once, when the recorder is installed; the hot
//! path (per event, per delivery) only bumps an atomic, with no name lookup.

use std::sync::OnceLock;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::domain::{ByeReason, EntryId};

pub struct Metrics {
    pub streams_open: Gauge,
    pub streams_opened: Counter,
    pub publishes_stored: Counter,
    pub publishes_duplicate: Counter,
    pub publishes_dropped: Counter,
    /// Live events that reached this node for a local user (encoded once).
    pub live_events: Counter,
    /// Frames queued to streams (one per tab).
    pub deliveries: Counter,
    pub replays: Counter,
    pub replayed_entries: Counter,
    bye: [Counter; 4],
    pub engine_errors: Counter,
    pub pubsub_reconnects: Counter,
    /// Stored entries that were not what the publish paths write (bytes
    /// that are not UTF-8, raw control characters or line breaks), written
    /// by another Redis client or an older library: repaired as they were
    /// read or rendered, never allowed to fail a page or break the stream.
    pub repaired_entries: Counter,
    /// User requests and stream opens refused by the per-user rate limit.
    pub user_rate_limited: Counter,
    /// From the entry id's timestamp (Redis's clock at XADD) to the moment
    /// this node queued it for its streams.
    pub publish_to_delivery: Histogram,
    push: [Counter; 7],
    /// One request to a push service, encryption included.
    pub push_send_seconds: Histogram,
    /// Pushes queued, delayed or in flight (the whole deployment's, as last
    /// read by this node's worker).
    pub push_queue_depth: Gauge,
}

impl Metrics {
    pub fn bye(&self, reason: ByeReason) -> &Counter {
        &self.bye[reason as usize]
    }

    pub fn push(&self, outcome: PushOutcome) -> &Counter {
        &self.push[outcome as usize]
    }

    pub fn observe_delivery_latency(&self, id: EntryId) {
        let now_ms = crate::clock::now_unix_ms();
        self.publish_to_delivery.record(now_ms.saturating_sub(id.ms) as f64 / 1000.0);
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("herald_publish_to_delivery_seconds".into()),
                &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            )
            .expect("buckets are not empty")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("herald_push_send_seconds".into()),
                &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            )
            .expect("buckets are not empty")
            .install_recorder()
            .expect("the metrics recorder is installed once")
    })
}

/// The handles; installs the recorder first if needed.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        handle();
        describe_gauge!("herald_streams_open", "SSE streams open on this node");
        describe_counter!("herald_streams_opened_total", "SSE streams accepted");
        describe_counter!("herald_publishes_total", "notifications published through this node's HTTP API, by outcome");
        describe_counter!("herald_live_events_total", "live events received for users with a stream here");
        describe_counter!("herald_deliveries_total", "live frames queued to streams");
        describe_counter!("herald_replays_total", "history replays started (resume or resync)");
        describe_counter!("herald_replayed_entries_total", "history entries sent by replays");
        describe_counter!("herald_stream_bye_total", "streams ended by the server, by reason");
        describe_counter!("herald_engine_errors_total", "failed calls to the storage engine");
        describe_counter!("herald_pubsub_reconnects_total", "pub/sub reconnections");
        describe_counter!(
            "herald_repaired_entries_total",
            "stored entries repaired as read (not UTF-8, raw control characters or line breaks)"
        );
        describe_counter!("herald_user_rate_limited_total", "user requests and stream opens refused with 429");
        describe_histogram!("herald_publish_to_delivery_seconds", "from publish to queueing on this node");
        describe_counter!("herald_push_total", "Web Push sends and skips by this node's worker, by outcome");
        describe_histogram!("herald_push_send_seconds", "one request to a push service, encryption included");
        describe_gauge!("herald_push_queue_depth", "pushes queued, delayed or in flight");
        let bye = |reason: ByeReason| counter!("herald_stream_bye_total", "reason" => reason.as_str());
        Metrics {
            streams_open: gauge!("herald_streams_open"),
            streams_opened: counter!("herald_streams_opened_total"),
            publishes_stored: counter!("herald_publishes_total", "outcome" => "stored"),
            publishes_duplicate: counter!("herald_publishes_total", "outcome" => "duplicate"),
            publishes_dropped: counter!("herald_publishes_total", "outcome" => "dropped"),
            live_events: counter!("herald_live_events_total"),
            deliveries: counter!("herald_deliveries_total"),
            replays: counter!("herald_replays_total"),
            replayed_entries: counter!("herald_replayed_entries_total"),
            bye: ByeReason::ALL.map(bye),
            engine_errors: counter!("herald_engine_errors_total"),
            pubsub_reconnects: counter!("herald_pubsub_reconnects_total"),
            repaired_entries: counter!("herald_repaired_entries_total"),
            user_rate_limited: counter!("herald_user_rate_limited_total"),
            publish_to_delivery: histogram!("herald_publish_to_delivery_seconds"),
            push: PushOutcome::ALL.map(|o| counter!("herald_push_total", "outcome" => o.as_str())),
            push_send_seconds: histogram!("herald_push_send_seconds"),
            push_queue_depth: gauge!("herald_push_queue_depth"),
        }
    })
}

/// `herald_push_total`'s `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Sent,
    Retried,
    Dead,
    Gone,
    TooLarge,
    SkippedRead,
    SkippedDeleted,
}

impl PushOutcome {
    pub const ALL: [PushOutcome; 7] = [
        PushOutcome::Sent,
        PushOutcome::Retried,
        PushOutcome::Dead,
        PushOutcome::Gone,
        PushOutcome::TooLarge,
        PushOutcome::SkippedRead,
        PushOutcome::SkippedDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Sent => "sent",
            PushOutcome::Retried => "retried",
            PushOutcome::Dead => "dead",
            PushOutcome::Gone => "gone",
            PushOutcome::TooLarge => "too_large",
            PushOutcome::SkippedRead => "skipped_read",
            PushOutcome::SkippedDeleted => "skipped_deleted",
        }
    }
}
