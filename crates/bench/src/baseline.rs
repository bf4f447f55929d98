//! The reference point: the barest relay that does the same job over the same wire format.
//! One UDP socket on 127.0.0.1, a room -> addresses map, and for every datagram one receive
//! and one send per other member. No tokens, no checks, no persistence, no notices beyond
//! the `welcome to` the load generator waits for. It runs on its own thread inside
//! chat-bench, whose CPU time is read from /proc/self/task/TID/stat.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::ucrp::{Datagram, NOTICE_SENDER, REGISTER};

use crate::error::{BenchError, Result};
use crate::member::{WELCOME_PREFIX, loopback_socket};
use crate::procfs::{self, CpuSource};

/// How often the relay thread looks at its stop flag while idle.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Most members one baseline room accepts, so a stray sender cannot grow the map forever.
const MAX_ROOM_MEMBERS: usize = 100_000;

/// A running bare relay; stopped and joined when dropped.
#[derive(Debug)]
pub struct BareRelay {
    addr: SocketAddr,
    thread_id: u32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BareRelay {
    /// Binds the relay socket and starts its thread. The socket keeps the kernel's default
    /// buffer sizes, as the chat server's does, so neither hides overload in a deeper queue.
    pub fn start() -> Result<Self> {
        let socket = loopback_socket(None)?;
        socket
            .set_read_timeout(Some(STOP_POLL))
            .map_err(BenchError::socket("configuring the baseline relay"))?;
        let addr = socket
            .local_addr()
            .map_err(BenchError::socket("configuring the baseline relay"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("baseline-relay".to_owned())
            .spawn(move || {
                let _ = tid_tx.send(procfs::current_thread_id());
                relay_loop(&socket, &thread_stop);
            })
            .map_err(BenchError::socket("starting the baseline relay thread"))?;
        let mut relay = Self {
            addr,
            thread_id: 0,
            stop,
            thread: Some(thread),
        };
        // If the thread cannot report its id, dropping `relay` stops it.
        relay.thread_id = tid_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| {
            BenchError::ThreadPanicked("the baseline relay did not start".to_owned())
        })??;
        tracing::debug!(%addr, tid = relay.thread_id, "baseline relay started");
        Ok(relay)
    }

    /// The relay's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the relay thread's CPU time can be read.
    pub fn cpu_source(&self) -> CpuSource {
        CpuSource::OwnThread(self.thread_id)
    }
}

impl Drop for BareRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn relay_loop(socket: &UdpSocket, stop: &AtomicBool) {
    let mut rooms: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = Vec::with_capacity(MAX_DATAGRAM + 1);
    while !stop.load(Ordering::Relaxed) {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(_) => continue,
        };
        let Ok(datagram) = Datagram::decode(&buf[..len]) else {
            continue;
        };
        out.clear();
        if datagram.message == REGISTER {
            let members = rooms.entry(datagram.room.to_owned()).or_default();
            if !members.contains(&from) && members.len() < MAX_ROOM_MEMBERS {
                members.push(from);
            }
            out.push(1);
            out.extend_from_slice(NOTICE_SENDER.as_bytes());
            out.extend_from_slice(WELCOME_PREFIX.as_bytes());
            out.push(b' ');
            out.extend_from_slice(datagram.room.as_bytes());
            let _ = socket.send_to(&out, from);
            continue;
        }
        let Some(members) = rooms.get(datagram.room) else {
            continue;
        };
        // A version-1 chat frame with an empty sender name: the bare relay knows no names.
        out.push(0);
        out.extend_from_slice(datagram.message);
        for &member in members {
            if member != from {
                let _ = socket.send_to(&out, member);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{BufferSizes, Member};
    use chat_protocol::ucrp::ServerDatagram;

    #[test]
    fn relays_to_every_other_member_only() {
        let buffers = BufferSizes {
            receive: 1 << 16,
            send: 1 << 16,
        };
        let relay = BareRelay::start().unwrap();
        let token = [b'0'; 64];
        let members: Vec<Member> = (0..3)
            .map(|i| Member::new(format!("m{i}"), 0, "lobby", &token, buffers).unwrap())
            .collect();
        for member in &members {
            member
                .register(relay.addr(), "lobby", crate::wire::Protocol::V1)
                .unwrap();
        }
        let mut datagram = Vec::new();
        members[0].frame_into(b"hello", &mut datagram);
        members[0].socket.send_to(&datagram, relay.addr()).unwrap();
        let mut buf = [0u8; 4096];
        for member in &members[1..] {
            member
                .socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let (len, _) = crate::member::recv_from_retrying(&member.socket, &mut buf).unwrap();
            assert_eq!(
                ServerDatagram::decode(&buf[..len]).unwrap(),
                ServerDatagram::Chat {
                    sender: "",
                    text: "hello"
                }
            );
        }
        members[0]
            .socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(members[0].socket.recv_from(&mut buf).is_err(), "no echo");
        assert!(relay.cpu_source().cpu_time().unwrap().is_some());
    }
}
