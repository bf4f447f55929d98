//! `/metrics`: what the server did and holds, in the Prometheus text format.
//!
//! Counters that the hot paths already keep as plain atomics ([`RelayStats`], [`WebStats`])
//! are read at scrape time by a collector rather than mirrored, so the relay pays nothing for
//! metrics; only handshakes (a few per second at most) count into a labelled family here.
//! No metric has a per-room label: rooms come and go, and a label per room would grow the
//! scrape without bound.
//!
//! [`WebStats`]: crate::web::peers::WebStats

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::secure::Tunnels;
use crate::shared::{SharedEngine, lock};
use crate::stats::RelayStats;
use crate::web::WebPeers;

/// A handshake's labels: the operation and its result (`ok` or the refusal's code).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// create, join or pair.
    pub op: &'static str,
    /// `ok`, or the refusal's code.
    pub result: &'static str,
}

/// Every metric the server exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Handshakes by operation and result, both front ends together.
    pub handshakes: Family<HandshakeLabels, Counter>,
}

impl Metrics {
    /// The registry, reading the data plane's counters from `stats` and `peers` and the
    /// rooms and members from `engine` at each scrape.
    pub fn new(
        engine: SharedEngine,
        stats: Arc<RelayStats>,
        peers: Arc<WebPeers>,
        tunnels: Arc<Tunnels>,
    ) -> Self {
        let mut registry = Registry::with_prefix("chat");
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "handshakes",
            "Handshakes (create, join, pair) over TCP and HTTP, by result",
            handshakes.clone(),
        );
        registry.register(
            "history_commit_seconds",
            "Time one history batch took to commit",
            stats.commit_seconds.clone(),
        );
        registry.register_collector(Box::new(Live {
            engine,
            stats,
            peers,
            tunnels,
        }));
        Self {
            registry,
            handshakes,
        }
    }

    /// Scale-out: also reports whether Redis answers (`chat_redis_up`).
    pub fn watch_cluster(&mut self, cluster: Arc<crate::cluster::Cluster>) {
        self.registry.register_collector(Box::new(RedisUp(cluster)));
    }

    /// The scrape's text.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts one handshake.
    pub fn handshake(&self, op: &'static str, result: &'static str) {
        self.handshakes
            .get_or_create(&HandshakeLabels { op, result })
            .inc();
    }
}

/// What is read at scrape time.
#[derive(Debug)]
struct Live {
    engine: SharedEngine,
    stats: Arc<RelayStats>,
    peers: Arc<WebPeers>,
    tunnels: Arc<Tunnels>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Transport {
    transport: &'static str,
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn by_label<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    gauge: bool,
    values: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let kind = if gauge {
        prometheus_client::metrics::MetricType::Gauge
    } else {
        prometheus_client::metrics::MetricType::Counter
    };
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        let metric = family.encode_family(labels)?;
        if gauge {
            ConstGauge::new(i64::try_from(*value).unwrap_or(i64::MAX)).encode(metric)?;
        } else {
            ConstCounter::new(*value).encode(metric)?;
        }
    }
    Ok(())
}

/// `chat_redis_up`: 1 while this node's calls to Redis succeed.
#[derive(Debug)]
struct RedisUp(Arc<crate::cluster::Cluster>);

impl Collector for RedisUp {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = i64::from(self.0.failure().is_none());
        gauge(
            &mut encoder,
            "redis_up",
            "Whether Redis answers this node (scale-out)",
            up,
        )
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (rooms, members) = {
            let engine = lock(&self.engine);
            (engine.room_count(), engine.members_by_transport())
        };
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        gauge(&mut encoder, "rooms", "Rooms open", to_i64(rooms))?;
        by_label(
            &mut encoder,
            "members",
            "Members by where they receive (none: not registered, or HTTP only)",
            true,
            &[
                (Transport { transport: "udp" }, members.udp as u64),
                (Transport { transport: "web" }, members.web as u64),
                (
                    Transport {
                        transport: "sealed_udp",
                    },
                    members.sealed_udp as u64,
                ),
                (
                    Transport {
                        transport: "tunnel",
                    },
                    members.tunnel as u64,
                ),
                (Transport { transport: "none" }, members.unbound as u64),
            ],
        )?;
        let stats = &self.stats;
        counter(
            &mut encoder,
            "datagrams_received",
            "UDP datagrams received",
            read(&stats.received),
        )?;
        counter(
            &mut encoder,
            "datagrams_sent",
            "UDP datagrams sent",
            read(&stats.sent),
        )?;
        by_label(
            &mut encoder,
            "datagrams_dropped",
            "UDP datagrams dropped, by reason",
            false,
            &[
                (
                    Reason {
                        reason: "malformed",
                    },
                    read(&stats.malformed),
                ),
                (
                    Reason {
                        reason: "unauthorized",
                    },
                    read(&stats.unauthorized),
                ),
                (
                    Reason {
                        reason: "rate_limited",
                    },
                    read(&stats.rate_limited),
                ),
                (Reason { reason: "forged" }, read(&stats.forged)),
                (Reason { reason: "replayed" }, read(&stats.replayed_sealed)),
                (
                    Reason {
                        reason: "unknown_key",
                    },
                    read(&stats.unknown_key),
                ),
                (
                    Reason {
                        reason: "plaintext",
                    },
                    read(&stats.plaintext),
                ),
            ],
        )?;
        counter(
            &mut encoder,
            "unsealable_frames",
            "Frames for encrypted members too large to seal, not sent (a bug if ever above 0)",
            read(&stats.unsealable),
        )?;
        counter(
            &mut encoder,
            "no_room_replies",
            "Datagrams with an unknown token answered that the room no longer exists",
            read(&stats.no_room_replies),
        )?;
        counter(
            &mut encoder,
            "replayed_messages",
            "Messages replayed to members catching up",
            read(&stats.replayed),
        )?;
        let web = &self.peers.stats;
        counter(
            &mut encoder,
            "websocket_messages_received",
            "WebSocket messages received from members",
            read(&web.received),
        )?;
        counter(
            &mut encoder,
            "websocket_messages_sent",
            "Messages queued for web connections",
            read(&web.delivered),
        )?;
        by_label(
            &mut encoder,
            "websocket_messages_dropped",
            "Messages for web connections dropped: slow (queue full; the connection is cut off) or gone (closed)",
            false,
            &[
                (Reason { reason: "slow" }, read(&web.dropped_slow)),
                (Reason { reason: "gone" }, read(&web.dropped_gone)),
            ],
        )?;
        gauge(
            &mut encoder,
            "web_connections",
            "Open web connections (WebSockets and requests waiting for an answer)",
            to_i64(self.peers.open()),
        )?;
        gauge(
            &mut encoder,
            "tunnels",
            "Open tunnels (encrypted clients' TLS connections)",
            to_i64(self.tunnels.open()),
        )?;
        let tunnels = &self.tunnels.stats;
        counter(
            &mut encoder,
            "tunnels_opened",
            "Tunnels opened (a grant or attach over TLS)",
            read(&tunnels.opened),
        )?;
        by_label(
            &mut encoder,
            "tunnels_closed_by_server",
            "Tunnels the server closed: slow (queue full) or over the --max-tunnels cap",
            false,
            &[
                (Reason { reason: "slow" }, read(&tunnels.cut_off)),
                (Reason { reason: "cap" }, read(&tunnels.refused)),
            ],
        )?;
        Ok(())
    }
}

/// The label value of a handshake's result.
pub fn result_label(result: Result<(), chat_protocol::tcrp::ErrorCode>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(code) => code.as_str(),
    }
}
