//! `chat-client rooms`: the server's room list as a small table.

use chat_protocol::tcrp::RoomList;

use crate::ui::format::sanitize;

/// The lines printed for a room list: a header and one row per room, or `no rooms`.
pub fn table(list: &RoomList) -> Vec<String> {
    if list.rooms.is_empty() {
        return vec!["no rooms".to_owned()];
    }
    let names: Vec<String> = list
        .rooms
        .iter()
        .map(|room| sanitize(&room.name).into_owned())
        .collect();
    let width = names
        .iter()
        .map(|name| name.chars().count())
        .chain([ROOM_HEADER.len()])
        .max()
        .unwrap_or_default();
    // A topic column only when some room has a topic.
    let topics = list.rooms.iter().any(|room| room.topic.is_some());
    // Where the topic column starts: after the widest access, `password`.
    let topic_at = row(ROOM_HEADER, width, "", "password").len();
    let mut header = row(ROOM_HEADER, width, "MEMBERS", "ACCESS");
    if topics {
        header = format!("{header:<topic_at$}  TOPIC");
    }
    let mut lines = vec![header];
    for (room, name) in list.rooms.iter().zip(&names) {
        let access = if room.private { "password" } else { "open" };
        let mut line = row(name, width, &room.members.to_string(), access);
        if let Some(topic) = room.topic.as_deref().filter(|_| topics) {
            line = format!("{line:<topic_at$}  {}", sanitize(topic));
        }
        lines.push(line);
    }
    lines
}

const ROOM_HEADER: &str = "ROOM";

fn row(name: &str, width: usize, members: &str, access: &str) -> String {
    let padding = width.saturating_sub(name.chars().count());
    format!("{name}{}  {members:>7}  {access}", " ".repeat(padding))
}

#[cfg(test)]
mod tests {
    use chat_protocol::tcrp::RoomSummary;

    use super::*;

    #[test]
    fn an_empty_server_says_so() {
        assert_eq!(table(&RoomList { rooms: vec![] }), ["no rooms"]);
    }

    #[test]
    fn rooms_are_aligned_in_columns() {
        let list = RoomList {
            rooms: vec![
                RoomSummary {
                    name: "lobby".into(),
                    members: 3,
                    private: false,
                    topic: None,
                },
                RoomSummary {
                    name: "den".into(),
                    members: 12,
                    private: true,
                    topic: None,
                },
            ],
        };
        assert_eq!(
            table(&list),
            [
                "ROOM   MEMBERS  ACCESS",
                "lobby        3  open",
                "den         12  password",
            ]
        );
    }

    #[test]
    fn topics_get_a_column_of_their_own_when_a_room_has_one() {
        let room = |name: &str, private, topic: Option<&str>| RoomSummary {
            name: name.into(),
            members: 2,
            private,
            topic: topic.map(Into::into),
        };
        let list = RoomList {
            rooms: vec![
                room("lobby", false, Some("release\u{7}day")),
                room("den", true, None),
                room("attic", true, Some("dust")),
            ],
        };
        assert_eq!(
            table(&list),
            [
                "ROOM   MEMBERS  ACCESS    TOPIC",
                "lobby        2  open      release\u{FFFD}day",
                "den          2  password",
                "attic        2  password  dust",
            ]
        );
    }
}
