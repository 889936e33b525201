//! How libraries tell a person what is happening. The libraries call a [`Reporter`]; only the
//! binary decides what that looks like (a live bar on a terminal, plain lines in a log).

use std::sync::Mutex;

/// Where training and evaluation send their log lines and progress.
pub trait Reporter: Send + Sync {
    /// A line of the run's log: what was loaded, each epoch's summary, the test scores.
    fn info(&self, line: &str);
    /// Something the user should notice but that does not stop the work.
    fn warn(&self, line: &str);
    /// A bar over `len` steps of `title` (an epoch, decoding images).
    fn progress(&self, title: &str, len: usize) -> Box<dyn Progress>;
}

/// One bar; dropped or [`Progress::finish`]ed when the work is done.
pub trait Progress: Send + Sync {
    /// Moves the bar to `position` steps done.
    fn set(&self, position: usize);
    /// The status beside the bar, such as `loss 0.41 acc 86.2% 310/s`.
    fn message(&self, text: String);
    /// Removes the bar.
    fn finish(&self) {}
}

/// Says nothing: for tests and library use where nobody watches.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

struct NoBar;

impl Progress for NoBar {
    fn set(&self, _: usize) {}
    fn message(&self, _: String) {}
}

impl Reporter for Silent {
    fn info(&self, _: &str) {}
    fn warn(&self, _: &str) {}
    fn progress(&self, _: &str, _: usize) -> Box<dyn Progress> {
        Box::new(NoBar)
    }
}

/// Keeps every line, for tests that check what a run said.
#[derive(Debug, Default)]
pub struct Collect {
    lines: Mutex<Vec<String>>,
}

impl Collect {
    /// Everything said so far, warnings prefixed with `warning: `.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("not poisoned").clone()
    }
}

impl Reporter for Collect {
    fn info(&self, line: &str) {
        self.lines.lock().expect("not poisoned").push(line.to_string());
    }
    fn warn(&self, line: &str) {
        self.lines.lock().expect("not poisoned").push(format!("warning: {line}"));
    }
    fn progress(&self, _: &str, _: usize) -> Box<dyn Progress> {
        Box::new(NoBar)
    }
}
