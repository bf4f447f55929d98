//! The lines a version-2 session prints: `NAME: TEXT` for chat (`[HH:MM] NAME: TEXT` in a
//! terminal) and `* TEXT` for notices; and [`sanitize`], which everything that came from the
//! network goes through on its way to the screen, whatever the version.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chat_protocol::v2::{ChatMessage, CloseReason, LeaveReason, V2ErrorCode};
use chrono::{DateTime, Local, TimeZone};

/// Characters of a refused message quoted back in the notice about it.
const QUOTE_CHARS: usize = 40;

/// How chat lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineStyle {
    /// Prefix chat lines with the local `[HH:MM]` they were sent at (for people, not pipes).
    pub clock: bool,
}

/// One chat line.
pub fn chat_line(message: &ChatMessage, style: LineStyle) -> String {
    let body = if message.me {
        format!("* {} {}", sanitize(&message.from), sanitize(&message.text))
    } else if let Some(to) = &message.to {
        let (from, to) = (sanitize(&message.from), sanitize(to));
        format!("{from} -> {to} (private): {}", sanitize(&message.text))
    } else {
        format!("{}: {}", sanitize(&message.from), sanitize(&message.text))
    };
    if style.clock {
        format!("[{}] {body}", local_clock(message.ts))
    } else {
        body
    }
}

/// `HH:MM` of a Unix-milliseconds timestamp in the local time zone.
pub fn local_clock(ts_ms: u64) -> String {
    clock_in(ts_ms, &Local)
}

/// `HH:MM` of a Unix-milliseconds timestamp in `zone`; `--:--` for one out of range.
pub fn clock_in<Tz: TimeZone>(ts_ms: u64, zone: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    i64::try_from(ts_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || "--:--".to_owned(),
            |instant| instant.with_timezone(zone).format("%H:%M").to_string(),
        )
}

/// A notice line: `* TEXT`.
pub fn notice(text: &str) -> String {
    format!("* {}", sanitize(text))
}

/// `alice (host), bob`.
pub fn member_list(names: &[String], host: &str, more: u64) -> String {
    member_list_away(names, host, more, &BTreeMap::new())
}

/// `alice (host), bob (away: lunch), carol (away)`.
pub fn member_list_away(
    names: &[String],
    host: &str,
    more: u64,
    away: &BTreeMap<String, String>,
) -> String {
    let mut list = names
        .iter()
        .map(|name| {
            let mut shown = sanitize(name).into_owned();
            if name == host {
                shown.push_str(" (host)");
            }
            match away.get(name).map(String::as_str) {
                Some("") => shown.push_str(" (away)"),
                Some(text) => shown.push_str(&format!(" (away: {})", sanitize(text))),
                None => {}
            }
            shown
        })
        .collect::<Vec<_>>()
        .join(", ");
    // A big room's list is cut to fit one datagram.
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    list
}

/// `* here now: alice (host), bob`.
pub fn here_now(names: &[String], host: &str, more: u64) -> String {
    notice(&format!("here now: {}", member_list(names, host, more)))
}

/// Whether `text` names `me`: the name as a word of its own (any case, `@` in front or not).
pub fn mentions(text: &str, me: &str) -> bool {
    let (text, me) = (text.to_lowercase(), me.to_lowercase());
    if me.is_empty() {
        return false;
    }
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(&me).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + me.len()..].chars().next();
        !word(before) && !word(after)
    })
}

/// A line that names this member, as a terminal shows it: in reverse video, after a bell
/// when `bell`.
pub fn highlighted(line: &str, bell: bool) -> String {
    let bell = if bell { "\u{7}" } else { "" };
    format!("{bell}\u{1b}[7m{line}\u{1b}[0m")
}

/// The date line a terminal shows before the first message of a day, `* Tuesday 1 December
/// 2026`, in the local time zone; None for a timestamp out of range.
pub fn day_line(ts_ms: u64) -> Option<(chrono::NaiveDate, String)> {
    day_in(ts_ms, &Local)
}

/// [`day_line`] in `zone`.
pub fn day_in<Tz: TimeZone>(ts_ms: u64, zone: &Tz) -> Option<(chrono::NaiveDate, String)> {
    let instant = DateTime::from_timestamp_millis(i64::try_from(ts_ms).ok()?)?;
    let local = instant.with_timezone(zone);
    let day = local.date_naive();
    Some((day, notice(&day.format("%A %-d %B %Y").to_string())))
}

/// What a terminal shows between the messages replayed on entering and the new ones.
pub const NEW_MESSAGES_MARKER: &str = "* ---- new messages ----";

/// `* bob joined`.
pub fn joined(name: &str) -> String {
    notice(&format!("{name} joined"))
}

/// `* bob left` or `* bob timed out`; in a pair room, with how to meet someone else.
pub fn left(name: &str, reason: LeaveReason, pair: bool) -> String {
    let what = match reason {
        LeaveReason::Leave => "left",
        LeaveReason::Timeout => "timed out",
        LeaveReason::Kicked => "was kicked out by the host",
        LeaveReason::Banned => "was banned by the host",
    };
    if pair {
        notice(&format!("{name} {what}; type /next to meet someone new"))
    } else {
        notice(&format!("{name} {what}"))
    }
}

/// The last line of a closed room.
pub fn closed(reason: CloseReason) -> String {
    notice(match reason {
        CloseReason::HostLeft => "the room was closed by its host",
        CloseReason::HostTimeout => "the room was closed: the host timed out",
        CloseReason::ServerShutdown => "the room was closed: the server shut down",
    })
}

/// `* bob is typing…`.
pub fn typing(name: &str) -> String {
    notice(&format!("{name} is typing…"))
}

/// Why one of this user's messages was not delivered, quoting its start.
pub fn refused(code: V2ErrorCode, server_message: &str, text: &str) -> String {
    let why = match code {
        V2ErrorCode::RateLimited => "you are sending too fast".to_owned(),
        V2ErrorCode::TooLarge => "the message is too long".to_owned(),
        V2ErrorCode::Invalid
        | V2ErrorCode::NoRoom
        | V2ErrorCode::NoSuchMember
        | V2ErrorCode::NotHost => {
            format!("the server refused it ({server_message})")
        }
    };
    notice(&format!("not sent, {why}: {}", quote(text)))
}

/// The start of `text`, marked when cut.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("\"{}…\"", &text[..cut]),
        None => format!("\"{text}\""),
    }
}

/// Replaces control characters (other than tab) with U+FFFD, so that another member cannot
/// forge extra lines with a newline or drive the terminal with escape sequences.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let is_unsafe = |c: char| c.is_control() && c != '\t';
    if text.chars().any(is_unsafe) {
        Cow::Owned(
            text.chars()
                .map(|c| if is_unsafe(c) { '\u{FFFD}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    use super::*;

    fn message(from: &str, text: &str, ts: u64) -> ChatMessage {
        ChatMessage {
            id: 1,
            from: from.into(),
            text: text.into(),
            ts,
            me: false,
            to: None,
        }
    }

    #[test]
    fn chat_lines_are_name_colon_text_for_pipes() {
        let line = chat_line(&message("alice", "hello", 0), LineStyle::default());
        assert_eq!(line, "alice: hello");
    }

    #[test]
    fn actions_read_as_notices_about_their_sender() {
        let action = ChatMessage {
            me: true,
            ..message("alice", "waves", 0)
        };
        assert_eq!(chat_line(&action, LineStyle::default()), "* alice waves");
        let line = chat_line(&action, LineStyle { clock: true });
        assert!(line.ends_with("] * alice waves"), "{line}");
    }

    #[test]
    fn mentions_are_whole_words_in_any_case() {
        assert!(mentions("hey bob, look", "bob"));
        assert!(mentions("@Bob!", "bob"));
        assert!(mentions("BOB", "bob"));
        assert!(!mentions("bobby tables", "bob"));
        assert!(!mentions("kebob", "bob"));
        assert!(mentions("émilie?", "Émilie"));
        assert_eq!(highlighted("x", true), "\u{7}\u{1b}[7mx\u{1b}[0m");
        assert_eq!(highlighted("x", false), "\u{1b}[7mx\u{1b}[0m");
    }

    #[test]
    fn days_are_named_in_the_local_zone() {
        // 2021-01-01T23:30:00Z: still Friday in London, Saturday in Paris.
        let ts = 1_609_543_800_000;
        let utc = FixedOffset::east_opt(0).unwrap();
        let paris = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(day_in(ts, &utc).unwrap().1, "* Friday 1 January 2021");
        assert_eq!(day_in(ts, &paris).unwrap().1, "* Saturday 2 January 2021");
        assert!(day_in(u64::MAX, &utc).is_none());
    }

    #[test]
    fn away_members_are_marked_in_the_list() {
        let names = vec!["alice".to_owned(), "bob".to_owned(), "carol".to_owned()];
        let away = BTreeMap::from([
            ("bob".to_owned(), "lunch".to_owned()),
            ("carol".to_owned(), String::new()),
        ]);
        assert_eq!(
            member_list_away(&names, "alice", 0, &away),
            "alice (host), bob (away: lunch), carol (away)"
        );
    }

    #[test]
    fn direct_messages_name_both_ends() {
        let direct = ChatMessage {
            to: Some("bob".into()),
            ..message("alice", "see you", 0)
        };
        assert_eq!(
            chat_line(&direct, LineStyle::default()),
            "alice -> bob (private): see you"
        );
    }

    #[test]
    fn chat_lines_carry_the_time_in_a_terminal() {
        let line = chat_line(&message("alice", "hello", 0), LineStyle { clock: true });
        assert!(line.starts_with('['), "{line}");
        assert_eq!(&line[3..4], ":", "{line}");
        assert!(line.ends_with("] alice: hello"), "{line}");
    }

    #[test]
    fn clock_shows_hours_and_minutes_at_an_offset() {
        // 2021-01-01T13:05:09Z
        let ts = 1_609_506_309_000;
        let utc = FixedOffset::east_opt(0).unwrap();
        let paris = FixedOffset::east_opt(3600).unwrap();
        assert_eq!(clock_in(ts, &utc), "13:05");
        assert_eq!(clock_in(ts, &paris), "14:05");
        assert_eq!(clock_in(u64::MAX, &utc), "--:--");
    }

    #[test]
    fn network_text_cannot_forge_lines() {
        let line = chat_line(
            &message("mal\nlory", "hi\u{1b}[2J", 0),
            LineStyle::default(),
        );
        assert_eq!(line, "mal\u{FFFD}lory: hi\u{FFFD}[2J");
        assert_eq!(joined("eve\r\nbob"), "* eve\u{FFFD}\u{FFFD}bob joined");
    }

    #[test]
    fn notices_read_as_sentences() {
        assert_eq!(joined("bob"), "* bob joined");
        assert_eq!(left("bob", LeaveReason::Leave, false), "* bob left");
        assert_eq!(left("bob", LeaveReason::Timeout, false), "* bob timed out");
        assert_eq!(
            left("bob", LeaveReason::Leave, true),
            "* bob left; type /next to meet someone new"
        );
        assert_eq!(typing("bob"), "* bob is typing…");
    }

    #[test]
    fn closing_reasons_are_explained() {
        assert_eq!(
            closed(CloseReason::HostLeft),
            "* the room was closed by its host"
        );
        assert_eq!(
            closed(CloseReason::HostTimeout),
            "* the room was closed: the host timed out"
        );
        assert_eq!(
            closed(CloseReason::ServerShutdown),
            "* the room was closed: the server shut down"
        );
    }

    #[test]
    fn member_lists_mark_the_host() {
        let names = vec!["alice".to_owned(), "bob".to_owned()];
        assert_eq!(
            here_now(&names, "alice", 0),
            "* here now: alice (host), bob"
        );
        assert_eq!(
            here_now(&names, "alice", 254),
            "* here now: alice (host), bob and 254 more"
        );
    }

    #[test]
    fn refusals_say_why_and_quote_the_message() {
        assert_eq!(
            refused(V2ErrorCode::RateLimited, "slow down", "hi"),
            "* not sent, you are sending too fast: \"hi\""
        );
        assert_eq!(
            refused(V2ErrorCode::Invalid, "empty text", ""),
            "* not sent, the server refused it (empty text): \"\""
        );
        let long = "é".repeat(50);
        let line = refused(V2ErrorCode::TooLarge, "", &long);
        assert_eq!(
            line,
            format!(
                "* not sent, the message is too long: \"{}…\"",
                "é".repeat(40)
            )
        );
    }

    #[test]
    fn ordinary_text_is_untouched() {
        assert!(matches!(sanitize("émilie\tsays hi 👋"), Cow::Borrowed(_)));
    }
}
