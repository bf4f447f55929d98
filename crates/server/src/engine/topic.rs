//! The room's topic: any member may set it (`/topic text`) or clear it (an empty text). It is
//! kept in the durable state with the room, shown in the `members` answer to a registration or
//! `who`, in the room list, and announced to the room when it changes. And a member's away
//! text (`/away`), shown beside its name in `members`.

use chat_protocol::ucrp;
use chat_protocol::v2::{MAX_AWAY, MAX_TOPIC, ServerV2, V2ErrorCode};

use super::durable::StateChange;
use super::replay::{notify, unicast_v2};
use super::room::{MemberId, RoomId};
use super::{Effects, Endpoint, Engine};

/// Why a topic was refused: the code and the sentence for the member.
pub type TopicRefusal = (V2ErrorCode, &'static str);

/// Checks a topic against the rules: at most [`MAX_TOPIC`] bytes, no control characters
/// (a topic is one line).
pub fn check(topic: &str) -> Result<(), TopicRefusal> {
    if topic.len() > MAX_TOPIC {
        return Err((V2ErrorCode::TooLarge, "a topic is at most 200 bytes"));
    }
    if topic.chars().any(char::is_control) {
        return Err((
            V2ErrorCode::Invalid,
            "a topic is one line, without control characters",
        ));
    }
    Ok(())
}

/// Checks an away text: at most [`MAX_AWAY`] bytes, one line.
pub fn check_away(text: &str) -> Result<(), TopicRefusal> {
    if text.len() > MAX_AWAY {
        return Err((V2ErrorCode::TooLarge, "an away text is at most 100 bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err((
            V2ErrorCode::Invalid,
            "an away text is one line, without control characters",
        ));
    }
    Ok(())
}

impl Engine {
    /// Marks the member away with `text` (`None`: back), and confirms it to `src` alone; the
    /// others see it in `members`.
    pub(super) fn set_away(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        text: Option<&str>,
        src: Endpoint,
        fx: &mut Effects,
    ) {
        let text = text.map(str::trim);
        if let Some(Err((code, message))) = text.map(check_away) {
            let error = ServerV2::Error {
                code,
                seq: None,
                message: message.to_owned(),
            };
            return unicast_v2(&mut fx.datagrams, src, &error);
        }
        let Some(member) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|room| room.members.get_mut(&member_id))
        else {
            return;
        };
        member.away = text.map(str::to_owned);
        let event = ServerV2::Away {
            name: member.username.clone(),
            text: member.away.clone(),
        };
        unicast_v2(&mut fx.datagrams, src, &event);
    }

    /// Sets (or, with an empty `text`, clears) the topic of the member's room, records it in
    /// the durable state and tells everyone, the setter included (its confirmation); a topic
    /// that is already the room's is confirmed to the setter alone. A topic that breaks the
    /// rules is refused with an `error` to `src` alone.
    pub(super) fn set_topic(
        &mut self,
        room_id: RoomId,
        member_id: MemberId,
        text: &str,
        src: Endpoint,
        fx: &mut Effects,
    ) {
        let text = text.trim();
        if let Err((code, message)) = check(text) {
            let error = ServerV2::Error {
                code,
                seq: None,
                message: message.to_owned(),
            };
            unicast_v2(&mut fx.datagrams, src, &error);
            return;
        }
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(name) = room.members.get(&member_id).map(|m| m.username.clone()) else {
            return;
        };
        let topic = (!text.is_empty()).then(|| text.to_owned());
        let changed = room.topic != topic;
        room.topic.clone_from(&topic);
        let notice = match &topic {
            Some(topic) => format!("{name} set the topic: {topic}"),
            None => format!("{name} cleared the topic"),
        };
        let event = ServerV2::Topic {
            name,
            text: text.to_owned(),
        };
        if !changed {
            // A retransmission, or the same topic again: only the sender hears, as its
            // confirmation, so the room is not told twice.
            unicast_v2(&mut fx.datagrams, src, &event);
            return;
        }
        notify(room, None, &notice, &event, &mut fx.datagrams);
        if !room.v2_recipients.iter().any(|r| r.member == member_id) {
            // A setter that is not a registered version-2 member (an HTTP client) still hears.
            fx.datagrams.unicast(src, |buf| {
                ucrp::encode_v2(&event, buf);
                Ok(())
            });
        }
        let change = StateChange::TopicChanged {
            room: room.name.clone(),
            topic,
            by: Some(event_name(&event)),
        };
        self.changed(change);
    }
}

/// The setter's name in a `topic` event.
fn event_name(event: &ServerV2) -> String {
    match event {
        ServerV2::Topic { name, .. } => name.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_one_bounded_line() {
        assert!(check("release day").is_ok());
        assert!(check(&"é".repeat(100)).is_ok());
        assert_eq!(
            check(&"x".repeat(201)).map_err(|e| e.0),
            Err(V2ErrorCode::TooLarge)
        );
        assert_eq!(check("a\nb").map_err(|e| e.0), Err(V2ErrorCode::Invalid));
    }
}
