//! Where lines go: stdout as plain flushed lines (so that a reader on the other end of a pipe
//! sees each at once), problems to stderr, or, in a version-2 session in a terminal, above the
//! line being edited (see [`crate::ui::terminal`]).

use std::io::Write;

use crate::error::ClientError;

/// Something that shows whole lines to the user, in order.
pub trait Screen {
    /// Shows one line (without its line ending).
    fn show(&self, line: &str) -> Result<(), ClientError>;

    /// Shows an error the user should see, apart from the transcript where there is a place
    /// for that.
    fn problem(&self, line: &str) -> Result<(), ClientError> {
        self.show(line)
    }

    /// The members' names changed: a terminal completes them.
    fn names(&self, _names: &[String]) {}
}

/// Standard output, one flushed line each: what pipes and scripts read.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainScreen;

impl Screen for PlainScreen {
    fn show(&self, line: &str) -> Result<(), ClientError> {
        print_line(line)
    }

    /// On stderr, like every other error of a plain session.
    fn problem(&self, line: &str) -> Result<(), ClientError> {
        print_problem(line);
        Ok(())
    }
}

/// Prints one line to stdout and flushes it.
pub fn print_line(line: &str) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(ClientError::Output)
}

/// Prints a sentence for the user on stderr; there is nowhere left to report a failure to.
pub fn print_problem(sentence: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{sentence}").and_then(|()| stderr.flush());
}
