//! Where a version-2 session's lines go: stdout as plain flushed lines, or above the line
//! being edited in a terminal (see [`crate::terminal`]).

use crate::display::{print_line, print_problem};
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
