//! Progress on long work: a live bar on a terminal, one plain line per epoch elsewhere.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows how an epoch is going.
pub struct Progress {
    live: bool,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A live bar when stderr is a terminal; plain lines in CI and pipes.
    pub fn new() -> Self {
        Self { live: std::io::stderr().is_terminal(), bar: None }
    }

    pub fn start(&mut self, title: &str, steps: usize) {
        if self.live {
            self.bar = Some(styled_bar(title, steps, true));
        }
    }

    /// Moves the bar to `step`.
    pub fn tick(&self, step: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
        }
    }

    /// Sets the status beside the bar, such as `loss 0.41 acc 86.2% 310/s`.
    pub fn status(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// Ends the bar and prints the epoch's summary line (to stdout, so logs keep it).
    pub fn finish(&mut self, summary: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!("{summary}");
    }
}

/// A counter bar for one long step (decoding images, ...): live on a terminal, hidden elsewhere.
pub fn counter(title: &str, len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    styled_bar(title, len, false)
}

/// Vitrine's one bar look: `   epoch 3/10 [=====>    ] 120/422 loss 0.41 (12s < 30s)`.
fn styled_bar(title: &str, len: usize, with_message: bool) -> ProgressBar {
    let template = if with_message {
        "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})"
    } else {
        "{prefix:>12} [{bar:30}] {pos}/{len} ({elapsed} < {eta})"
    };
    let bar = ProgressBar::new(len as u64);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar.set_prefix(title.to_string());
    bar
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
