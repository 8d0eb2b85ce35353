//! The conffile's syntax, read strictly where a typo would change what runs: each line is
//! empty, a `#` or `;` comment, a `[section]`, or `key = value`. Anything else is an error
//! naming the line and the fix, never a guess:
//! - a UTF-8 byte order mark at the start is accepted (Windows editors write one);
//! - a line without `=` (`key: value`, a bare word) is an error;
//! - a comment after a value (`settle = 5s # longer`) is an error: comments go on their own line;
//! - there are no escapes and no quotes: `\` and `"` are part of the value;
//! - a key set twice in a section of one file is an error naming both lines;
//! - a key before any `[section]` is an error;
//! - a control character other than a tab (a stray CR inside a line, a NUL) is an error.
//!
//! Pure over `&str`; the reader in `mod.rs` adds the file name.

use std::collections::HashMap;

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// 1-based line number.
    pub line: usize,
    pub section: &'a str,
    pub key: &'a str,
    /// Trimmed of surrounding blanks, otherwise as written.
    pub value: &'a str,
}

/// What is wrong with a line and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub what: String,
    pub fix: String,
}

/// Split config text into its entries, in file order.
pub fn parse(text: &str) -> Result<Vec<Entry<'_>>, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut section: Option<&str> = None;
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |what: String, fix: String| Err(SyntaxError { line, what, fix });
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(c) = trimmed.chars().find(|c| c.is_control() && *c != '\t') {
            return err(
                format!("a control character (U+{:04X}) in '{}'", u32::from(c), trimmed.escape_default()),
                "remove it: a path or unit name never holds one (a stray CR or NUL from an editor or a script)".into(),
            );
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = match rest.strip_suffix(']') {
                Some(name) if is_name(name.trim()) => name.trim(),
                _ => return err(
                    format!("'{trimmed}' is not a section header"),
                    "write the section name alone in brackets on its own line, such as [services]"
                        .into(),
                ),
            };
            section = Some(name);
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            let fix = match trimmed.split_once(':') {
                Some((k, v)) => format!("write '{} = {}'", k.trim(), v.trim()),
                None => {
                    "write 'key = value', or start the line with '#' to make it a comment".into()
                }
            };
            return err(format!("'{trimmed}' has no '='"), fix);
        };
        let (key, value) = (key.trim(), value.trim());
        if !is_name(key) {
            let fix = match key.split_once(':') {
                Some((k, _)) if is_name(k.trim()) => {
                    format!("write '{} = ...' with '=' and no ':'", k.trim())
                }
                _ => "a key is letters, digits and '-' (such as boot-wait), then '=' and the value"
                    .into(),
            };
            return err(format!("'{key}' is not a key name"), fix);
        }
        let Some(section) = section else {
            return err(
                format!("'{key}' is set before any [section]"),
                "put it under its section, such as [services]; see the conffile for where each key goes"
                    .into(),
            );
        };
        if let Some(at) = inline_comment(value) {
            return err(
                format!(
                    "[{section}] {key} has a comment after its value: '{value}'"
                ),
                format!(
                    "comments go on their own line: write '{key} = {}' and put '{}' on the line above",
                    value[..at].trim_end(),
                    &value[at..]
                ),
            );
        }
        if let Some(first) = seen.insert((section, key), line) {
            return err(
                format!("[{section}] {key} is set twice, at lines {first} and {line}"),
                "keep one of them: in one file a key is set once (a drop-in in /etc/k8s-nokmem/conf.d/ overrides the conffile)"
                    .into(),
            );
        }
        entries.push(Entry {
            line,
            section,
            key,
            value,
        });
    }
    Ok(entries)
}

/// Section and key names: ASCII letters, digits, `-`, `_` and `.`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Where a `#` or `;` comment starts in a value: at its start or after a blank.
fn inline_comment(value: &str) -> Option<usize> {
    let bytes = value.as_bytes();
    bytes.iter().enumerate().find_map(|(i, b)| {
        let starts = matches!(b, b'#' | b';');
        let after_blank = i == 0 || matches!(bytes[i - 1], b' ' | b'\t');
        (starts && after_blank).then_some(i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let text = "\u{feff}# comment\n; comment\n\n[services]\r\n  settle = 5s  \r\n\
                    [runc]\nrestart = a\\x2db.service\npath=/usr/bin/x#1\n[services]\ntimeout = 1s\n";
        let got: Vec<_> = parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.line, e.section, e.key, e.value))
            .collect();
        assert_eq!(
            got,
            vec![
                (5, "services", "settle", "5s"),
                (7, "runc", "restart", "a\\x2db.service"),
                (8, "runc", "path", "/usr/bin/x#1"),
                (10, "services", "timeout", "1s"),
            ]
        );
    }

    #[test]
    fn refused_forms_name_the_line_and_the_fix() {
        // (case, text, line, words of what, words of the fix)
        let cases = [
            (
                "colon",
                "[services]\n\nsettle: 5s\n",
                3,
                "no '='",
                "write 'settle = 5s'",
            ),
            (
                "bare word",
                "[services]\nsettle\n",
                2,
                "'settle' has no '='",
                "key = value",
            ),
            (
                "colon before an equals",
                "[runc]\nrestart: a=b\n",
                2,
                "'restart: a' is not a key name",
                "write 'restart = ...'",
            ),
            (
                "inline hash",
                "[services]\nsettle = 5s # longer\n",
                2,
                "comment after its value",
                "write 'settle = 5s' and put '# longer' on the line above",
            ),
            (
                "inline semicolon",
                "[runc]\nrestart = docker.service ;x\n",
                2,
                "comment after its value",
                "'restart = docker.service'",
            ),
            (
                "only a comment",
                "[runc]\nrestart = # none\n",
                2,
                "comment after its value",
                "write 'restart = '",
            ),
            (
                "duplicate",
                "[services]\ntimeout = 1s\n[kernel]\ncmdline = auto\n[services]\ntimeout = 2s\n",
                6,
                "[services] timeout is set twice, at lines 2 and 6",
                "keep one",
            ),
            (
                "no section",
                "timeout = 1s\n",
                1,
                "before any [section]",
                "[services]",
            ),
            (
                "open section",
                "[services\n",
                1,
                "not a section header",
                "[services]",
            ),
            (
                "junk after section",
                "[services] x\n",
                1,
                "not a section header",
                "[services]",
            ),
            (
                "no key",
                "[services]\n= 5s\n",
                2,
                "is not a key name",
                "letters, digits",
            ),
            (
                "carriage return inside a value",
                "[runc]\npath = /usr/bin/ru\rnc\n",
                2,
                "control character (U+000D) in 'path = /usr/bin/ru\\rnc'",
                "remove it",
            ),
        ];
        for (case, text, line, what, fix) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.line == line && err.what.contains(what) && err.fix.contains(fix),
                "case '{case}': {err:?}"
            );
        }
    }
}
