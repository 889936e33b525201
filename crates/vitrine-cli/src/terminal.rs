//! The binary's reporter: a live bar per epoch on a terminal, plain lines in CI and pipes.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use vitrine_core::reporter::{Progress, Reporter};

/// Prints what the libraries report. Log lines go to stdout, or to stderr when stdout carries
/// JSON; warnings always go to stderr.
pub struct Terminal {
    live: bool,
    json: bool,
}

impl Terminal {
    /// `json`: stdout is reserved for a command's JSON answer.
    pub fn new(json: bool) -> Self {
        Self { live: std::io::stderr().is_terminal(), json }
    }
}

impl Reporter for Terminal {
    fn info(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn warn(&self, line: &str) {
        eprintln!("warning: {line}");
    }

    fn progress(&self, title: &str, len: usize) -> Box<dyn Progress> {
        if !self.live {
            return Box::new(Bar(None));
        }
        // Vitrine's one bar look: `   epoch 3/10 [=====>    ] 120/422 loss 0.41 (12s < 30s)`.
        let bar = ProgressBar::new(len as u64);
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})").expect("valid template");
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(title.to_string());
        Box::new(Bar(Some(bar)))
    }
}

/// A live bar, or nothing where no one watches it move.
struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn set(&self, position: usize) {
        if let Some(bar) = &self.0 {
            bar.set_position(position as u64);
        }
    }

    fn message(&self, text: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(text);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
