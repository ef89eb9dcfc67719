//! Spans of the pipeline's work, for a trace per case ([`wangban_domain::trace`]): one per hop (a
//! worker handling an event) and one per attempt at an effect (a call to a party). The runtime
//! hands each finished span to a [`SpanSink`] (the OTLP exporter of `wangban serve`, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set); without one, nothing is recorded. Attributes carry ids,
//! types and outcomes only — never personal data.

use std::time::SystemTime;
use wangban_domain::trace::{SpanId, TraceId};

/// What a span did: handling a delivered message, or calling a party.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Consumer,
    Client,
}

/// A span that has ended.
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    pub trace: TraceId,
    pub span: SpanId,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
    /// Set when the span's work failed (dead-lettered, a party's refusal or error).
    pub error: Option<String>,
}

/// Where finished spans go. Must not block: an exporter queues them.
pub trait SpanSink: Send + Sync + 'static {
    fn finished(&self, span: FinishedSpan);
}
