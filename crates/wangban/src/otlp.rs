//! Exports the runtime's spans ([`wangban_runtime::telemetry`]) over OTLP — HTTP with JSON
//! (`http/json`), which the OpenTelemetry Collector, Jaeger and Tempo accept on their OTLP HTTP
//! receivers — when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//! Spans are queued without blocking the pipeline (a full queue drops them, counted), and posted
//! in batches of up to 512, at least once a second. A collector that is down costs dropped
//! spans, never a delay to a case.

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use wangban_runtime::telemetry::{FinishedSpan, SpanKind, SpanSink};

/// Where and as whom spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The traces URL (`…/v1/traces`).
    pub traces_url: String,
    /// `service.name` (`OTEL_SERVICE_NAME`, default `wangban`).
    pub service_name: String,
}

impl OtlpConfig {
    /// From the standard variables; `None` when no endpoint is set. A protocol other than
    /// `http/json` is refused by name rather than sent in a form the collector cannot read.
    pub fn from_env() -> anyhow::Result<Option<OtlpConfig>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let traces_url = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = var(name).filter(|p| p != "http/json") {
                anyhow::bail!(
                    "{name}={p} is not supported: wangban exports OTLP over HTTP with JSON (http/json)"
                );
            }
        }
        Ok(Some(OtlpConfig {
            traces_url,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "wangban".into()),
        }))
    }
}

/// Spans per request at most.
const BATCH: usize = 512;
/// Spans waiting at most; more are dropped.
const QUEUE: usize = 8192;

/// The exporter: a queue and the task that empties it.
pub struct OtlpExporter {
    queue: mpsc::Sender<FinishedSpan>,
    dropped: Arc<AtomicU64>,
}

impl OtlpExporter {
    /// Starts the exporting task (on the current Tokio runtime).
    pub fn start(config: OtlpConfig) -> OtlpExporter {
        let (queue, mut rx) = mpsc::channel::<FinishedSpan>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default();
            let resource = resource(&config.service_name);
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let more = tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => n > 0,
                    _ = tokio::time::sleep(Duration::from_secs(1)), if !batch.is_empty() => true,
                };
                if batch.len() >= BATCH || (!batch.is_empty() && (!more || rx.is_empty())) {
                    let body = request(&resource, &batch);
                    let n = batch.len() as u64;
                    batch.clear();
                    let sent = client
                        .post(&config.traces_url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => {
                            lost.fetch_add(n, Ordering::Relaxed);
                            tracing::warn!(
                                status = r.status().as_u16(),
                                spans = n,
                                "the OTLP collector refused spans"
                            );
                        }
                        Err(e) => {
                            lost.fetch_add(n, Ordering::Relaxed);
                            tracing::warn!(error = %e, spans = n, "cannot reach the OTLP collector; spans dropped");
                        }
                    }
                }
                if !more {
                    return; // every sender is gone and the last batch is sent
                }
            }
        });
        OtlpExporter { queue, dropped }
    }

    /// Spans dropped so far (queue full, collector unreachable or refusing).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl SpanSink for OtlpExporter {
    fn finished(&self, span: FinishedSpan) {
        if self.queue.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn resource(service_name: &str) -> Value {
    json!({"attributes": [
        attribute("service.name", service_name),
        attribute("service.version", env!("CARGO_PKG_VERSION")),
        attribute("service.instance.id", &uuid::Uuid::new_v4().to_string()),
        attribute("telemetry.sdk.name", "wangban"),
        attribute("telemetry.sdk.language", "rust"),
    ]})
}

fn attribute(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

/// An OTLP/JSON `ExportTraceServiceRequest` of `spans`.
fn request(resource: &Value, spans: &[FinishedSpan]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": s.trace.hex(),
                "spanId": s.span.hex(),
                "name": s.name,
                // SPAN_KIND_CONSUMER = 5, SPAN_KIND_CLIENT = 3
                "kind": match s.kind { SpanKind::Consumer => 5, SpanKind::Client => 3 },
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
            });
            if let Some(parent) = s.parent {
                span["parentSpanId"] = json!(parent.hex());
            }
            if let Some(error) = &s.error {
                // STATUS_CODE_ERROR = 2
                span["status"] = json!({"code": 2, "message": error});
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{"scope": {"name": "wangban", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use wangban_domain::trace::{SpanId, TraceId};

    #[test]
    fn spans_encode_as_otlp_json() {
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let span = FinishedSpan {
            trace: TraceId::of_case("case_1"),
            span: SpanId::hop("notify", "evt_1"),
            parent: Some(SpanId::hop("review", "evt_0")),
            name: "notify case.approved".into(),
            kind: SpanKind::Consumer,
            start,
            end: start + Duration::from_millis(3),
            attributes: vec![("wangban.worker", "notify".into())],
            error: Some("dead-lettered: no case".into()),
        };
        let body = request(&resource("wangban"), &[span]);
        let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], TraceId::of_case("case_1").hex());
        assert_eq!(s["traceId"].as_str().unwrap().len(), 32);
        assert_eq!(s["spanId"].as_str().unwrap().len(), 16);
        assert_eq!(s["parentSpanId"], SpanId::hop("review", "evt_0").hex());
        assert_eq!(s["kind"], 5);
        assert_eq!(s["startTimeUnixNano"], "1700000000123000000");
        assert_eq!(s["endTimeUnixNano"], "1700000000126000000");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(
            s["attributes"][0],
            json!({"key": "wangban.worker", "value": {"stringValue": "notify"}})
        );
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "wangban"
        );
    }
}
