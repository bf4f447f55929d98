//! What a conversation asks of the I/O around it after each event, and how it ends.

use std::path::PathBuf;
use std::time::Duration;

use chat_protocol::v2::ClientV2;

/// Why a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The user left (`/quit`, end of input): tell the server.
    Quit,
    /// The user asked for a new partner: tell the server, then pair again.
    Next,
    /// The room was closed; there is nobody to tell.
    Closed,
    /// The server no longer has the room (it expired, or the server restarted without it).
    Gone,
    /// The server never confirmed the registration.
    Unregistered {
        /// How many `register` datagrams were sent.
        attempts: u32,
    },
    /// The server stopped answering for good.
    ServerSilent {
        /// How long it has been silent.
        silent_for: Duration,
    },
}

/// What the conversation wants done after an event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Datagrams to send, in order.
    pub send: Vec<ClientV2>,
    /// Lines to print, in order.
    pub lines: Vec<String>,
    /// Notices about this user's own messages that were not sent: errors, which a plain
    /// session prints on stderr, apart from the room's transcript.
    pub problems: Vec<String>,
    /// Set once: the conversation is over.
    pub ending: Option<Ending>,
    /// The members' names, when they changed (for completing names in a terminal).
    pub members: Option<Vec<String>>,
    /// Files to share or fetch over the server's HTTP API, beside the conversation.
    pub transfers: Vec<Transfer>,
    /// `/status`: the event loop shows the data plane's state (it knows the path).
    pub status: bool,
}

/// A file transfer the user asked for (`/send`, `/get`); the event loop runs it without
/// holding up the chat, and prints how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// Share the file at this path.
    Upload(PathBuf),
    /// Download the shared file `id`, to `to` or under its own name in the current directory.
    Download {
        /// The file's id.
        id: String,
        /// Where to save it.
        to: Option<PathBuf>,
    },
}
