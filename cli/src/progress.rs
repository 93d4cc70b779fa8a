//! A progress bar for long backend steps when stderr is a terminal, and nothing otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use snaptree_engine::Progress;

/// Receives the engine's progress reports.
pub struct Bar(Option<ProgressBar>);

/// A bar labelled `what`, hidden unless stderr is a terminal.
pub fn bar(what: &str) -> Bar {
    if !std::io::stderr().is_terminal() {
        return Bar(None);
    }
    let pb = ProgressBar::new(1000);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {percent:>3}%") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    Bar(Some(pb))
}

impl Bar {
    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn report(&mut self, fraction: f64) -> bool {
        if let Some(pb) = &self.0 {
            pb.set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
        }
        true
    }
}
