//! Validation of snapshot and domain names.

use crate::error::{Error, Result};

/// The longest name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a snapshot or domain name: 1 to 255 bytes of UTF-8, no `/`, no control
/// characters, not `.` or `..`, no leading or trailing white space.
///
/// Names end up in paths, logs and terminals of other programs, which is why the rules
/// are stricter than libvirt's test driver.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "is {} bytes long, more than {MAX_NAME_BYTES}",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some("is a path component".to_string())
    } else if name.contains('/') {
        Some("contains '/'".to_string())
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        Some(format!("contains the control character U+{:04X}", c as u32))
    } else if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        Some("begins or ends with white space".to_string())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidArg(format!(
            "{kind} name {} {reason}",
            shown(name)
        ))),
    }
}

/// A name made safe to show in a message: quoted, control characters escaped, long
/// names shortened.
pub fn shown(name: &str) -> String {
    let mut out = String::from("'");
    for (i, c) in name.chars().enumerate() {
        if i == 64 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a",
            "my snap name",
            "1386166249",
            "é",
            "a.b",
            "...",
            &"x".repeat(255),
        ] {
            validate_name("snapshot", ok)
                .unwrap_or_else(|e| panic!("expected {ok:?} accepted: {e}"));
        }
    }

    #[test]
    fn refuses_each_bad_name_with_its_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            (".", "path component"),
            ("..", "path component"),
            ("../../etc/x", "contains '/'"),
            ("a/b", "contains '/'"),
            ("a\0b", "U+0000"),
            ("a\nb", "U+000A"),
            ("a\u{7f}", "U+007F"),
            (" a", "white space"),
            ("a ", "white space"),
            ("   ", "white space"),
        ];
        for (name, reason) in cases {
            let err = validate_name("snapshot", name).expect_err(name);
            assert!(
                err.to_string().contains(reason),
                "{name:?}: expected {reason:?} in {err}"
            );
            assert_eq!(err.code(), crate::ErrorCode::InvalidArg);
        }
        let long = "y".repeat(10_000);
        let err = validate_name("snapshot", &long).unwrap_err();
        assert!(err.to_string().contains("10000 bytes"), "{err}");
        assert!(
            err.to_string().len() < 200,
            "a long name is shortened in the message: {err}"
        );
    }
}
