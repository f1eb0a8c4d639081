//! Text from users, made safe to show: every output (the terminal,
//! `summary.md`, `junit.xml`, `report.html`, `lab explore`'s lines) passes
//! names, descriptions, paths and reasons through [`visible`], and every
//! command line the lab prints for a person to paste is built by
//! [`shell_line`].
//!
//! Scenario names, descriptions and file names are input: a name holding
//! ESC could recolour or rewrite a terminal, a CR could overwrite the line
//! a reviewer reads, a bidi override (U+202E) could make `evil.toml` read
//! as something else, and a `'` in a path could end the quoting of a
//! replay line and run what follows when it is pasted.

use std::borrow::Cow;

/// Whether `c` is shown escaped by [`visible`]: C0 and C1 controls and
/// DEL (ESC, BEL, CR, NUL, newline, tab...), and the invisible formatting
/// characters that reorder or hide text: the bidi marks, embeddings,
/// overrides and isolates (U+061C, U+200E, U+200F, U+202A to U+202E,
/// U+2066 to U+2069), zero-width characters (U+200B to U+200D, U+2060 to
/// U+2064, U+FEFF), the line and paragraph separators (U+2028, U+2029),
/// the interlinear annotation characters (U+FFF9 to U+FFFB) and the tag
/// characters (U+E0000 to U+E007F).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// `s` with every [`is_hidden`] character written as a visible Rust-style
/// escape (`\u{1b}` for ESC, `\u{202e}` for a right-to-left override), on
/// one line. Everything else, backslashes included, is left as it is: the
/// result is for people to read, never parsed back. Borrowed when there
/// is nothing to escape.
pub fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A command line for a POSIX shell: each word quoted by the `shlex` crate
/// where it needs quoting, so that `sh -c` runs the command with exactly
/// these words as its arguments, whatever quotes, `$(...)`, backquotes or
/// spaces they hold.
///
/// The line is exact, control characters included (inside quotes): store
/// it as data (`results.json`), and pass it through [`visible`] before a
/// person sees it. A NUL, which no argument of a real command line can
/// hold, is written as `\u{0}`.
pub fn shell_line<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    let words: Vec<Cow<'a, str>> = words
        .into_iter()
        .map(|w| if w.contains('\0') { Cow::Owned(w.replace('\0', "\\u{0}")) } else { Cow::Borrowed(w) })
        .collect();
    // Without a NUL, quoting cannot fail; the fallback only keeps this total.
    shlex::try_join(words.iter().map(|w| w.as_ref())).unwrap_or_else(|_| "''".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped_visibly() {
        let hostile = "a\u{1b}[31mred\u{7}\rcr\0nul\u{202e}txt.exe\u{2066}x\u{2069}\u{200b}\u{85}\u{e0041}\u{2028}";
        let shown = visible(hostile);
        assert_eq!(
            shown,
            "a\\u{1b}[31mred\\u{7}\\u{d}cr\\u{0}nul\\u{202e}txt.exe\\u{2066}x\\u{2069}\\u{200b}\\u{85}\\u{e0041}\\u{2028}"
        );
        assert!(!shown.chars().any(is_hidden), "{shown}");
        for c in ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{2067}', '\u{2068}', '\u{200e}', '\u{200f}'] {
            assert!(is_hidden(c), "{c:?}");
        }
        assert_eq!(visible("line\nnext\ttab"), "line\\u{a}next\\u{9}tab");
    }

    #[test]
    fn ordinary_text_is_left_alone_and_borrowed() {
        for s in ["boot-to-login", "Ünïcödé ✅ 日本語", r"\device\harddiskvolume3\x.exe", "a'b\"c$d"] {
            assert!(matches!(visible(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn shell_lines_round_trip_through_a_shell_parser() {
        let hostile = [
            "x/a'$(touch PWNED)'b.toml",
            "k=x'$(touch PWNED)'y",
            "`touch PWNED`",
            "a b\tc\nd",
            "\"; touch PWNED; \"",
            "$HOME",
            "back\\slash",
            "",
            "^caret !bang {a,b} *glob? ~tilde #hash",
            "esc\u{1b}[31m",
            "ünï\u{a0}code",
        ];
        for word in hostile {
            let line = shell_line(["lab", "replay", word, "--seed", "7"]);
            let back = shlex::split(&line).unwrap_or_else(|| panic!("{line} does not parse"));
            assert_eq!(back, ["lab", "replay", word, "--seed", "7"], "{line}");
        }
        // Plain words stay plain.
        assert_eq!(
            shell_line(["lab", "replay", "scenarios/boot-to-login.toml", "--seed", "7"]),
            "lab replay scenarios/boot-to-login.toml --seed 7"
        );
    }

    #[test]
    fn a_nul_is_written_visibly_instead_of_failing() {
        assert_eq!(shlex::split(&shell_line(["a\0b"])).unwrap(), ["a\\u{0}b"]);
    }

    #[test]
    fn a_visible_shell_line_still_runs_nothing() {
        // Escaping a line for display adds only backslashes, braces and
        // hex digits: no quote, `$` or backquote that could end its quoting.
        let line = shell_line(["lab", "replay", "a'\u{1b}$(x)\u{202e}'"]);
        let shown = visible(&line);
        let words = shlex::split(&shown).unwrap();
        assert_eq!(words, ["lab", "replay", "a'\\u{1b}$(x)\\u{202e}'"]);
    }
}
