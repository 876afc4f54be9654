//! Text from jobs made safe for an operator's terminal.
//!
//! Payloads, errors, log lines and registry fields come from producers,
//! handlers and FFmpeg's messages about untrusted media. Printed raw, an ESC
//! or OSC sequence retitles, recolours or clears the operator's terminal and
//! a newline forges a line; U+202E and its kin reorder what is read. Every
//! human-readable output passes such text through [`safe`]; `--json` output
//! stays exact (serde escapes control characters there).

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character (C0, DEL, C1) and every bidirectional
/// override or isolate written as a visible escape (`\x1b`, `\n`,
/// `\u{202e}`), so it prints as one inert line.
pub(crate) fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        assert_eq!(safe("plain text é"), "plain text é");
        assert_eq!(safe("\u{1b}]0;pwned\u{7}"), "\\x1b]0;pwned\\x07");
        assert_eq!(safe("a\nb\rc"), "a\\nb\\rc");
        assert_eq!(safe("\u{9b}2J"), "\\x9b2J");
        assert_eq!(safe("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(safe("\u{7f}"), "\\x7f");
    }
}
