//! Direct messages (`/msg bob hi`): a chat message for one member of the room. It takes the
//! room's next id, is stored with its recipient, acked like any message, and delivered to the
//! recipient alone. Every other version-2 member gets `skip` for its id, so that nobody waits
//! for a gap that will never fill; replays and history pages show it only to the two of them.

use chat_protocol::names;
use chat_protocol::ucrp::{self, NOTICE_SENDER};
use chat_protocol::v2::ServerV2;
use std::collections::BTreeMap;

use super::effects::{Outbox, PendingMessage};
use super::room::{Member, MemberId, Room};

/// Who a direct message goes to.
#[derive(Debug, Clone)]
pub(super) struct Recipient {
    /// Process-local id.
    pub(super) id: MemberId,
    /// Stable id, stored with the message.
    pub(super) uid: u64,
    /// The name as stored.
    pub(super) username: String,
}

/// The member named `name` (compared by key), other than the sender.
pub(super) fn recipient(
    members: &BTreeMap<MemberId, Member>,
    sender: MemberId,
    name: &str,
) -> Option<Recipient> {
    if name.len() > chat_protocol::limits::MAX_USERNAME {
        return None;
    }
    let key = names::username_key(name);
    members
        .values()
        .find(|member| member.id != sender && names::username_key(&member.username) == key)
        .map(|member| Recipient {
            id: member.id,
            uid: member.uid,
            username: member.username.clone(),
        })
}

/// Whether the member with stable id `reader` may read a message whose `audience` is
/// `(sender, recipient)` (`None`: the whole room).
pub(super) fn may_read(audience: Option<(u64, u64)>, reader: u64) -> bool {
    audience.is_none_or(|(sender, recipient)| reader == sender || reader == recipient)
}

/// `skip` for room message `id`, as a member that may not read it gets it.
pub fn skip_frame(id: u64, buf: &mut Vec<u8>) {
    ucrp::encode_v2(&ServerV2::Skip { id }, buf);
}

/// Delivers a stored direct message: the whole message to its recipient, `skip` to every
/// other version-2 member but the sender (who has its ack), and to a version-1 recipient a
/// notice, since version 1 has no direct messages.
pub(super) fn relay(room: &Room, pending: &PendingMessage, recipient: MemberId, out: &mut Outbox) {
    let id = pending.stored.message.id;
    for target in room.v2_recipients.iter() {
        if target.member == pending.sender {
            continue;
        }
        out.unicast(target.addr, |buf| {
            if target.member == recipient {
                buf.extend_from_slice(&pending.v2_frame);
            } else {
                skip_frame(id, buf);
            }
            Ok(())
        });
    }
    if let Some(target) = room.v1_recipients.iter().find(|r| r.member == recipient) {
        let message = &pending.stored.message;
        let text = format!("{} (to you): {}", message.from, message.text);
        out.unicast(target.addr, |buf| {
            ucrp::encode_v1_chat(NOTICE_SENDER, &text, buf)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_may_read_a_direct_message() {
        assert!(may_read(None, 9));
        assert!(may_read(Some((1, 2)), 1));
        assert!(may_read(Some((1, 2)), 2));
        assert!(!may_read(Some((1, 2)), 3));
    }
}
