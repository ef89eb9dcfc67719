//! W3C trace context (`traceparent`) for following one case across workers and parties.
//!
//! A case is one trace: its trace id is derived from the case id, so every process — a worker, an
//! executor, the HTTP surface — names the same trace without asking anyone. A worker's handling
//! of an event (a hop) is a span whose id is derived from the worker and the event id, so the
//! events it emits, committed before it ends, can already name it as their parent, and a
//! redelivered event is the same span again. An effect's attempt is a span derived from the case,
//! the effect and the attempt. Nothing here is personal data: only ids are hashed.

use sha2::{Digest, Sha256};
use std::fmt::Write;

/// A 16-byte trace id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl TraceId {
    /// The trace of a case.
    pub fn of_case(case: &str) -> TraceId {
        let d = digest(&["wangban-trace", case]);
        TraceId(d[..16].try_into().expect("16 bytes"))
    }

    /// Lowercase hex, as OTLP/JSON and `traceparent` write it.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl SpanId {
    /// The span of `worker` handling event `event_id`.
    pub fn hop(worker: &str, event_id: &str) -> SpanId {
        SpanId::from(digest(&["wangban-hop", worker, event_id]))
    }

    /// The span of attempt `attempt` at effect `purpose` of `case`.
    pub fn effect(case: &str, purpose: &str, attempt: i64) -> SpanId {
        SpanId::from(digest(&[
            "wangban-effect",
            case,
            purpose,
            &attempt.to_string(),
        ]))
    }

    /// Lowercase hex.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl From<[u8; 32]> for SpanId {
    fn from(d: [u8; 32]) -> SpanId {
        let mut id: [u8; 8] = d[..8].try_into().expect("8 bytes");
        if id == [0; 8] {
            id[7] = 1; // all zeros is not a valid span id
        }
        SpanId(id)
    }
}

/// The `traceparent` header value of a sampled span: `00-<trace>-<span>-01`.
pub fn traceparent(trace: TraceId, span: SpanId) -> String {
    format!("00-{}-{}-01", trace.hex(), span.hex())
}

/// The trace and parent span of a `traceparent` value, if it is a valid version-00 one.
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || flags.len() != 2 {
        return None;
    }
    let bytes = |s: &str, n: usize| -> Option<Vec<u8>> {
        if s.len() != 2 * n
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        (0..n)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
            .collect()
    };
    let trace: [u8; 16] = bytes(trace, 16)?.try_into().ok()?;
    let span: [u8; 8] = bytes(span, 8)?.try_into().ok()?;
    if trace == [0; 16] || span == [0; 8] {
        return None;
    }
    Some((TraceId(trace), SpanId(span)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_and_traceparent_round_trips() {
        let t = TraceId::of_case("case_0123");
        assert_eq!(t, TraceId::of_case("case_0123"));
        assert_ne!(t, TraceId::of_case("case_0124"));
        let s = SpanId::hop("notify", "evt_1");
        assert_ne!(s, SpanId::hop("review", "evt_1"));
        assert_ne!(
            SpanId::effect("case_0123", "fee_sms", 1),
            SpanId::effect("case_0123", "fee_sms", 2)
        );
        let tp = traceparent(t, s);
        assert_eq!(tp.len(), 55);
        assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
        assert_eq!(parse_traceparent(&tp), Some((t, s)));
    }

    #[test]
    fn invalid_traceparents_are_none() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_some()
        );
    }
}
