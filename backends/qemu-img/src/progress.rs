//! Parsing the `-p` progress records qemu-img writes to stdout.
//!
//! Even without a terminal qemu-img writes records like `    (12.00/100%)\r`; the last one is
//! followed by `\n` and possibly a sentence such as `Image committed.`.

/// Splits a byte stream into records and forwards the fractions found in them.
#[derive(Default)]
pub(crate) struct ProgressSplitter {
    pending: Vec<u8>,
    last: Option<f64>,
}

impl ProgressSplitter {
    /// Consumes a chunk of stdout, calling `progress` for each complete record.
    pub(crate) fn feed(&mut self, chunk: &[u8], progress: &mut dyn FnMut(f64)) {
        for &byte in chunk {
            if byte == b'\r' || byte == b'\n' {
                // qemu-img repeats records (e.g. 100% several times); forward changes only.
                if let Some(fraction) =
                    parse_record(&self.pending).filter(|&f| self.last != Some(f))
                {
                    self.last = Some(fraction);
                    progress(fraction);
                }
                self.pending.clear();
            } else {
                self.pending.push(byte);
            }
        }
    }
}

/// Guarantees callers a final `1.0` once the command has succeeded.
///
/// qemu-img normally prints `(100.00/100%)` itself, but an operation with nothing to copy may
/// print fewer records, and callers rely on seeing completion.
pub(crate) fn report_final(splitter: &ProgressSplitter, progress: &mut dyn FnMut(f64)) {
    if splitter.last != Some(1.0) {
        progress(1.0);
    }
}

/// The fraction in one record such as `    (12.00/100%)`, if it is one.
pub(crate) fn parse_record(record: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(record).ok()?.trim();
    let inner = text.strip_prefix('(')?.strip_suffix("/100%)")?;
    let percent: f64 = inner.parse().ok()?;
    percent
        .is_finite()
        .then(|| (percent / 100.0).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_split_across_chunks() {
        let mut seen = Vec::new();
        let mut splitter = ProgressSplitter::default();
        let mut cb = |f: f64| seen.push(f);
        splitter.feed(b"    (0.00/100%)\r    (0.00/100%)\r    (50.", &mut cb);
        splitter.feed(
            b"00/100%)\r    (100.00/100%)\r\nImage committed.\n",
            &mut cb,
        );
        report_final(&splitter, &mut cb);
        assert_eq!(seen, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn adds_final_record_when_missing() {
        let mut seen = Vec::new();
        let splitter = ProgressSplitter::default();
        report_final(&splitter, &mut |f| seen.push(f));
        assert_eq!(seen, vec![1.0]);
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(parse_record(b"Image committed."), None);
        assert_eq!(parse_record(b"(12.5/100%)"), Some(0.125));
    }
}
