//! Progress of long commands on stderr: rewritten in place on a terminal (`\r`), one line per
//! update otherwise, so that a log file or a CI log gets readable lines instead of one endless one.

use std::io::{IsTerminal, Write};

/// Shows `line` as the progress now.
pub fn show(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = if err.is_terminal() {
        write!(err, "\r{line}   ")
    } else {
        writeln!(err, "{line}")
    };
    let _ = err.flush();
}

/// Ends a progress line (on a terminal, the line rewritten in place needs its newline).
pub fn end() {
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}
