//! The pages (dashboard, reviewers' console, hall desk) and the headers every answer carries.
//!
//! Each page is one HTML file with one inline script; it is served with a Content-Security-Policy
//! that lets that script run by its SHA-256 and nothing else load from anywhere but this server,
//! and that no other site may frame it. Every answer says `nosniff` and sends no referrer; API
//! answers (personal data among them) are never cached.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

/// `html` with its Content-Security-Policy.
pub(crate) fn page(html: &'static str) -> Response {
    let mut r = Html(html).into_response();
    if let Ok(v) = HeaderValue::from_str(&policy(html)) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// The policy of a page: its inline scripts by hash, styles inline, data from this origin only.
fn policy(html: &str) -> String {
    let mut scripts = String::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script>") {
        let body = &rest[start + "<script>".len()..];
        let Some(end) = body.find("</script>") else {
            break;
        };
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&body.as_bytes()[..end]);
        scripts.push_str(&format!(" 'sha256-{}'", base64(&digest)));
        rest = &body[end..];
    }
    format!(
        "default-src 'none'; script-src{scripts}; style-src 'unsafe-inline'; connect-src 'self'; \
         img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// Standard base64 with padding (RFC 4648 §4), for the policy's hashes.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The headers of every answer. A path or query carrying a NUL byte (`%00`) is refused here,
/// before any handler could take it to the database.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    let nul = req.uri().path_and_query().is_some_and(|p| {
        let p = p.as_str().to_ascii_lowercase();
        p.contains("%00") || p.contains('\0')
    });
    if nul {
        return crate::error_response(
            axum::http::StatusCode::BAD_REQUEST,
            "the path or query contains a NUL byte (%00)",
        );
    }
    let api = req.uri().path().starts_with("/api/") || req.uri().path().starts_with("/callbacks/");
    let mut r = json_errors(next.run(req).await).await;
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if api || h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// A plain-text error of the framework (a body that is not JSON, a wrong content type, a
/// malformed query) as the JSON every other error is: `{"error": "…"}`.
async fn json_errors(r: Response) -> Response {
    let plain = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    if !(r.status().is_client_error() || r.status().is_server_error()) || !plain {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let mut out = crate::error_response(parts.status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), encoded);
        }
    }

    #[test]
    fn a_page_may_run_its_own_script_and_nothing_else() {
        let p = policy("<p>x</p><script>alert(1)</script>");
        // echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64
        assert!(
            p.contains("script-src 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"),
            "{p}"
        );
        assert!(p.contains("frame-ancestors 'none'"));
        assert!(!p.contains("unsafe-eval"));
    }
}
