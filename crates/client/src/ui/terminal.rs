//! The interactive terminal: a rustyline editor on a thread of its own reads lines, incoming
//! lines are printed above the line being edited (rustyline's external printer) so that half
//! typed text survives them, and edits of a non-empty line become typing indicators.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::mpsc as sync_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::termios::{self, SetArg, Termios};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::ui::completion;
use crate::ui::input::{InputLine, Inputs, MAX_INPUT_LINE};
use crate::ui::screen::Screen;
use crate::v2::typing::{TYPING_INTERVAL, Throttle};

/// The prompt in front of the line being edited.
pub const PROMPT: &str = "> ";
/// Lines read ahead of the conversation.
const CHANNEL_CAPACITY: usize = 16;
/// Typed lines remembered for the up arrow.
const HISTORY_LINES: usize = 500;
/// Time the editor thread gets to draw the last lines before the terminal is handed back:
/// the printer only queues them, and nothing reports when they are on screen.
const LAST_LINES_GRACE: Duration = Duration::from_millis(150);

/// The terminal while the editor owns it. Dropping it gives the terminal back in the mode it
/// was in, even if the editor thread is still waiting for a key.
pub struct Terminal {
    printer: Mutex<Box<dyn ExternalPrinter + Send>>,
    saved_mode: Option<Termios>,
    /// The members' names, shared with the editor thread for completion.
    names: Names,
}

/// Member names, written by the session and read by the completer.
type Names = Arc<Mutex<Vec<String>>>;

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").finish_non_exhaustive()
    }
}

/// Starts the editor thread. Returns the terminal (a [`Screen`]) and the user's input.
pub fn start() -> Result<(Terminal, Inputs), ClientError> {
    let saved_mode = termios::tcgetattr(io::stdin()).ok();
    let (line_sender, lines) = mpsc::channel(CHANNEL_CAPACITY);
    let (typing_sender, typing) = mpsc::channel(1);
    let (ready_sender, ready) = sync_mpsc::channel();
    let names = Names::default();
    let editor_names = Arc::clone(&names);
    std::thread::Builder::new()
        .name("line-editor".into())
        .spawn(move || edit_lines(&line_sender, typing_sender, editor_names, &ready_sender))
        .map_err(|error| ClientError::Terminal(error.to_string()))?;
    let printer = ready
        .recv()
        .map_err(|_| ClientError::Terminal("the line editor did not start".into()))??;
    let terminal = Terminal {
        printer: Mutex::new(printer),
        saved_mode,
        names,
    };
    // Ctrl-C reaches the editor as a key; SIGTERM and SIGHUP (the terminal closed) arrive
    // as signals and leave the room the same way.
    let interrupt = crate::signals::leave_signals();
    Ok((terminal, Inputs::new(lines, Some(typing), Some(interrupt))))
}

impl Terminal {
    /// Lets the editor draw what was printed last, then gives the terminal back.
    pub async fn finish(self) {
        tokio::time::sleep(LAST_LINES_GRACE).await;
        drop(self);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(mode) = &self.saved_mode {
            let _ = termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, mode);
        }
        // Clears the prompt line the editor left, so that the shell starts on a clean line.
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(b"\r\x1b[2K").and_then(|()| stdout.flush());
    }
}

impl Screen for Terminal {
    fn show(&self, line: &str) -> Result<(), ClientError> {
        let mut printer = self
            .printer
            .lock()
            .map_err(|_| ClientError::Terminal("the printer broke".into()))?;
        // Outside of an edit the printer writes as is, so the line ending must be there.
        printer
            .print(format!("{line}\n"))
            .map_err(|error| ClientError::Output(io::Error::other(error.to_string())))
    }

    fn names(&self, names: &[String]) {
        if let Ok(mut shared) = self.names.lock() {
            names.clone_into(&mut shared);
        }
    }
}

type PrinterResult = Result<Box<dyn ExternalPrinter + Send>, ClientError>;

/// The editor thread: reads lines until end of input (Ctrl-D), interruption (Ctrl-C), or
/// until nobody listens any more.
fn edit_lines(
    lines: &mpsc::Sender<io::Result<InputLine>>,
    typing: mpsc::Sender<()>,
    names: Names,
    ready: &sync_mpsc::Sender<PrinterResult>,
) {
    let config = Config::builder()
        .max_history_size(HISTORY_LINES)
        .map(|builder| builder.auto_add_history(true).build());
    let editor = config.and_then(Editor::<EditWatcher, DefaultHistory>::with_config);
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(error) => {
            let _ = ready.send(Err(ClientError::Terminal(error.to_string())));
            return;
        }
    };
    editor.set_helper(Some(EditWatcher::new(typing, names)));
    match editor.create_external_printer() {
        Ok(printer) => {
            if ready.send(Ok(Box::new(printer))).is_err() {
                return;
            }
        }
        Err(error) => {
            let _ = ready.send(Err(ClientError::Terminal(error.to_string())));
            return;
        }
    }
    loop {
        let next = match editor.readline(PROMPT) {
            Ok(line) if line.len() > MAX_INPUT_LINE => Ok(InputLine::TooLong),
            Ok(line) => Ok(InputLine::Text(line)),
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => break,
            Err(error) => Err(io::Error::other(error.to_string())),
        };
        let failed = next.is_err();
        if lines.blocking_send(next).is_err() || failed {
            break;
        }
    }
}

/// The editor's helper: it watches edits, to send typing indicators, and completes commands
/// and member names on Tab.
struct EditWatcher {
    typing: mpsc::Sender<()>,
    throttle: RefCell<Throttle>,
    names: Names,
}

impl EditWatcher {
    fn new(typing: mpsc::Sender<()>, names: Names) -> Self {
        Self {
            typing,
            throttle: RefCell::new(Throttle::new(TYPING_INTERVAL)),
            names,
        }
    }
}

/// Whether editing `line` means the user is typing a message (commands do not count).
pub fn is_typing_a_message(line: &str) -> bool {
    let line = line.trim_start();
    !line.is_empty() && (!line.starts_with('/') || line.starts_with("//"))
}

impl Hinter for EditWatcher {
    type Hint = String;

    // Called after every edit of the line, which is exactly when the user is typing.
    fn hint(&self, line: &str, _pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if is_typing_a_message(line) && self.throttle.borrow_mut().ready(Instant::now()) {
            // A full channel means an indicator is already on its way.
            let _ = self.typing.try_send(());
        }
        None
    }
}

impl Completer for EditWatcher {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let names = self
            .names
            .lock()
            .map(|names| names.clone())
            .unwrap_or_default();
        Ok(completion::complete(line, pos, &names))
    }
}

impl Highlighter for EditWatcher {}

impl Validator for EditWatcher {}

impl Helper for EditWatcher {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_message_text_counts_as_typing() {
        assert!(is_typing_a_message("h"));
        assert!(is_typing_a_message("//not a command"));
        assert!(!is_typing_a_message(""));
        assert!(!is_typing_a_message("   "));
        assert!(!is_typing_a_message("/quit"));
    }
}
