//! Version 2's delivery promise through the real `chat-client`: behind a proxy that loses,
//! duplicates and reorders datagrams in both directions, and across a `kill -9` of the server,
//! every member prints every message exactly once, in the same (id) order.
//!
//! Registration happens on a clean network: a client gives up after five unanswered
//! registrations, by design, so the faults start once everyone is in the room. The server runs
//! without flood control, because each member types its whole part at once.
//!
//! Each test prints to stderr how long the members took to converge (for the record; nothing
//! asserts on time except the generous overall limit).

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_tests::{ClientProcess, Faults, LossProxy, ServerProcess, V2Member, join};

/// How long the members may take to converge before the test fails.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(120);

/// A `chat-client` in a room, with the chat lines it printed so far.
struct Member {
    name: String,
    client: ClientProcess,
    /// Chat lines (`NAME: TEXT` from a member of the room), in printed order.
    chat: Vec<String>,
    /// Every line, for failure messages and notice checks.
    all: Vec<String>,
}

impl Member {
    /// Starts a client (`create` or `join`) that sends its datagrams to `udp_port` when given,
    /// and waits for its welcome.
    fn enter(
        server: &ServerProcess,
        operation: &str,
        room: &str,
        name: &str,
        udp_port: Option<u16>,
    ) -> Self {
        let port = udp_port.map(|port| port.to_string());
        let mut args = vec![operation, room, "--name", name];
        if let Some(port) = &port {
            args.extend(["--udp-port", port.as_str()]);
        }
        let mut client = ClientProcess::start(server, &args);
        let welcome = format!("* welcome to {room}, {name}");
        client.wait_for("the welcome", |line| line.starts_with(&welcome));
        Self {
            name: name.to_owned(),
            client,
            chat: Vec::new(),
            all: Vec::new(),
        }
    }

    /// Reads the next line the client prints, if one comes before `deadline`, sorting chat
    /// lines from the rest.
    fn read_line_before(&mut self, deadline: Instant, names: &[&str]) {
        if let Some(line) = self.client.next_line_before(deadline) {
            if is_chat(&line, names) {
                self.chat.push(line.clone());
            }
            self.all.push(line);
        }
    }
}

fn is_chat(line: &str, names: &[&str]) -> bool {
    names.iter().any(|name| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(": "))
    })
}

/// Starts the room: the first name creates it, the others join, each through its own proxy
/// link when there is a proxy; returns when everyone has seen everyone after them join.
fn enter_room(
    server: &ServerProcess,
    room: &str,
    names: &[&str],
    mut proxy: Option<&mut LossProxy>,
) -> Vec<Member> {
    let mut members: Vec<Member> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let operation = if i == 0 { "create" } else { "join" };
        let port = proxy.as_deref_mut().map(LossProxy::open_link);
        let member = Member::enter(server, operation, room, name, port);
        for earlier in &mut members {
            earlier.client.wait_for_line(&format!("* {name} joined"));
        }
        members.push(member);
    }
    members
}

/// Types each member's lines (`NAME line N`, numbered from `first`), all at once.
fn type_lines(members: &mut [Member], first: usize, count: usize) -> Vec<String> {
    let mut typed = Vec::new();
    for n in first..first + count {
        for member in members.iter_mut() {
            let text = format!("{} line {n:03}", member.name);
            member.client.send_line(&text);
            typed.push(format!("{}: {text}", member.name));
        }
    }
    typed
}

/// Waits until every member printed `total` chat lines; returns how long that took. Panics
/// (with what each printed) when `deadline` passes first.
fn wait_for_chat_lines(members: &mut [Member], total: usize, deadline: Instant) -> Duration {
    wait_until(
        members,
        deadline,
        &format!("{total} chat lines each"),
        |members| members.iter().all(|member| member.chat.len() >= total),
    )
}

/// Reads every member's output until `done` holds; returns how long that took. Panics (with
/// what each printed) when `deadline` passes first.
fn wait_until(
    members: &mut [Member],
    deadline: Instant,
    what: &str,
    done: impl Fn(&[Member]) -> bool,
) -> Duration {
    let started = Instant::now();
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    while !done(members) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            progress(members)
        );
        // One line at a time, so that the wait ends right after the line that ends it.
        for i in 0..members.len() {
            members[i].read_line_before(Instant::now() + Duration::from_millis(5), &names);
            if done(members) {
                break;
            }
        }
    }
    started.elapsed()
}

fn progress(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| {
            format!(
                "\n{} printed {} chat lines; last lines: {:?}",
                m.name,
                m.chat.len(),
                &m.all[m.all.len().saturating_sub(8)..]
            )
        })
        .collect()
}

/// Asserts that every member printed exactly `typed` (as a set), each line once, in one and
/// the same order, and was never told that a message was not sent.
fn assert_same_transcript(members: &[Member], typed: &[String]) {
    let reference = &members[0].chat;
    for member in members {
        assert_eq!(
            member.chat.len(),
            typed.len(),
            "{} printed a different number of chat lines",
            member.name
        );
        assert_eq!(
            &member.chat, reference,
            "{} and {} printed different transcripts",
            member.name, members[0].name
        );
    }
    let distinct: HashSet<&String> = reference.iter().collect();
    assert_eq!(distinct.len(), reference.len(), "a line was printed twice");
    let expected: HashSet<&String> = typed.iter().collect();
    assert_eq!(distinct, expected, "the transcript is not what was typed");
    for member in members {
        let complaints: Vec<&String> = member
            .all
            .iter()
            .filter(|line| line.starts_with("* not sent") || line.contains("may be lost"))
            .collect();
        assert!(
            complaints.is_empty(),
            "{} was told: {complaints:?}",
            member.name
        );
    }
}

/// Asserts that each sender's lines appear in the transcript in the order they were typed.
fn assert_senders_order(members: &[Member], typed: &[String]) {
    for sender in members {
        let prefix = format!("{}: ", sender.name);
        let in_transcript: Vec<&String> = members[0]
            .chat
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        let in_typing_order: Vec<&String> =
            typed.iter().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(
            in_transcript, in_typing_order,
            "{}'s lines are not in the order they were typed",
            sender.name
        );
    }
}

/// After convergence, on a clean network: each member asks `/who`, and nothing but notices
/// comes before the answer (no late duplicate chat line).
fn assert_nothing_more(members: &mut [Member]) {
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for member in members.iter_mut() {
        member.client.send_line("/who");
        let deadline = Instant::now() + chat_tests::EVENT_TIMEOUT;
        loop {
            let line = member
                .client
                .next_line_before(deadline)
                .unwrap_or_else(|| panic!("{} got no answer to /who", member.name));
            assert!(
                !is_chat(&line, &names),
                "{} printed a chat line after converging: {line}",
                member.name
            );
            if line.starts_with("* here now: ") {
                break;
            }
        }
    }
}

/// Three members behind a lossy proxy, each typing `per_member[i]` lines at once; checks that
/// they converge on one transcript of every line, and returns them with the typed lines.
fn converge_through_faults(
    faults: Faults,
    seed: u64,
    per_member: [usize; 3],
) -> (Vec<Member>, Vec<String>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = ServerProcess::start_with(dir.path(), &["--flood-rate", "0"]);
    let mut proxy = LossProxy::new(server.udp, Faults::NONE, seed);
    let names = ["alice", "bob", "carol"];
    let mut members = enter_room(&server, "lossy", &names, Some(&mut proxy));
    proxy.set_faults(faults);

    let started = Instant::now();
    let mut typed = Vec::new();
    let most = per_member.iter().copied().max().unwrap_or(0);
    for n in 1..=most {
        for (member, &count) in members.iter_mut().zip(&per_member) {
            if n <= count {
                let text = format!("{} line {n:03}", member.name);
                member.client.send_line(&text);
                typed.push(format!("{}: {text}", member.name));
            }
        }
    }
    wait_for_chat_lines(&mut members, typed.len(), started + CONVERGENCE_LIMIT);
    let elapsed = started.elapsed();
    eprintln!(
        "v2_loss: {} messages from 3 members, {}% loss, {}% duplication, {}% reordering \
         (seed {seed:#x}): converged in {:.1} s; proxy saw {}",
        typed.len(),
        faults.loss_percent,
        faults.duplicate_percent,
        faults.reorder_percent,
        elapsed.as_secs_f64(),
        proxy.stats.summary()
    );
    // The proxy really did its job (a proxy that forwarded everything would pass trivially).
    for (what, counter, asked) in [
        ("dropped", &proxy.stats.dropped, faults.loss_percent),
        (
            "duplicated",
            &proxy.stats.duplicated,
            faults.duplicate_percent,
        ),
        ("reordered", &proxy.stats.reordered, faults.reorder_percent),
    ] {
        assert!(
            asked == 0 || counter.load(Ordering::Relaxed) > 0,
            "the proxy never {what} a datagram"
        );
    }
    assert_same_transcript(&members, &typed);
    proxy.set_faults(Faults::NONE);
    assert_nothing_more(&mut members);
    (members, typed)
}

const TWENTY_PERCENT: Faults = Faults {
    loss_percent: 20,
    duplicate_percent: 5,
    reorder_percent: 5,
};

#[test]
fn six_hundred_messages_through_20_percent_loss_arrive_once_in_the_same_order() {
    converge_through_faults(TWENTY_PERCENT, 0x5eed_0020, [200, 200, 200]);
}

#[test]
fn through_loss_each_senders_lines_keep_the_order_they_were_typed_in() {
    let (members, typed) = converge_through_faults(TWENTY_PERCENT, 0x5eed_0021, [50, 50, 50]);
    assert_senders_order(&members, &typed);
}

#[test]
fn a_hundred_messages_through_50_percent_loss_arrive_once_in_the_same_order() {
    converge_through_faults(
        Faults {
            loss_percent: 50,
            duplicate_percent: 5,
            reorder_percent: 5,
        },
        0x5eed_0050,
        [34, 33, 33],
    );
}

#[test]
fn a_kill_9_mid_conversation_loses_nothing_and_ids_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--flood-rate", "0"];
    let server = ServerProcess::start_with(dir.path(), &flags);
    // A proxy that injects no faults, to see the clients' datagrams while the server is down.
    let mut proxy = LossProxy::new(server.udp, Faults::NONE, 0x5eed_0009);
    let names = ["alice", "bob", "carol"];
    let mut members = enter_room(&server, "phoenix", &names, Some(&mut proxy));
    let deadline = Instant::now() + CONVERGENCE_LIMIT;

    // A settled conversation first.
    let mut typed = type_lines(&mut members, 1, 10);
    wait_for_chat_lines(&mut members, typed.len(), deadline);
    // Then a burst, and the server dies as soon as the first line of it is acked: the rest
    // are on their way, being stored, or waiting for their acks.
    typed.extend(type_lines(&mut members, 11, 10));
    wait_until(&mut members, deadline, "a line of the burst", |members| {
        members.iter().any(|member| member.chat.len() > 30)
    });
    let (tcp, udp) = (server.tcp, server.udp);
    server.kill9();
    let crashed_at = Instant::now();
    let shown_at_crash: Vec<usize> = members.iter().map(|m| m.chat.len()).collect();
    let lines_at_crash: Vec<usize> = members.iter().map(|m| m.all.len()).collect();

    // People keep typing while it is down; their clients send into the void.
    let sent_before = proxy.stats.from_clients.load(Ordering::Relaxed);
    typed.extend(type_lines(&mut members, 21, 5));
    while proxy.stats.from_clients.load(Ordering::Relaxed) < sent_before + 15 {
        assert!(
            Instant::now() < deadline,
            "the clients never sent their lines"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let server = ServerProcess::restart_same_ports(dir.path(), tcp, udp, &flags);
    let restarted_after = crashed_at.elapsed();
    let recovery = wait_for_chat_lines(&mut members, typed.len(), deadline);
    // And after the restart.
    typed.extend(type_lines(&mut members, 26, 5));
    wait_for_chat_lines(&mut members, typed.len(), deadline);
    eprintln!(
        "v2_loss: kill -9 with 3 members after {shown_at_crash:?} of 60 lines were shown; \
         server back after {:.2} s; the 75 lines typed before it were all shown {:.2} s \
         later; {} lines in all",
        restarted_after.as_secs_f64(),
        recovery.as_secs_f64(),
        typed.len()
    );
    assert_same_transcript(&members, &typed);
    // Without loss, retransmissions after the restart go out in seq order.
    assert_senders_order(&members, &typed);
    assert_nothing_more(&mut members);
    for (member, &from) in members.iter().zip(&lines_at_crash) {
        let rejoined: Vec<&String> = member.all[from..]
            .iter()
            .filter(|line| line.ends_with(" joined") || line.contains(" left"))
            .collect();
        assert!(
            rejoined.is_empty(),
            "{} saw membership change after the crash: {rejoined:?}",
            member.name
        );
    }

    // The stored history: ids 1..=N without gap or repeat, in the order everyone printed.
    let auditor = V2Member::new(
        server.udp,
        "phoenix",
        &join(server.tcp, "phoenix", "auditor").token(),
    );
    auditor.register(None);
    let history = auditor.whole_history(100);
    let ids: Vec<u64> = history.iter().map(|m| m.id).collect();
    let count = u64::try_from(typed.len()).unwrap();
    assert_eq!(ids, (1..=count).collect::<Vec<_>>());
    let stored: Vec<String> = history
        .iter()
        .map(|m| format!("{}: {}", m.from, m.text))
        .collect();
    assert_eq!(stored, members[0].chat, "the history is the transcript");
}

/// Sends `count` numbered datagrams through one proxy link, from the client to the server or
/// from the server to the client; returns the numbers in the order they arrived and the
/// proxy's counters (received, dropped, duplicated, reordered).
fn numbers_through_proxy(
    faults: Faults,
    seed: u64,
    count: u32,
    towards_server: bool,
) -> (Vec<u32>, [u64; 4]) {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind the server side");
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind the client side");
    for socket in [&server, &client] {
        socket
            .set_read_timeout(Some(chat_tests::EVENT_TIMEOUT))
            .expect("set timeout");
    }
    // Held-back datagrams are released by their successors only, so that a slow moment of the
    // machine cannot change the outcome.
    let mut proxy = LossProxy::new(server.local_addr().expect("bound"), Faults::NONE, seed)
        .with_reorder_hold(chat_tests::EVENT_TIMEOUT);
    let proxy_addr = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.open_link()));
    // The client speaks first, so that the proxy knows where replies go.
    client.send_to(b"hello", proxy_addr).expect("send");
    let mut buf = [0u8; 64];
    let (_, upstream) = server.recv_from(&mut buf).expect("the hello arrives");
    proxy.set_faults(faults);

    let (sender, destination, receiver) = if towards_server {
        (client, proxy_addr, server)
    } else {
        (server, upstream, client)
    };
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut markers = 0;
        let mut buf = [0u8; 64];
        while markers < 2 {
            let len = receiver
                .recv(&mut buf)
                .expect("the numbers and markers arrive");
            match <[u8; 4]>::try_from(&buf[..len]) {
                Ok(number) => got.push(u32::from_be_bytes(number)),
                Err(_) => markers += 1,
            }
        }
        got
    });
    let counted = |stats: &chat_tests::ProxyStats| {
        let from_clients = stats.from_clients.load(Ordering::Relaxed);
        if towards_server {
            from_clients - 1
        } else {
            stats.received.load(Ordering::Relaxed) - from_clients
        }
    };
    for n in 0..count {
        sender.send_to(&n.to_be_bytes(), destination).expect("send");
        // Paced, so that no socket buffer on the way overflows and loses datagrams of its
        // own: the order of the datagrams, not their timing, decides what the proxy does.
        if n % 50 == 49 {
            let deadline = Instant::now() + chat_tests::EVENT_TIMEOUT;
            while counted(&proxy.stats) < u64::from(n) + 1 {
                assert!(Instant::now() < deadline, "the proxy stalled");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let deadline = Instant::now() + chat_tests::EVENT_TIMEOUT;
    while counted(&proxy.stats) < u64::from(count) {
        assert!(Instant::now() < deadline, "the proxy stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Every number met the faults; the two end markers go through untouched, the first also
    // releasing a number held back behind it.
    proxy.set_faults(Faults::NONE);
    let received = counted(&proxy.stats);
    sender.send_to(b"end", destination).expect("send");
    sender.send_to(b"end", destination).expect("send");
    let got = reader.join().expect("the reader finishes");
    let stats = &proxy.stats;
    let counters = [
        received,
        stats.dropped.load(Ordering::Relaxed),
        stats.duplicated.load(Ordering::Relaxed),
        stats.reordered.load(Ordering::Relaxed),
    ];
    (got, counters)
}

#[test]
fn the_proxy_loses_duplicates_and_reorders_deterministically_from_its_seed() {
    let faults = Faults {
        loss_percent: 20,
        duplicate_percent: 5,
        reorder_percent: 5,
    };
    for towards_server in [true, false] {
        let run = |seed| numbers_through_proxy(faults, seed, 2000, towards_server);
        let (first, counters) = run(0x5eed_00aa);
        let (again, _) = run(0x5eed_00aa);
        let (other_seed, _) = run(0x5eed_00ab);
        assert_eq!(first, again, "the same seed gives the same faults");
        assert_ne!(first, other_seed, "another seed gives other faults");

        let [received, dropped, duplicated, reordered] = counters;
        eprintln!(
            "v2_loss: proxy self-test towards the {}: {received} datagrams, {dropped} dropped, \
             {duplicated} duplicated, {reordered} reordered",
            if towards_server { "server" } else { "client" }
        );
        assert_eq!(received, 2000);
        let delivered: HashSet<u32> = first.iter().copied().collect();
        assert_eq!(delivered.len() as u64, 2000 - dropped);
        assert_eq!(first.len() as u64, 2000 - dropped + duplicated);
        // About a fifth lost, one in twenty copied and one in twenty late.
        assert!((300..500).contains(&dropped), "{counters:?}");
        assert!((40..160).contains(&duplicated), "{counters:?}");
        assert!((40..160).contains(&reordered), "{counters:?}");
        assert!(
            first.windows(2).any(|pair| pair[0] > pair[1]),
            "nothing arrived out of order"
        );
    }
}
