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
    let mut lines = vec![row(ROOM_HEADER, width, "MEMBERS", "ACCESS")];
    for (room, name) in list.rooms.iter().zip(&names) {
        let access = if room.private { "password" } else { "open" };
        lines.push(row(name, width, &room.members.to_string(), access));
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
                },
                RoomSummary {
                    name: "den".into(),
                    members: 12,
                    private: true,
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
}
