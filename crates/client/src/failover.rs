//! Failover between the nodes of a scaled-out service (`--server a,b,c`): the membership's
//! token is valid on every node, so when the node in use stops answering, the client moves
//! its datagrams to the next one, registers there with its `last_id`, and retransmits what
//! was not acked. Nothing is lost (the new node replays what came after `last_id`) and
//! nothing is shown twice (the reorder buffer keeps ids, the servers deduplicate by `seq`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::cli::Cli;
use crate::error::ClientError;
use crate::secure::connector::Connector;
use crate::secure::known_servers::KnownServers;
use crate::secure::plane::SecurePlane;
use crate::v2::plane::DataPlane;

/// How long the node in use may stay silent before the client moves to the next one: past
/// the keepalive's re-register (3 s), so that a server that merely restarted is given its
/// chance first.
pub const FAILOVER_AFTER: Duration = Duration::from_secs(4);

/// One entry of `--server`: `HOST[:TCP_PORT[:UDP_PORT]]`, an IPv6 address in brackets when
/// it carries ports (`[::1]:9090:9091`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Host name or address.
    pub host: String,
    /// Its handshake port, when given.
    pub tcp_port: Option<u16>,
    /// Its chat port, when given.
    pub udp_port: Option<u16>,
}

impl Node {
    fn parse(entry: &str) -> Self {
        let entry = entry.trim();
        // A bare IPv6 address carries no ports here.
        if entry.parse::<std::net::Ipv6Addr>().is_ok() {
            return Self {
                host: entry.to_owned(),
                tcp_port: None,
                udp_port: None,
            };
        }
        // `[v6]:TCP:UDP`: the brackets keep the address's colons apart from the ports'.
        if let Some(rest) = entry.strip_prefix('[')
            && let Some((host, ports)) = rest.split_once(']')
        {
            let mut ports = ports.trim_start_matches(':').split(':');
            return Self {
                host: host.to_owned(),
                tcp_port: ports.next().and_then(|p| p.parse().ok()),
                udp_port: ports.next().and_then(|p| p.parse().ok()),
            };
        }
        let mut parts = entry.split(':');
        let host = parts.next().unwrap_or_default().to_owned();
        let tcp_port = parts.next().and_then(|p| p.parse().ok());
        let udp_port = parts.next().and_then(|p| p.parse().ok());
        Self {
            host,
            tcp_port,
            udp_port,
        }
    }
}

/// Splits `--server` into the node used first (its host and ports go where a single server's
/// would) and the others, kept in `cli.failover`. A single plain host is left as it is.
pub fn split_servers(cli: &mut Cli) {
    let single = !cli.server.contains(',');
    let plain_v6 = cli.server.parse::<std::net::Ipv6Addr>().is_ok();
    if single && (!cli.server.contains(':') || plain_v6) {
        return;
    }
    let nodes: Vec<Node> = cli
        .server
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(Node::parse)
        .collect();
    let mut nodes = nodes.into_iter();
    let Some(first) = nodes.next() else {
        return;
    };
    cli.server = first.host;
    if let Some(port) = first.tcp_port {
        cli.tcp_port = port;
    }
    if first.udp_port.is_some() {
        cli.udp_port = first.udp_port;
    }
    cli.failover = nodes.collect();
}

/// Moves to the next node of `--server` for the handshake: it becomes the one in use, and the
/// one that did not answer goes to the end of the list. Returns the new node, as shown.
pub fn rotate(cli: &mut Cli) -> String {
    if cli.failover.is_empty() {
        return cli.server.clone();
    }
    let next = cli.failover.remove(0);
    let previous = Node {
        host: std::mem::replace(&mut cli.server, next.host.clone()),
        tcp_port: Some(cli.tcp_port),
        udp_port: cli.udp_port,
    };
    if let Some(port) = next.tcp_port {
        cli.tcp_port = port;
    }
    cli.udp_port = next.udp_port;
    cli.failover.push(previous);
    format!("{}:{}", cli.server, cli.tcp_port)
}

/// What a conversation needs to move to another node: the nodes, and the membership's room
/// and token. A plaintext plane moves its UDP socket (the token is good on every node); a
/// sealed one attaches over TLS to the next node that answers, which gives it fresh keys
/// there (keys are never shared between nodes, so no two nodes ever seal under one key).
#[derive(Debug)]
pub struct Failover {
    cli: Cli,
    room: String,
    token: String,
}

impl Failover {
    /// Failover for this membership, when `--server` listed other nodes.
    pub fn new(cli: &Cli, room: &str, token: &str) -> Option<Self> {
        (!cli.failover.is_empty()).then(|| Self {
            cli: cli.clone(),
            room: room.to_owned(),
            token: token.to_owned(),
        })
    }

    /// Moves `plane` to the next node that takes it; the node, as shown, or `None` when no
    /// other node does (the plane stays as it was, and the caller tries again later).
    pub async fn move_on(&mut self, plane: &mut DataPlane) -> Result<Option<String>, ClientError> {
        match plane {
            DataPlane::Plain(link) => {
                if !link.can_fail_over() {
                    return Ok(None);
                }
                Ok(Some(link.fail_over().await?.to_string()))
            }
            DataPlane::Sealed(sealed) => {
                for _ in 0..self.cli.failover.len() {
                    let shown = rotate(&mut self.cli);
                    // Never a question mid-chat: a node this user has not trusted before is
                    // taken only with --trust-new-server (or the same --fingerprint).
                    let connector =
                        Connector::new(&self.cli).with_known(KnownServers::for_user(), false);
                    let secured = match connector.attach(&self.room, &self.token).await {
                        Ok(secured) => secured,
                        Err(error) => {
                            tracing::info!(node = %shown, %error, "this node does not take the membership");
                            continue;
                        }
                    };
                    let port = self
                        .cli
                        .udp_port
                        .or(secured.membership.grant.udp_port)
                        .unwrap_or(crate::cli::DEFAULT_UDP_PORT);
                    let Some(udp) = (self.cli.server.as_str(), port)
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut addrs| addrs.next())
                    else {
                        continue;
                    };
                    let reattach = connector.reattach(&self.room, &self.token, secured.fingerprint);
                    let next = SecurePlane::open(
                        udp,
                        secured,
                        reattach,
                        self.cli.tcp,
                        std::time::Instant::now(),
                    )
                    .await?;
                    let mut old = std::mem::replace(sealed, Box::new(next));
                    old.close().await;
                    return Ok(Some(shown));
                }
                Ok(None)
            }
        }
    }
}

/// The other nodes' chat addresses, in order: each node's own UDP port if given, else the
/// one in use (nodes of one service usually listen on the same ports). Names that do not
/// resolve are left out.
pub fn alternates(cli: &Cli, in_use: SocketAddr) -> Vec<SocketAddr> {
    cli.failover
        .iter()
        .filter_map(|node| {
            let port = node.udp_port.unwrap_or(in_use.port());
            (node.host.as_str(), port).to_socket_addrs().ok()?.next()
        })
        .filter(|addr| *addr != in_use)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_optional_ports() {
        assert_eq!(
            Node::parse("10.0.0.2:7000:7001"),
            Node {
                host: "10.0.0.2".into(),
                tcp_port: Some(7000),
                udp_port: Some(7001)
            }
        );
        assert_eq!(Node::parse("chat-b").tcp_port, None);
        assert_eq!(Node::parse("::1").host, "::1");
        let v6 = Node::parse("[::1]:7000:7001");
        assert_eq!(
            (v6.host.as_str(), v6.tcp_port, v6.udp_port),
            ("::1", Some(7000), Some(7001))
        );
    }
}

/// The nodes a link may use, and which one it uses now.
#[derive(Debug, Default)]
pub struct Ring {
    nodes: Vec<SocketAddr>,
    current: std::sync::atomic::AtomicUsize,
}

impl Ring {
    /// `first` in use, then `alternates` in turn.
    pub fn new(first: SocketAddr, alternates: Vec<SocketAddr>) -> Self {
        let mut nodes = vec![first];
        nodes.extend(alternates);
        Self {
            nodes,
            current: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none (no failover set).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node in use, if failover is set.
    pub fn current(&self) -> Option<SocketAddr> {
        let index = self.current.load(std::sync::atomic::Ordering::Relaxed);
        self.nodes.get(index % self.nodes.len().max(1)).copied()
    }

    /// Moves to the next node and returns it.
    pub fn advance(&self) -> SocketAddr {
        let len = self.nodes.len().max(1);
        let index = self
            .current
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.nodes
            .get(index % len)
            .copied()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}
