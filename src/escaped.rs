//! [`Escaped`]: bytes a peer sent, made safe to put in a log line.

use std::fmt::{self, Write as _};

/// Bytes shown with every control character escaped, for a log line: text
/// a peer sent can then neither end the line and forge the next one
/// (`\n`), go back to its start and overwrite it (`\r`), drive the terminal
/// that shows it (`ESC` sequences), nor reorder what is shown
/// (direction-changing characters).
///
/// * `\n`, `\r`, `\t` and NUL are shown as `\n`, `\r`, `\t`, `\0`; the
///   other ASCII controls and DEL as `\x1b`, `\x7f`; the C1 controls,
///   Unicode's line and paragraph separators and its direction-changing
///   characters as `\u{85}`, `\u{2028}`, `\u{202e}`;
/// * bytes that are not UTF-8 as `\xff`;
/// * everything else as it is, backslashes included: text escaped once is
///   unchanged by a second pass, so a line may be escaped where it is made
///   and again where it is logged. (A peer can send the two characters
///   `\n`; it can never send a line break.)
///
/// The library shows every peer-controlled text it logs this way (Unix
/// socket paths, the errors a handler returns, panic messages, PROXY
/// header errors); a handler that logs what a peer sent should too.
///
/// ```
/// use socketserver::Escaped;
///
/// let command = b"ls\n[ERROR] forged line\r\x1b[2K\xff";
/// assert_eq!(Escaped(command).to_string(), r"ls\n[ERROR] forged line\r\x1b[2K\xff");
/// assert_eq!(Escaped::text("café \u{202e}txt.exe").to_string(), r"café \u{202e}txt.exe");
/// let once = Escaped::text("a\nb").to_string();
/// assert_eq!(Escaped::text(&once).to_string(), once);
/// log::info!("ran `{}`", Escaped(command));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a [u8]);

impl<'a> Escaped<'a> {
    /// A string shown escaped.
    pub fn text(text: &'a str) -> Escaped<'a> {
        Escaped(text.as_bytes())
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let valid = chunk.valid();
            let mut start = 0;
            for (at, c) in valid.char_indices() {
                if needs_escape(c) {
                    f.write_str(&valid[start..at])?;
                    write_escape(f, c)?;
                    start = at + c.len_utf8();
                }
            }
            f.write_str(&valid[start..])?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        fmt::Display::fmt(self, f)?;
        f.write_char('"')
    }
}

/// Control characters (C0, DEL, C1), line and paragraph separators, and
/// the characters that change the direction of what follows.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn write_escape(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\0' => f.write_str("\\0"),
        c if c.is_ascii() => write!(f, "\\x{:02x}", c as u32),
        c => write!(f, "\\u{{{:x}}}", c as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_is_kept() {
        let shown = |b: &[u8]| Escaped(b).to_string();
        assert_eq!(shown(b"plain text: 100% \"ok\""), "plain text: 100% \"ok\"");
        assert_eq!(shown(b"a\nb\rc\td\0e"), r"a\nb\rc\td\0e");
        assert_eq!(shown(b"\x1b[31mred\x7f\x01"), r"\x1b[31mred\x7f\x01");
        assert_eq!(
            shown("\u{85}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}".as_bytes()),
            r"\u{85}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}"
        );
        assert_eq!(shown("日本語 é".as_bytes()), "日本語 é");
        assert_eq!(shown(b"\xff\xfeok\xc3"), r"\xff\xfeok\xc3");
        assert_eq!(shown(b"back\\slash"), r"back\slash");
        assert_eq!(shown(b""), "");
        assert!(!shown(&(0u8..=255).collect::<Vec<_>>()).chars().any(|c| c.is_control()));
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let all: Vec<u8> = (0u8..=255).chain("\u{2028}\u{202e}x\\n".bytes()).collect();
        let once = Escaped(&all).to_string();
        assert_eq!(Escaped::text(&once).to_string(), once);
        assert_eq!(format!("{:?}", Escaped(b"a\nb")), r#""a\nb""#);
    }
}
