//! A store URI as messages show it: without its password.

/// `uri` without its password (`user:secret@` and `password=` parameters), for messages.
pub fn redact(uri: &str) -> String {
    let mut out = uri.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon;
            out.replace_range(start..scheme_end + 3 + at, "");
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| !kv.starts_with("password="))
            .collect();
        out = format!("{base}{}", kept.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgresql://ann:s3cret@db.example/st?password=x&host=/run"),
            "postgresql://ann@db.example/st?host=/run"
        );
        assert_eq!(redact("postgresql:///st"), "postgresql:///st");
    }
}
