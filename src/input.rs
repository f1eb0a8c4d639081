//! Reading the files users write (labs, scenarios): errors that name the
//! file, line and column.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// An error in an input file, rendered as `file:line:col: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", self.file, line, col, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for InputError {}

/// The text of one input file, for locating errors in it.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file, as the user named it.
    pub name: String,
    /// Its contents.
    pub text: String,
}

impl Source {
    /// Wraps a file's name and contents.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source { name: name.into(), text: text.into() }
    }

    /// An error at byte offset range `span` (or for the whole file).
    pub fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> InputError {
        InputError {
            file: self.name.clone(),
            position: span.map(|s| line_col(&self.text, s.start)),
            message: message.into(),
        }
    }

    /// Converts a TOML parse or type error, keeping its position. toml
    /// reports a dotted key or table header of too many keys (its recursion
    /// limit, 80) without one: that error is placed at the file's deepest
    /// dotted key.
    pub fn toml_error(&self, err: &toml::de::Error) -> InputError {
        let message = err.message().trim_end();
        match err.span() {
            Some(span) => self.error(Some(span), message.to_string()),
            None if message == "recursion limit" => self.error(
                deepest_dotted_key(&self.text),
                "too deeply nested: a dotted key or table header of more keys than toml's limit (80)",
            ),
            None => self.error(None, message.to_string()),
        }
    }

    /// Finds the span of the value at `path` (table keys, or array indices
    /// written as decimal strings) in this file's TOML, if it is there.
    pub fn locate(&self, path: &[String]) -> Option<Range<usize>> {
        let doc = DeTable::parse(&self.text).ok()?;
        let mut table: &DeTable<'_> = doc.get_ref();
        let mut span = None;
        let mut value: Option<&DeValue<'_>> = None;
        for key in path {
            match value {
                None => {}
                Some(DeValue::Table(t)) => table = t,
                Some(DeValue::Array(a)) => {
                    let i: usize = key.parse().ok()?;
                    let item = a.get(i)?;
                    span = Some(item.span());
                    value = Some(item.get_ref());
                    continue;
                }
                Some(_) => return span,
            }
            let (k, v) = table.get_key_value(key.as_str())?;
            span = Some(k.span());
            value = Some(v.get_ref());
        }
        span
    }
}

/// The largest scenario or lab file the lab reads: 1 MiB. The largest
/// shipped scenario is under 10 KiB; the limit is checked before a file
/// is read whole, so a huge or endless file (`/dev/zero`) costs nothing.
pub const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// Why an input file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// It was read, but is too large or not UTF-8 (located).
    #[error("{0}")]
    Invalid(InputError),
}

impl ReadError {
    /// As an [`InputError`] naming `file`.
    pub fn into_input_error(self, file: &str) -> InputError {
        match self {
            ReadError::Io(e) => {
                InputError { file: file.to_string(), position: None, message: format!("cannot read: {e}") }
            }
            ReadError::Invalid(e) => e,
        }
    }
}

/// Reads the input file at `path` (named `name` in errors): at most
/// [`MAX_INPUT_BYTES`], checked before reading it whole, and UTF-8 (an
/// invalid byte is reported at its line and column).
pub fn read_source(path: &std::path::Path, name: &str) -> Result<Source, ReadError> {
    use std::io::Read;
    let too_large = |size: String| {
        ReadError::Invalid(InputError {
            file: name.to_string(),
            position: None,
            message: format!("{size}: scenario and lab files are limited to {} bytes (1 MiB)", MAX_INPUT_BYTES),
        })
    };
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(ReadError::Io(std::io::Error::other("it is a folder")));
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(too_large(format!("the file is {} bytes", meta.len())));
    }
    // The size on disk can lie (a pipe, a device, a file that grows).
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_large(format!("the file is over {MAX_INPUT_BYTES} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or("");
        ReadError::Invalid(InputError {
            file: name.to_string(),
            position: Some(line_col(prefix, valid)),
            message: format!(
                "not UTF-8 text: invalid byte 0x{:02x} (scenario and lab files are UTF-8)",
                bytes.get(valid).copied().unwrap_or(0)
            ),
        })
    })?;
    Ok(Source::new(name, text))
}

/// The span of the dotted key with the most keys in `text` (by toml's own
/// lexer, so strings and comments are skipped), if there is one.
fn deepest_dotted_key(text: &str) -> Option<Range<usize>> {
    use toml_parser::lexer::TokenKind;
    let mut deepest: Option<(usize, Range<usize>)> = None;
    // The key being read: where it starts, where its last part ends, its dots.
    let mut key: Option<(usize, usize, usize)> = None;
    for token in toml_parser::Source::new(text).lex() {
        let span = token.span();
        match (token.kind(), &mut key) {
            (TokenKind::Atom | TokenKind::BasicString | TokenKind::LiteralString, Some((_, end, _))) => {
                *end = span.end()
            }
            (TokenKind::Atom | TokenKind::BasicString | TokenKind::LiteralString, None) => {
                key = Some((span.start(), span.end(), 0))
            }
            (TokenKind::Dot, Some((_, _, dots))) => *dots += 1,
            (TokenKind::Whitespace, _) => {}
            _ => {
                if let Some((start, end, dots)) = key.take()
                    && dots > 0
                    && deepest.as_ref().is_none_or(|(most, _)| dots > *most)
                {
                    deepest = Some((dots, start..end));
                }
            }
        }
    }
    deepest.map(|(_, span)| span)
}

/// 1-based line and column (in characters) of byte offset `at`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..floor_char_boundary(text, at)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Splits a serde path such as `gateway.apps[0].name` into its keys
/// (`["gateway", "apps", "0", "name"]`).
pub fn split_serde_path(path: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        while let Some(open) = rest.find('[') {
            if open > 0 {
                keys.push(rest[..open].to_string());
            }
            let close = rest[open..].find(']').map(|c| open + c).unwrap_or(rest.len());
            keys.push(rest[open + 1..close].to_string());
            rest = rest.get(close + 1..).unwrap_or("");
        }
        if !rest.is_empty() && rest != "?" {
            keys.push(rest.to_string());
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }

    #[test]
    fn locates_nested_keys_and_array_items() {
        let src = Source::new("x.toml", "[gateway]\nleeway = \"5s\"\n\n[[gateway.apps]]\nname = \"chat\"\n");
        let span = src.locate(&["gateway".into(), "leeway".into()]).unwrap();
        assert_eq!(line_col(&src.text, span.start), (2, 1));
        let span = src.locate(&["gateway".into(), "apps".into(), "0".into(), "name".into()]).unwrap();
        assert_eq!(line_col(&src.text, span.start), (5, 1));
        assert!(src.locate(&["nope".into()]).is_none());
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: 50 MiB on paper, nothing on disk.
        file.set_len(50 * 1024 * 1024).unwrap();
        let err = read_source(&path, "big.toml").unwrap_err().into_input_error("big.toml");
        assert_eq!(
            err.to_string(),
            "big.toml: the file is 52428800 bytes: scenario and lab files are limited to 1048576 bytes (1 MiB)"
        );
        // Exactly at the limit is fine.
        file.set_len(MAX_INPUT_BYTES).unwrap();
        assert!(read_source(&path, "big.toml").is_ok());
    }

    #[test]
    fn an_endless_stream_is_cut_at_the_limit() {
        let err = read_source(std::path::Path::new("/dev/zero"), "zero").unwrap_err().into_input_error("zero");
        assert!(err.message.contains("over 1048576 bytes"), "{err}");
    }

    #[test]
    fn invalid_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.toml");
        std::fs::write(&path, b"name = \"ok\"\ndescription = \"caf\xe9\"\n").unwrap();
        let err = read_source(&path, "latin1.toml").unwrap_err().into_input_error("latin1.toml");
        assert_eq!(err.position, Some((2, 19)), "{err}");
        assert!(err.to_string().starts_with("latin1.toml:2:19: not UTF-8 text: invalid byte 0xe9"), "{err}");
    }

    #[test]
    fn a_missing_file_says_so() {
        let err = read_source(std::path::Path::new("/nonexistent/x.toml"), "x.toml").unwrap_err();
        assert!(matches!(err, ReadError::Io(_)));
        assert!(err.into_input_error("x.toml").to_string().starts_with("x.toml: cannot read: "));
    }

    #[test]
    fn serde_paths_split_into_keys() {
        assert_eq!(split_serde_path("gateway.apps[0].name"), ["gateway", "apps", "0", "name"]);
        assert_eq!(split_serde_path("sim"), ["sim"]);
    }
}
