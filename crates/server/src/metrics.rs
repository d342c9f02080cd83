//! Counters of the daemon and their Prometheus text exposition (format 0.0.4), written by hand:
//! a handful of counters, gauges and one histogram need no metrics library.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// What the daemon counts while it runs.
#[derive(Debug, Default)]
pub struct Metrics {
    commands_accepted: AtomicU64,
    commands_already_applied: AtomicU64,
    cases_started: AtomicU64,
    events_appended: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    /// By (route, method).
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    /// By (route, method, status).
    responses: Mutex<BTreeMap<(String, String, u16), u64>>,
    in_flight: AtomicI64,
}

/// Gauges read when the metrics are rendered.
#[derive(Debug, Default)]
pub struct Gauges {
    pub head_position: u64,
    pub timers_pending: Option<usize>,
    /// Per exporter: (id, lag events, lag seconds, parked, handled).
    pub exporters: Vec<(String, u64, f64, u64, u64)>,
    pub tokens_active: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn command_accepted(&self, events: usize) {
        self.commands_accepted.fetch_add(1, Ordering::Relaxed);
        self.events_appended
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    pub fn command_already_applied(&self) {
        self.commands_already_applied
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn case_started(&self) {
        self.cases_started.fetch_add(1, Ordering::Relaxed);
        self.events_appended.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events_appended(&self, events: usize) {
        self.events_appended
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    pub fn command_rejected(&self, code: &str) {
        *lock(&self.rejected).entry(code.to_owned()).or_default() += 1;
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        lock(&self.latency)
            .entry((route.to_owned(), method.to_owned()))
            .or_default()
            .observe(elapsed.as_secs_f64());
        *lock(&self.responses)
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut text = String::new();
        let section = |text: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        section(
            &mut text,
            "giamsat_commands_accepted_total",
            "counter",
            "Workflow commands accepted through the API.",
        );
        let _ = writeln!(
            text,
            "giamsat_commands_accepted_total {}",
            self.commands_accepted.load(Ordering::Relaxed)
        );
        section(
            &mut text,
            "giamsat_commands_already_applied_total",
            "counter",
            "Commands repeated with the same idempotency key, answered without appending.",
        );
        let _ = writeln!(
            text,
            "giamsat_commands_already_applied_total {}",
            self.commands_already_applied.load(Ordering::Relaxed)
        );
        section(
            &mut text,
            "giamsat_commands_rejected_total",
            "counter",
            "Workflow commands the workflow rejected, by rejection code.",
        );
        for (code, n) in lock(&self.rejected).iter() {
            let _ = writeln!(
                text,
                "giamsat_commands_rejected_total{{code=\"{}\"}} {n}",
                label(code)
            );
        }
        section(
            &mut text,
            "giamsat_cases_started_total",
            "counter",
            "Cases started through the API.",
        );
        let _ = writeln!(
            text,
            "giamsat_cases_started_total {}",
            self.cases_started.load(Ordering::Relaxed)
        );
        section(
            &mut text,
            "giamsat_events_appended_total",
            "counter",
            "Events appended by API requests (commands, starts, document numbers).",
        );
        let _ = writeln!(
            text,
            "giamsat_events_appended_total {}",
            self.events_appended.load(Ordering::Relaxed)
        );
        section(
            &mut text,
            "giamsat_log_head_position",
            "gauge",
            "Position of the newest event in the log.",
        );
        let _ = writeln!(text, "giamsat_log_head_position {}", gauges.head_position);
        if let Some(pending) = gauges.timers_pending {
            section(
                &mut text,
                "giamsat_timers_pending",
                "gauge",
                "Timers waiting for their due time in the scheduler's index.",
            );
            let _ = writeln!(text, "giamsat_timers_pending {pending}");
        }
        section(
            &mut text,
            "giamsat_tokens_active",
            "gauge",
            "Access tokens that are not revoked.",
        );
        let _ = writeln!(text, "giamsat_tokens_active {}", gauges.tokens_active);
        if !gauges.exporters.is_empty() {
            section(
                &mut text,
                "giamsat_exporter_lag_events",
                "gauge",
                "Events committed after the exporter's checkpoint.",
            );
            for (id, events, _, _, _) in &gauges.exporters {
                let _ = writeln!(
                    text,
                    "giamsat_exporter_lag_events{{exporter=\"{}\"}} {events}",
                    label(id)
                );
            }
            section(
                &mut text,
                "giamsat_exporter_lag_seconds",
                "gauge",
                "Age of the oldest event the exporter has not handled.",
            );
            for (id, _, seconds, _, _) in &gauges.exporters {
                let _ = writeln!(
                    text,
                    "giamsat_exporter_lag_seconds{{exporter=\"{}\"}} {seconds}",
                    label(id)
                );
            }
            section(
                &mut text,
                "giamsat_exporter_parked",
                "gauge",
                "Events the exporter parked and that were not retried successfully.",
            );
            for (id, _, _, parked, _) in &gauges.exporters {
                let _ = writeln!(
                    text,
                    "giamsat_exporter_parked{{exporter=\"{}\"}} {parked}",
                    label(id)
                );
            }
            section(
                &mut text,
                "giamsat_exporter_handled_total",
                "counter",
                "Events the exporter handled since the daemon started.",
            );
            for (id, _, _, _, handled) in &gauges.exporters {
                let _ = writeln!(
                    text,
                    "giamsat_exporter_handled_total{{exporter=\"{}\"}} {handled}",
                    label(id)
                );
            }
        }
        section(
            &mut text,
            "giamsat_http_requests_in_flight",
            "gauge",
            "HTTP requests being handled now.",
        );
        let _ = writeln!(
            text,
            "giamsat_http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        section(
            &mut text,
            "giamsat_http_responses_total",
            "counter",
            "HTTP responses by route, method and status.",
        );
        for ((route, method, status), n) in lock(&self.responses).iter() {
            let _ = writeln!(
                text,
                "giamsat_http_responses_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
        section(
            &mut text,
            "giamsat_http_request_duration_seconds",
            "histogram",
            "Time from a request's headers to its response's headers, by route and method.",
        );
        for ((route, method), h) in lock(&self.latency).iter() {
            let route = label(route);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.buckets.iter()) {
                cumulative += n;
                let _ = writeln!(
                    text,
                    "giamsat_http_request_duration_seconds_bucket{{route=\"{route}\",method=\"{method}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                text,
                "giamsat_http_request_duration_seconds_bucket{{route=\"{route}\",method=\"{method}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                text,
                "giamsat_http_request_duration_seconds_sum{{route=\"{route}\",method=\"{method}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                text,
                "giamsat_http_request_duration_seconds_count{{route=\"{route}\",method=\"{method}\"}} {}",
                h.count
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_labels_are_escaped() {
        let m = Metrics::default();
        m.request_started();
        m.request_finished("/api/x", "GET", 200, Duration::from_millis(3));
        m.request_started();
        m.request_finished("/api/x", "GET", 200, Duration::from_secs(20));
        m.command_rejected("wrong\"stage");
        let text = m.render(&Gauges::default());
        assert!(text.contains(
            "giamsat_http_request_duration_seconds_bucket{route=\"/api/x\",method=\"GET\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "giamsat_http_request_duration_seconds_bucket{route=\"/api/x\",method=\"GET\",le=\"10\"} 1"
        ));
        assert!(text.contains(
            "giamsat_http_request_duration_seconds_bucket{route=\"/api/x\",method=\"GET\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("giamsat_commands_rejected_total{code=\"wrong\\\"stage\"} 1"));
        assert!(text.contains("giamsat_http_requests_in_flight 0"));
    }
}
