//! What the user does: lines typed, read from stdin on a thread of their own (or by the
//! [line editor](crate::ui::terminal)), edits and interruptions, as channels ([`Inputs`]).
//!
//! A plain thread rather than `tokio::io::stdin`: a blocking read cannot be cancelled, and a
//! runtime waits for its blocking tasks on shutdown, so the client could not exit when the room
//! closes while stdin stays open. A detached thread simply ends with the process.

use std::io::{self, BufRead};

use tokio::sync::mpsc;

use crate::error::ClientError;

/// Longest input line kept in memory; longer lines are reported, never buffered whole.
/// Anything over [`chat_protocol::limits::MAX_DATAGRAM`] cannot be sent anyway.
pub const MAX_INPUT_LINE: usize = 64 * 1024;
/// Lines read ahead of the sender.
const CHANNEL_CAPACITY: usize = 16;

/// One line of input, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputLine {
    /// A line of UTF-8 text.
    Text(String),
    /// A line longer than [`MAX_INPUT_LINE`] bytes; its content was discarded.
    TooLong,
    /// A line that is not valid UTF-8.
    NotUtf8,
}

/// Reads one line of at most `max` bytes (line ending excluded). `Ok(None)` at end of input;
/// a final line without a line ending still counts.
pub fn read_bounded_line<R: BufRead>(reader: &mut R, max: usize) -> io::Result<Option<InputLine>> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut read_anything = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            break;
        }
        read_anything = true;
        let newline = available.iter().position(|&byte| byte == b'\n');
        let part = &available[..newline.unwrap_or(available.len())];
        if !too_long {
            if line.len() + part.len() > max + 1 {
                // One byte of slack keeps the `\r` of a CRLF line that is exactly `max` long.
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(part);
            }
        }
        let consumed = part.len() + usize::from(newline.is_some());
        reader.consume(consumed);
        if newline.is_some() {
            break;
        }
    }
    if !read_anything {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if too_long || line.len() > max {
        return Ok(Some(InputLine::TooLong));
    }
    Ok(Some(match String::from_utf8(line) {
        Ok(text) => InputLine::Text(text),
        Err(_) => InputLine::NotUtf8,
    }))
}

/// Starts the thread that reads stdin. The channel closes at end of input, or after a read
/// error, which is delivered first.
pub fn spawn_stdin_reader() -> io::Result<mpsc::Receiver<io::Result<InputLine>>> {
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            loop {
                let next = match read_bounded_line(&mut stdin, MAX_INPUT_LINE) {
                    Ok(Some(line)) => Ok(line),
                    Ok(None) => break,
                    Err(error) => Err(error),
                };
                let failed = next.is_err();
                // A send error means the session ended and nobody reads any more.
                if sender.blocking_send(next).is_err() || failed {
                    break;
                }
            }
        })?;
    Ok(receiver)
}

/// What the user does, as channels. They outlive one room, so that `/next` keeps them.
#[derive(Debug)]
pub struct Inputs {
    lines: Option<mpsc::Receiver<io::Result<InputLine>>>,
    typing: Option<mpsc::Receiver<()>>,
    interrupt: Option<mpsc::Receiver<()>>,
}

/// One thing the user did.
#[derive(Debug)]
pub enum UserEvent {
    /// A typed line.
    Line(InputLine),
    /// Input ended.
    EndOfInput,
    /// A non-empty line was edited (already paced).
    Typing,
    /// Ctrl-C, SIGTERM or SIGHUP.
    Interrupted,
}

impl Inputs {
    /// Typed lines (the channel closes at end of input), edits of a non-empty line (already
    /// paced), and interruptions such as Ctrl-C, which leave like `/quit`.
    pub fn new(
        lines: mpsc::Receiver<io::Result<InputLine>>,
        typing: Option<mpsc::Receiver<()>>,
        interrupt: Option<mpsc::Receiver<()>>,
    ) -> Self {
        Self {
            lines: Some(lines),
            typing,
            interrupt,
        }
    }

    /// The next thing the user does; pending forever once every channel has closed.
    pub async fn next(&mut self) -> Result<UserEvent, ClientError> {
        loop {
            tokio::select! {
                line = recv_or_pend(&mut self.lines) => return match line {
                    Some(Ok(line)) => Ok(UserEvent::Line(line)),
                    Some(Err(error)) => Err(ClientError::Input(error)),
                    None => {
                        self.lines = None;
                        Ok(UserEvent::EndOfInput)
                    }
                },
                typing = recv_or_pend(&mut self.typing) => match typing {
                    Some(()) => return Ok(UserEvent::Typing),
                    None => self.typing = None,
                },
                interrupt = recv_or_pend(&mut self.interrupt) => match interrupt {
                    Some(()) => return Ok(UserEvent::Interrupted),
                    None => self.interrupt = None,
                },
            }
        }
    }
}

/// Receives from a channel that is still there; a missing one never completes.
async fn recv_or_pend<T>(channel: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match channel {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<InputLine> {
        let mut reader = Cursor::new(input.to_vec());
        let mut out = Vec::new();
        while let Some(line) = read_bounded_line(&mut reader, max).unwrap() {
            out.push(line);
        }
        out
    }

    fn text(value: &str) -> InputLine {
        InputLine::Text(value.into())
    }

    #[test]
    fn splits_lines_and_strips_endings() {
        assert_eq!(
            lines(b"hello\r\n\nworld\nlast", 100),
            vec![text("hello"), text(""), text("world"), text("last")]
        );
        assert_eq!(lines(b"", 100), vec![]);
    }

    #[test]
    fn overlong_lines_are_reported_and_the_next_line_survives() {
        assert_eq!(
            lines(b"0123456789\nok\n", 5),
            vec![InputLine::TooLong, text("ok")]
        );
        assert_eq!(lines(b"12345\r\n", 5), vec![text("12345")]);
        assert_eq!(lines(b"123456\r\n", 5), vec![InputLine::TooLong]);
    }

    #[test]
    fn overlong_lines_spanning_many_reads_are_not_buffered() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\nafter\n");
        let mut reader = io::BufReader::with_capacity(64, Cursor::new(input));
        assert_eq!(
            read_bounded_line(&mut reader, 10).unwrap(),
            Some(InputLine::TooLong)
        );
        assert_eq!(
            read_bounded_line(&mut reader, 10).unwrap(),
            Some(text("after"))
        );
    }

    #[test]
    fn invalid_utf8_is_reported() {
        assert_eq!(
            lines(b"ok\n\xff\xfe\n", 100),
            vec![text("ok"), InputLine::NotUtf8]
        );
    }
}
