//! What a typed line means: chat text, or one of the `/` commands.

use chat_protocol::limits::MAX_HISTORY_PAGE;

/// Messages `/history` asks for when no count is given.
pub const DEFAULT_HISTORY: u32 = 20;

/// The command list shown after an unknown command: the everyday ones, `/help` first, which
/// lists them all.
pub const COMMAND_LIST: &str = "/help, /who, /history [N], /status, /next, /quit";

/// `/help`, one notice per line.
pub const HELP: [&str; 20] = [
    "commands:",
    "  /who          who is in the room",
    "  /me TEXT      an action, shown as * yourname TEXT",
    "  /msg NAME TEXT  a private message to NAME only (kept for the two of you)",
    "  /topic [TEXT] show the room's topic, or set it (any member; /topic - clears it)",
    "  /history [N]  show N earlier messages (default 20, at most 100)",
    "  /search WORDS messages with all these words (again: older ones)",
    "  /ignore [NAME]  hide NAME's messages on this screen (alone: list); /unignore NAME",
    "  /away [TEXT]  mark yourself away (shown in /who); /back when you return",
    "  /status       the connection: path (udp or tunnel), encryption, room and name",
    "  /send PATH    share a file with the room (members see its name, size and id)",
    "  /get ID [PATH]  download a shared file (checked against its checksum)",
    "  host only:",
    "  /kick NAME    remove NAME from the room (they may come back)",
    "  /ban NAME     remove NAME and refuse their address for the room's life",
    "  /host NAME    make NAME the host",
    "  /next         in a pair room: leave and meet someone new",
    "  /quit         leave the room (end of input does too)",
    "  /help         this list",
    "  a line starting with // sends the rest of it starting with /",
];

/// A line the user typed, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// Chat text to send.
    Say(String),
    /// Nothing worth sending: empty or only whitespace.
    Blank,
    /// `/help`.
    Help,
    /// `/who`.
    Who,
    /// `/status`.
    Status,
    /// `/history [N]`, with N checked and capped.
    History(u32),
    /// `/next`.
    Next,
    /// `/me TEXT`: an action.
    Action(String),
    /// `/topic`: show it (`None`); `/topic TEXT`: set it; `/topic -`: clear it (empty).
    Topic(Option<String>),
    /// `/kick NAME`, `/ban NAME`, `/host NAME`: the host's commands.
    Moderate(Moderation, String),
    /// `/ignore NAME` (`None`: list who is ignored).
    Ignore(Option<String>),
    /// `/unignore NAME`.
    Unignore(String),
    /// `/away [TEXT]` (empty: no reason).
    Away(String),
    /// `/back`.
    Back,
    /// `/search WORDS`.
    Search(String),
    /// `/msg NAME TEXT`: a direct message.
    Direct {
        /// The recipient's name.
        to: String,
        /// The text.
        text: String,
    },
    /// `/send PATH`: share a file.
    Share(String),
    /// `/get ID [PATH]`: download a shared file, to PATH or under its own name.
    Fetch {
        /// The file's id, as the room was told.
        id: String,
        /// Where to save it.
        to: Option<String>,
    },
    /// `/quit`.
    Quit,
    /// A command with an argument it does not take; the sentence says what is expected.
    Misused(&'static str),
    /// A `/word` that is not a command.
    Unknown(String),
}

/// Interprets one typed line. Commands are case-insensitive; `//text` sends `/text`.
pub fn parse(line: &str) -> Typed {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Typed::Blank;
    }
    if let Some(escaped) = trimmed.strip_prefix("//") {
        return Typed::Say(format!("/{escaped}"));
    }
    let Some(command) = trimmed.strip_prefix('/') else {
        return Typed::Say(line.to_owned());
    };
    let mut words = command.split_whitespace();
    let name = words.next().unwrap_or_default().to_lowercase();
    // Everything after the command's name, for commands that take free text.
    let rest = command
        .trim_start()
        .split_once(char::is_whitespace)
        .map_or("", |(_, rest)| rest.trim());
    match name.as_str() {
        "me" if rest.is_empty() => return Typed::Misused("usage: /me TEXT, e.g. /me waves"),
        "me" => return Typed::Action(rest.to_owned()),
        "topic" if rest.is_empty() => return Typed::Topic(None),
        "topic" if rest == "-" => return Typed::Topic(Some(String::new())),
        "topic" => return Typed::Topic(Some(rest.to_owned())),
        "kick" | "ban" | "host" | "unignore" if rest.is_empty() || rest.contains(' ') => {
            return Typed::Misused(NAME_USAGE);
        }
        "kick" => return Typed::Moderate(Moderation::Kick, rest.to_owned()),
        "ban" => return Typed::Moderate(Moderation::Ban, rest.to_owned()),
        "host" => return Typed::Moderate(Moderation::Host, rest.to_owned()),
        "unignore" => return Typed::Unignore(rest.to_owned()),
        "away" => return Typed::Away(rest.to_owned()),
        "search" if rest.is_empty() => return Typed::Misused("usage: /search WORDS"),
        "search" => return Typed::Search(rest.to_owned()),
        "back" if rest.is_empty() => return Typed::Back,
        "ignore" if rest.is_empty() => return Typed::Ignore(None),
        "ignore" if rest.contains(' ') => return Typed::Misused(NAME_USAGE),
        "ignore" => return Typed::Ignore(Some(rest.to_owned())),
        "send" if rest.is_empty() => return Typed::Misused("usage: /send PATH"),
        "send" => return Typed::Share(rest.to_owned()),
        "get" => {
            return match rest.split_once(char::is_whitespace) {
                _ if rest.is_empty() => Typed::Misused("usage: /get ID [PATH]"),
                None => Typed::Fetch {
                    id: rest.to_owned(),
                    to: None,
                },
                Some((id, to)) => Typed::Fetch {
                    id: id.to_owned(),
                    to: Some(to.trim().to_owned()),
                },
            };
        }
        "msg" => {
            return match rest.split_once(char::is_whitespace) {
                Some((to, text)) if !text.trim().is_empty() => Typed::Direct {
                    to: to.to_owned(),
                    text: text.trim().to_owned(),
                },
                _ => Typed::Misused("usage: /msg NAME TEXT, e.g. /msg bob see you at six"),
            };
        }
        _ => {}
    }
    let argument = words.next();
    let extra = words.next().is_some();
    match (name.as_str(), argument) {
        ("help", None) => Typed::Help,
        ("who", None) => Typed::Who,
        ("status", None) => Typed::Status,
        ("next", None) => Typed::Next,
        ("quit" | "exit", None) => Typed::Quit,
        ("history", None) => Typed::History(DEFAULT_HISTORY),
        ("history", Some(count)) if !extra => match count.parse::<u32>() {
            // The server serves at most a page of 100 per request: more is refused, not
            // silently cut.
            Ok(count) if (1..=MAX_HISTORY_PAGE as u32).contains(&count) => Typed::History(count),
            Ok(_) | Err(_) => Typed::Misused(HISTORY_USAGE),
        },
        ("history", Some(_)) => Typed::Misused(HISTORY_USAGE),
        ("help" | "who" | "status" | "next" | "quit" | "exit", Some(_)) => {
            Typed::Misused("this command takes no argument")
        }
        _ => Typed::Unknown(format!("/{name}")),
    }
}

/// What the host asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moderation {
    /// `/kick`.
    Kick,
    /// `/ban`.
    Ban,
    /// `/host`.
    Host,
}

const NAME_USAGE: &str = "usage: /kick NAME, /ban NAME, /host NAME, /ignore NAME, /unignore NAME";

const HISTORY_USAGE: &str =
    "usage: /history [N], with N a number from 1 to 100 (the most the server sends at once)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_said_as_typed() {
        assert_eq!(parse("hello there "), Typed::Say("hello there ".into()));
        assert_eq!(parse("a/b"), Typed::Say("a/b".into()));
    }

    #[test]
    fn blank_lines_are_not_sent() {
        assert_eq!(parse(""), Typed::Blank);
        assert_eq!(parse("   \t"), Typed::Blank);
    }

    #[test]
    fn commands_are_recognised_in_any_case_with_spaces_around() {
        assert_eq!(parse("/help"), Typed::Help);
        assert_eq!(parse(" /WHO "), Typed::Who);
        assert_eq!(parse("/next"), Typed::Next);
        assert_eq!(parse("/quit"), Typed::Quit);
        assert_eq!(parse("/Exit"), Typed::Quit);
    }

    #[test]
    fn history_takes_an_optional_count_up_to_a_page() {
        assert_eq!(parse("/history"), Typed::History(20));
        assert_eq!(parse("/history 5"), Typed::History(5));
        assert_eq!(parse("/history 100"), Typed::History(100));
        assert!(matches!(parse("/history 101"), Typed::Misused(_)));
        assert!(matches!(parse("/history 500"), Typed::Misused(_)));
        assert!(matches!(parse("/history 0"), Typed::Misused(_)));
        assert!(matches!(parse("/history ten"), Typed::Misused(_)));
        assert!(matches!(parse("/history 1 2"), Typed::Misused(_)));
    }

    #[test]
    fn arguments_to_argumentless_commands_are_refused() {
        assert!(matches!(parse("/quit now"), Typed::Misused(_)));
    }

    #[test]
    fn unknown_commands_are_named() {
        assert_eq!(parse("/shrug"), Typed::Unknown("/shrug".into()));
        assert_eq!(parse("/"), Typed::Unknown("/".into()));
    }

    #[test]
    fn actions_and_topics_take_the_rest_of_the_line() {
        assert_eq!(
            parse("/me  waves at  everyone "),
            Typed::Action("waves at  everyone".into())
        );
        assert!(matches!(parse("/me"), Typed::Misused(_)));
        assert!(matches!(parse("/ME   "), Typed::Misused(_)));
        assert_eq!(parse("/topic"), Typed::Topic(None));
        assert_eq!(parse("/topic -"), Typed::Topic(Some(String::new())));
        assert_eq!(
            parse("/Topic release day"),
            Typed::Topic(Some("release day".into()))
        );
        assert_eq!(parse("/meet"), Typed::Unknown("/meet".into()));
    }

    #[test]
    fn host_commands_and_ignore_take_one_name() {
        assert_eq!(
            parse("/kick bob"),
            Typed::Moderate(Moderation::Kick, "bob".into())
        );
        assert_eq!(
            parse("/BAN  bob "),
            Typed::Moderate(Moderation::Ban, "bob".into())
        );
        assert_eq!(
            parse("/host bob"),
            Typed::Moderate(Moderation::Host, "bob".into())
        );
        assert!(matches!(parse("/kick"), Typed::Misused(_)));
        assert!(matches!(parse("/kick bob carol"), Typed::Misused(_)));
        assert_eq!(parse("/ignore"), Typed::Ignore(None));
        assert_eq!(parse("/ignore eve"), Typed::Ignore(Some("eve".into())));
        assert_eq!(parse("/unignore eve"), Typed::Unignore("eve".into()));
        assert!(matches!(parse("/unignore"), Typed::Misused(_)));
        assert_eq!(parse("/away"), Typed::Away(String::new()));
        assert_eq!(parse("/away  at lunch "), Typed::Away("at lunch".into()));
        assert_eq!(parse("/back"), Typed::Back);
        assert_eq!(
            parse("/search cake  fridge"),
            Typed::Search("cake  fridge".into())
        );
        assert!(matches!(parse("/search"), Typed::Misused(_)));
    }

    #[test]
    fn direct_messages_name_their_recipient_then_the_text() {
        assert_eq!(
            parse("/msg bob  see you at six "),
            Typed::Direct {
                to: "bob".into(),
                text: "see you at six".into()
            }
        );
        assert!(matches!(parse("/msg bob"), Typed::Misused(_)));
        assert!(matches!(parse("/msg bob   "), Typed::Misused(_)));
        assert!(matches!(parse("/msg"), Typed::Misused(_)));
    }

    #[test]
    fn send_takes_a_path_with_spaces_and_get_an_id_and_an_optional_path() {
        assert_eq!(
            parse("/send my notes.txt"),
            Typed::Share("my notes.txt".into())
        );
        assert!(matches!(parse("/send"), Typed::Misused(_)));
        assert_eq!(
            parse("/get 3f1a9c0b7d2e"),
            Typed::Fetch {
                id: "3f1a9c0b7d2e".into(),
                to: None
            }
        );
        assert_eq!(
            parse("/get 3f1a9c0b7d2e /tmp/a b.pdf"),
            Typed::Fetch {
                id: "3f1a9c0b7d2e".into(),
                to: Some("/tmp/a b.pdf".into())
            }
        );
        assert!(matches!(parse("/get"), Typed::Misused(_)));
    }

    #[test]
    fn a_double_slash_sends_a_line_starting_with_a_slash() {
        assert_eq!(parse("//shrug"), Typed::Say("/shrug".into()));
    }
}
