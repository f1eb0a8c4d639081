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

    /// Converts a TOML parse or type error, keeping its position.
    pub fn toml_error(&self, err: &toml::de::Error) -> InputError {
        self.error(err.span(), err.message().trim_end().to_string())
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
    fn serde_paths_split_into_keys() {
        assert_eq!(split_serde_path("gateway.apps[0].name"), ["gateway", "apps", "0", "name"]);
        assert_eq!(split_serde_path("sim"), ["sim"]);
    }
}
