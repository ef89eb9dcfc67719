//! The pure domain of wangban: everything the back office decides, with no I/O.
//!
//! - [`application`]: the portal → intake JSON contract, parsed into types that cannot hold
//!   malformed values ("parse, don't validate").
//! - [`id_number`]: the 18-character resident identity number (GB 11643-1999) and its masking.
//! - [`eligibility`]: every rule of the policy, each reporting its fixed reason code.
//! - [`pilot`]: the pilot cities, configuration with start dates.
//! - [`lifecycle`]: the case state machine; every transition not in the diagram is refused.
//! - [`calendar`]: the working-day calendar (statutory holidays and make-up working days).
//! - [`clock`]: the one clock every "now" is read from (controlled in tests and the demo).
//! - [`effects`]: effects on the outside world as commands for parties, and their reports.
//! - [`events`]: the versioned CloudEvents envelope and the event types on the bus.
//! - [`ids`]: identifier newtypes.
//!
//! Workers, the bus and the store build on these; nothing here knows tokio, lapin or sqlx.

pub mod application;
pub mod calendar;
pub mod clock;
pub mod effects;
pub mod eligibility;
pub mod events;
pub mod fees;
pub mod id_number;
pub mod ids;
pub mod lifecycle;
pub mod materials;
pub mod pilot;
pub mod promise;
pub mod review;
pub mod trace;

/// Lower-case hex of a byte string (used for hashes and derived identifiers).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// SHA-256 of `data` as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}
