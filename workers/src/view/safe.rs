//! Text that came from a request or a server, made safe to print on a terminal.
//!
//! Job labels, errors, notes, install output, DLQ bodies and reasons and inventory fields
//! are written by whoever sent a request or answered a call. Printed raw, an `ESC` in them
//! drives the operator's terminal (clears it, rewrites earlier lines, sets its title); a
//! newline forges a table row. Every text view passes such text through [`printable`];
//! JSON output needs nothing more, because `serde_json` writes every control character
//! as a `\u` escape.

use std::borrow::Cow;

/// Whether `c` is a control character a terminal may act on: C0 (U+0000–U+001F, newline
/// and tab included), DEL (U+007F) and C1 (U+0080–U+009F, which some terminals read as
/// escape sequences of their own).
fn is_control(c: char) -> bool {
    c.is_control()
}

/// `s` with every control character written as the visible escape `\xNN` (ESC shows as
/// `\x1b`); everything else, any other Unicode included, unchanged. Applying it twice
/// changes nothing more, so a view may pass text through it without knowing whether a
/// helper already did.
pub(crate) fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`printable`] on one line: line breaks and tabs become spaces first (an error's second
/// line reads fine after its first), every other control character is escaped.
pub(crate) fn one_line(s: &str) -> String {
    let spaced: String = s
        .chars()
        .map(|c| {
            if matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    printable(&spaced).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_is_escaped_and_nothing_else() {
        assert_eq!(printable("\u{1b}[2J"), "\\x1b[2J");
        assert_eq!(printable("a\nb\tc\rd\0e"), "a\\x0ab\\x09c\\x0dd\\x00e");
        assert_eq!(printable("del\u{7f}"), "del\\x7f");
        // C1: CSI (U+009B) is a one-character ESC [ on some terminals; NEL, OSC too.
        assert_eq!(printable("\u{9b}2J\u{85}\u{9d}"), "\\x9b2J\\x85\\x9d");
        for c in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(c).unwrap();
            let out = printable(&c.to_string()).into_owned();
            assert!(!out.chars().any(|o| o.is_control()), "{c:?} -> {out:?}");
        }
        for kept in [
            "web-cert",
            "Environment=Production web",
            "é ü 証明書 ✓",
            "…",
            "\\x1b",
        ] {
            assert_eq!(printable(kept), kept);
        }
    }

    #[test]
    fn escaping_is_idempotent_and_one_line_keeps_words_apart() {
        let once = printable("x\u{1b}]0;pwned\u{7}y").into_owned();
        assert_eq!(printable(&once), once);
        assert_eq!(
            one_line("first\nsecond\tthird\u{1b}[1A"),
            "first second third\\x1b[1A"
        );
    }

    /// Every text view of a job whose label, error, note and install output hold terminal
    /// escapes prints them escaped; the JSON views print them as `\u001b`.
    #[test]
    fn the_views_print_hostile_text_escaped() {
        use crate::testing::{event, job};
        use crate::view;
        use engine::{EventKind, JobStatus};

        let mut rec = job("j-1", JobStatus::Failed);
        rec.labels.insert("CertName".into(), "\u{1b}[2J".into());
        rec.labels
            .insert("Target".into(), "Env=\u{1b}]0;owned\u{7}".into());
        rec.last_error = Some("failed\n\u{1b}[1A\u{9b}K".into());
        rec.data = serde_json::json!({
            "serial": "\u{1b}[31m",
            "instances": {"i-1\u{1b}[2J": {"status": "Failed", "detail": "out\u{1b}[2J"}}
        });
        let mut e = event(1, 0, EventKind::Failed, "check");
        e.error = Some("\u{1b}[2J".into());
        e.note = Some("\u{7f}".into());
        let history = [e.clone()];
        let kid = view::ChildView {
            job_id: "c\u{1b}".into(),
            target: "t\u{1b}".into(),
            cert_name: "n\u{1b}".into(),
            status: "FAILED".into(),
            step: Some("s\u{1b}".into()),
            last_error: Some("e\u{1b}[2J".into()),
        };
        let texts = [
            view::job_text(&rec, &history, std::slice::from_ref(&kid)),
            view::jobs_table(std::slice::from_ref(&rec)),
            view::job_list_text(
                std::slice::from_ref(&rec),
                Some("c\u{1b}"),
                &[],
                Some("a\u{1b}"),
            ),
            view::event_line(&e),
            view::timeline(&history),
            view::instances_table(&rec).unwrap_or_default(),
        ];
        for text in &texts {
            let bad: Vec<char> = text
                .chars()
                .filter(|c| c.is_control() && *c != '\n')
                .collect();
            assert!(bad.is_empty(), "{bad:?} in {text}");
        }
        assert!(
            texts[0].contains("CertName        \\x1b[2J"),
            "{}",
            texts[0]
        );
        assert!(texts[1].contains("\\x1b[2J"), "{}", texts[1]);
        for json in [
            view::job_json(&rec),
            view::job_detail_json(&rec, &history, &[kid]),
        ] {
            let text = serde_json::to_string_pretty(&json).unwrap();
            assert!(!text.contains('\u{1b}'), "{text}");
            assert!(text.contains("\\u001b[2J"), "{text}");
        }
    }
}
