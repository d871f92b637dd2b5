//! JSON string literals: the one escaper of the workspace (the etcd db export, `/health`,
//! the zap-style log lines, the benchmark reports). It lives here because every crate
//! that writes JSON by hand already depends on this one.
//!
//! Two styles, as the programs cairn imitates write them:
//! - [`JsonStyle::GoMarshal`], Go's `encoding/json` (etcd's member records, `/health`):
//!   `<`, `>`, `&`, U+2028 and U+2029 are escaped too (`\u003c` ...), so the text is safe
//!   inside HTML and JavaScript;
//! - [`JsonStyle::Plain`], zap's JSON encoder (etcd's logs) and most others: only what JSON
//!   requires.
//!
//! Both write `\"`, `\\`, `\n`, `\r`, `\t`, and every other control character below U+0020
//! as `\u00XX`; everything else, non-ASCII included, as it is (UTF-8). The input is a
//! `&str`, so it is valid UTF-8 by type: a caller holding bytes converts them with
//! `String::from_utf8_lossy`, whose U+FFFD for invalid sequences is what Go and zap write
//! for them too.

use std::fmt::Write as _;

/// Which characters beyond JSON's minimum are escaped (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    /// Go's `encoding/json`: also `<`, `>`, `&`, U+2028, U+2029.
    GoMarshal,
    /// Only what JSON requires (zap's encoder).
    Plain,
}

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str, style: JsonStyle) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_string(&mut out, s, style);
    out
}

/// Appends `s` to `out` as a JSON string literal, quotes included.
pub fn push_json_string(out: &mut String, s: &str, style: JsonStyle) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => escape_u(out, c),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style == JsonStyle::GoMarshal => escape_u(out, c),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn escape_u(out: &mut String, c: char) {
    // writing to a String cannot fail
    let _ = write!(out, "\\u{:04x}", u32::from(c));
}

#[cfg(test)]
mod tests {
    use super::*;
    use JsonStyle::{GoMarshal, Plain};

    #[test]
    fn quotes_backslash_and_control_characters() {
        for style in [GoMarshal, Plain] {
            assert_eq!(json_string("a\"b\\c", style), r#""a\"b\\c""#);
            assert_eq!(json_string("\n\r\t", style), r#""\n\r\t""#);
            assert_eq!(json_string("\u{0}\u{1}\u{8}\u{c}\u{1b}\u{1f}", style), r#""\u0000\u0001\u0008\u000c\u001b\u001f""#);
            assert_eq!(json_string("", style), r#""""#);
            // DEL and space are not control characters for JSON
            assert_eq!(json_string(" \u{7f}", style), "\" \u{7f}\"");
        }
    }

    #[test]
    fn non_ascii_is_written_as_utf8() {
        assert_eq!(json_string("é日本🦀", Plain), "\"é日本🦀\"");
        assert_eq!(json_string("é日本🦀", GoMarshal), "\"é日本🦀\"");
    }

    #[test]
    fn go_escapes_html_characters_and_line_separators() {
        assert_eq!(json_string("<a & b>\u{2028}\u{2029}", GoMarshal), r#""\u003ca \u0026 b\u003e\u2028\u2029""#);
        assert_eq!(json_string("<a & b>\u{2028}", Plain), "\"<a & b>\u{2028}\"");
    }

    #[test]
    fn invalid_utf8_arrives_as_the_replacement_character() {
        let lossy = String::from_utf8_lossy(b"k\xffv");
        assert_eq!(json_string(&lossy, Plain), "\"k\u{fffd}v\"");
    }

    #[test]
    fn every_output_parses_back_to_the_input() {
        // a JSON reader written for the test would share this module's mistakes; check the
        // shape instead: every backslash starts a known escape, and no raw control remains
        let all: String = (0u32..0x300).filter_map(char::from_u32).chain(['\u{2028}', '\u{2029}']).collect();
        for style in [GoMarshal, Plain] {
            let out = json_string(&all, style);
            assert!(!out.chars().any(|c| u32::from(c) < 0x20), "{style:?}");
            let inner = &out[1..out.len() - 1];
            let mut chars = inner.chars();
            let mut decoded = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => panic!("unescaped quote in {out:?}"),
                    '\\' => match chars.next() {
                        Some('"') => decoded.push('"'),
                        Some('\\') => decoded.push('\\'),
                        Some('n') => decoded.push('\n'),
                        Some('r') => decoded.push('\r'),
                        Some('t') => decoded.push('\t'),
                        Some('u') => {
                            let hex: String = chars.by_ref().take(4).collect();
                            decoded.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                        }
                        other => panic!("unknown escape {other:?}"),
                    },
                    c => decoded.push(c),
                }
            }
            assert_eq!(decoded, all, "{style:?}");
        }
    }
}
