//! Which way sealed datagrams go, UDP or the tunnel (the TLS connection), without I/O: the
//! caller reports what it heard and sent, and asks at `now` what to do.
//!
//! UDP is used while it answers. After [`PathTiming::udp_silence`] without an authentic
//! datagram over UDP (the conversation pings every 2 s, so a live UDP path is never that
//! quiet), the client moves to the tunnel and registers there. On the tunnel it sends a
//! `register` over UDP every [`PathTiming::probe_every`]; the server answers a register from
//! an address it is not bound to with a `challenge`, so a challenge heard over UDP means UDP
//! works again: the caller echoes it over UDP, which moves the binding back. With `--tcp`
//! the tunnel is used from the start and UDP is never tried.

use std::time::{Duration, Instant};

/// The two ways to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Datagrams over UDP.
    Udp,
    /// Tunnel frames over the TLS connection.
    Tunnel,
}

/// The paces of the path choice; the defaults are the contract's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTiming {
    /// UDP without an answer this long: move to the tunnel.
    pub udp_silence: Duration,
    /// On the tunnel, a `register` over UDP this often.
    pub probe_every: Duration,
    /// A keepalive frame after this long without sending on the tunnel (the server closes a
    /// tunnel silent for 60 s).
    pub keepalive_after: Duration,
}

impl Default for PathTiming {
    fn default() -> Self {
        Self {
            udp_silence: Duration::from_secs(3),
            probe_every: Duration::from_secs(5),
            keepalive_after: Duration::from_secs(20),
        }
    }
}

/// What the caller should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAction {
    /// UDP went quiet: the route is now the tunnel; register there (with `last_id`) and
    /// retransmit what is unacked.
    MovedToTunnel,
    /// On the tunnel: send a `register` over UDP to see whether it answers.
    ProbeUdp,
    /// Send a keepalive frame on the tunnel.
    Keepalive,
}

/// The path state of one membership.
#[derive(Debug, Clone)]
pub struct PathState {
    timing: PathTiming,
    forced: bool,
    route: Route,
    /// When UDP last answered, or became the route (whichever is later).
    udp_fresh: Instant,
    next_probe: Instant,
    last_tunnel_send: Instant,
    tunnel_up: bool,
}

impl PathState {
    /// Starts on UDP, or on the tunnel when `forced` (`--tcp`); the tunnel is up (the
    /// handshake's connection).
    pub fn new(timing: PathTiming, forced: bool, now: Instant) -> Self {
        Self {
            timing,
            forced,
            route: if forced { Route::Tunnel } else { Route::Udp },
            udp_fresh: now,
            next_probe: now + timing.probe_every,
            last_tunnel_send: now,
            tunnel_up: true,
        }
    }

    /// Where datagrams go now.
    pub fn route(&self) -> Route {
        self.route
    }

    /// Whether the tunnel is the route because of `--tcp` (else because UDP is blocked).
    pub fn forced(&self) -> bool {
        self.forced
    }

    /// Whether the tunnel is connected (and attached).
    pub fn tunnel_up(&self) -> bool {
        self.tunnel_up
    }

    /// An authentic datagram came over UDP.
    pub fn heard_udp(&mut self, now: Instant) {
        self.udp_fresh = self.udp_fresh.max(now);
    }

    /// A `challenge` came over UDP. `true` when the caller should echo it over UDP and the
    /// route is now UDP (it was the tunnel); `false` when it is an ordinary challenge on
    /// the route in use (the conversation answers it).
    pub fn udp_challenged(&mut self, now: Instant) -> bool {
        self.heard_udp(now);
        if self.route == Route::Tunnel && !self.forced {
            self.route = Route::Udp;
            self.udp_fresh = now;
            return true;
        }
        false
    }

    /// Whether a `moved` that came by `via` is for the conversation: one on the path just
    /// left is the server confirming the switch, and is ignored.
    pub fn moved_counts(&self, via: Route) -> bool {
        via == self.route
    }

    /// Something was written on the tunnel.
    pub fn sent_on_tunnel(&mut self, now: Instant) {
        self.last_tunnel_send = now;
    }

    /// The tunnel broke: nothing can go on it until it is back.
    pub fn tunnel_lost(&mut self) {
        self.tunnel_up = false;
    }

    /// The tunnel is back (attached with fresh keys). UDP gets a fresh chance too: its
    /// silence may have been the server's restart.
    pub fn tunnel_back(&mut self, now: Instant) {
        self.tunnel_up = true;
        self.last_tunnel_send = now;
        self.udp_fresh = now;
        self.next_probe = now + self.timing.probe_every;
    }

    /// What is due at `now`, if anything; it counts as done.
    pub fn poll(&mut self, now: Instant) -> Option<PathAction> {
        if self.route == Route::Udp
            && self.tunnel_up
            && now.saturating_duration_since(self.udp_fresh) >= self.timing.udp_silence
        {
            self.route = Route::Tunnel;
            self.next_probe = now + self.timing.probe_every;
            self.last_tunnel_send = now;
            return Some(PathAction::MovedToTunnel);
        }
        if self.route == Route::Tunnel && !self.forced && now >= self.next_probe {
            self.next_probe = now + self.timing.probe_every;
            return Some(PathAction::ProbeUdp);
        }
        if self.tunnel_up
            && now.saturating_duration_since(self.last_tunnel_send) >= self.timing.keepalive_after
        {
            self.last_tunnel_send = now;
            return Some(PathAction::Keepalive);
        }
        None
    }

    /// The next instant at which [`PathState::poll`] may have something to do.
    pub fn next_wakeup(&self) -> Instant {
        let mut next = self.last_tunnel_send + self.timing.keepalive_after;
        match self.route {
            Route::Udp if self.tunnel_up => {
                next = next.min(self.udp_fresh + self.timing.udp_silence)
            }
            Route::Udp => {}
            Route::Tunnel if !self.forced => next = next.min(self.next_probe),
            Route::Tunnel => {}
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    /// Polls at every wakeup up to `until`, as the event loop does (bounded).
    fn drain(path: &mut PathState, until: Instant) -> Vec<PathAction> {
        let mut done = Vec::new();
        for _ in 0..100 {
            let at = path.next_wakeup();
            if at > until {
                break;
            }
            done.extend(path.poll(at));
        }
        done
    }

    #[test]
    fn udp_that_answers_stays_the_route() {
        let start = Instant::now();
        let mut path = PathState::new(PathTiming::default(), false, start);
        for tick in 1..=20 {
            let now = start + secs(f64::from(tick) * 2.0);
            path.heard_udp(now);
            assert_eq!(
                path.poll(now),
                if tick % 10 == 0 {
                    Some(PathAction::Keepalive)
                } else {
                    None
                }
            );
        }
        assert_eq!(path.route(), Route::Udp);
    }

    #[test]
    fn three_silent_seconds_move_to_the_tunnel_then_udp_is_probed_every_five() {
        let start = Instant::now();
        let mut path = PathState::new(PathTiming::default(), false, start);
        path.heard_udp(start + secs(1.0));
        assert_eq!(path.poll(start + secs(3.9)), None);
        assert_eq!(path.next_wakeup(), start + secs(4.0));
        assert_eq!(
            path.poll(start + secs(4.0)),
            Some(PathAction::MovedToTunnel)
        );
        assert_eq!(path.route(), Route::Tunnel);
        assert_eq!(path.poll(start + secs(8.9)), None);
        assert_eq!(path.poll(start + secs(9.0)), Some(PathAction::ProbeUdp));
        assert_eq!(path.poll(start + secs(13.0)), None);
        assert_eq!(path.poll(start + secs(14.0)), Some(PathAction::ProbeUdp));
        // Something over UDP that is not a challenge does not move the route back.
        path.heard_udp(start + secs(14.5));
        assert_eq!(path.route(), Route::Tunnel);
        // The probe's challenge does.
        assert!(path.udp_challenged(start + secs(14.6)));
        assert_eq!(path.route(), Route::Udp);
        // And UDP has a fresh three seconds.
        assert_eq!(path.poll(start + secs(17.5)), None);
        assert_eq!(
            path.poll(start + secs(17.6)),
            Some(PathAction::MovedToTunnel)
        );
    }

    #[test]
    fn an_ordinary_challenge_on_udp_is_the_conversations() {
        let start = Instant::now();
        let mut path = PathState::new(PathTiming::default(), false, start);
        assert!(!path.udp_challenged(start + secs(1.0)));
        assert_eq!(path.route(), Route::Udp);
    }

    #[test]
    fn tcp_forced_never_probes_udp() {
        let start = Instant::now();
        let mut path = PathState::new(PathTiming::default(), true, start);
        assert_eq!(path.route(), Route::Tunnel);
        assert_eq!(path.poll(start + secs(10.0)), None);
        assert!(!path.udp_challenged(start + secs(11.0)));
        assert_eq!(path.route(), Route::Tunnel);
        assert_eq!(path.poll(start + secs(20.0)), Some(PathAction::Keepalive));
        assert_eq!(path.next_wakeup(), start + secs(40.0));
    }

    #[test]
    fn keepalives_follow_twenty_seconds_without_sending_on_the_tunnel() {
        let start = Instant::now();
        let mut path = PathState::new(PathTiming::default(), true, start);
        path.sent_on_tunnel(start + secs(15.0));
        assert_eq!(path.poll(start + secs(34.9)), None);
        assert_eq!(path.poll(start + secs(35.0)), Some(PathAction::Keepalive));
        assert_eq!(path.poll(start + secs(36.0)), None);
    }

    #[test]
    fn a_lost_tunnel_is_not_moved_to_and_gets_no_keepalives() {
        let start = Instant::now();
        let mut path = PathState::new(PathTiming::default(), false, start);
        path.tunnel_lost();
        assert_eq!(drain(&mut path, start + secs(60.0)), Vec::new());
        assert_eq!(path.route(), Route::Udp);
        // Back (a server restart): UDP gets a fresh three seconds first.
        path.tunnel_back(start + secs(61.0));
        assert_eq!(path.poll(start + secs(63.9)), None);
        assert_eq!(
            path.poll(start + secs(64.0)),
            Some(PathAction::MovedToTunnel)
        );
    }

    #[test]
    fn moved_counts_only_on_the_route_in_use() {
        let start = Instant::now();
        let mut path = PathState::new(PathTiming::default(), false, start);
        assert!(path.moved_counts(Route::Udp));
        assert!(!path.moved_counts(Route::Tunnel));
        path.poll(start + secs(3.0));
        assert!(!path.moved_counts(Route::Udp));
        assert!(path.moved_counts(Route::Tunnel));
    }
}
