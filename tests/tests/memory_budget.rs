//! The server-wide memory budget (`--memory-budget`): rooms that fill their replay caches with
//! the largest messages must not grow the server beyond its budget. Before the budget each
//! room could keep about 1 MB of cache for good (300 rooms: 317 MB).
//!
//! The suite runs a short version; `scripts/abuse.sh` runs the long one (the ignored test)
//! and prints its figures.

use std::thread;

use chat_tests::{ServerProcess, V2Member, create, proc_status_kb};

#[derive(Debug)]
struct Figures {
    rooms: usize,
    messages: usize,
    budget_mib: u64,
    baseline_kb: u64,
    after_kb: u64,
    peak_kb: u64,
}

/// `rooms` rooms, each filled with `per_room` messages of 3,900 bytes (a replay cache holds
/// 256 per room), with the server's memory measured before and after.
fn fill_rooms(rooms: usize, per_room: u64, budget_mib: u64) -> Figures {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let budget = budget_mib.to_string();
    let server = ServerProcess::start_with(
        dir.path(),
        &[
            "--memory-budget",
            &budget,
            "--flood-rate",
            "0",
            // Every room comes from 127.0.0.1.
            "--rooms-per-ip",
            "0",
            "--handshakes-per-ip",
            "0",
            "--log-level",
            "info",
        ],
    );
    let mut hosts: Vec<V2Member> = (0..rooms)
        .map(|room| {
            let name = format!("cache{room}");
            let member = V2Member::new(
                server.udp,
                &name,
                &create(server.tcp, &name, "host").token(),
            );
            member.register(None);
            member
        })
        .collect();
    let pid = server.pid();
    let baseline_kb = proc_status_kb(pid, "VmRSS").expect("the server's memory");
    let text = "m".repeat(3900);
    let per_thread = rooms.div_ceil(16);
    let mut groups = Vec::new();
    while !hosts.is_empty() {
        let rest = hosts.split_off(per_thread.min(hosts.len()));
        groups.push(std::mem::replace(&mut hosts, rest));
    }
    thread::scope(|scope| {
        for group in groups {
            let text = &text;
            scope.spawn(move || {
                for seq in 1..=per_room {
                    for host in &group {
                        host.say_retrying(seq, text);
                    }
                }
            });
        }
    });
    let after_kb = proc_status_kb(pid, "VmRSS").expect("the server's memory");
    let peak_kb = proc_status_kb(pid, "VmHWM").expect("the server's peak memory");
    let figures = Figures {
        rooms,
        messages: rooms * per_room as usize,
        budget_mib,
        baseline_kb,
        after_kb,
        peak_kb,
    };
    println!(
        "FIGURES memory budget: {} rooms, {} messages, budget {} MiB: resident {} kB before, {} kB after (+{} kB), peak {} kB",
        figures.rooms,
        figures.messages,
        figures.budget_mib,
        figures.baseline_kb,
        figures.after_kb,
        figures.after_kb.saturating_sub(figures.baseline_kb),
        figures.peak_kb
    );
    figures
}

#[test]
fn full_replay_caches_in_many_rooms_stay_within_the_memory_budget() {
    // 40 rooms of 256 messages would cache about 40 MB; a 16 MiB budget allows 4 MiB of cache.
    let figures = fill_rooms(40, 256, 16);
    let growth_kb = figures.after_kb.saturating_sub(figures.baseline_kb);
    assert!(
        growth_kb < 24 * 1024,
        "the server grew by {growth_kb} kB for a 16 MiB budget: {figures:?}"
    );
}

#[test]
#[ignore = "long; run by scripts/abuse.sh"]
fn long_full_replay_caches() {
    let rooms = std::env::var("MEMORY_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let budget = std::env::var("MEMORY_BUDGET_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let figures = fill_rooms(rooms, 256, budget);
    assert!(figures.after_kb.saturating_sub(figures.baseline_kb) < (budget + 64) * 1024);
}
