//! Where the nodes' pages are: each node announces its public URL (`--public-url`, else its
//! HTTP address when it is bound to one) in Redis, and the follower reads them all back. The
//! chat page asks `GET /api/nodes` for the live ones, to move to another node when its own
//! dies; every node lets pages from the other nodes' origins in (WebSocket and CORS), for as
//! long as those pages may live: a page keeps running after the node that served it is gone.
//!
//! Redis layout: `chat:urls` node → URL. Entries are not removed when a node dies (its pages
//! are still open elsewhere); `HDEL chat:urls NODE` retires a node's origin for good.

use serde::Serialize;

/// Most nodes listed, and most origins trusted: far more than one Redis serves.
pub const MAX_NODES: usize = 64;
/// Longest public URL announced or read back.
pub const MAX_URL: usize = 200;
/// The hash of announced URLs.
pub const URLS_KEY: &str = "chat:urls";

/// One live node as `GET /api/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    /// Its `--node-id`.
    pub node: String,
    /// Where its page is; None when it announced none (bound to every interface, no
    /// `--public-url`): pages cannot move there.
    pub url: Option<String>,
    /// Whether this is the node answering.
    #[serde(rename = "self")]
    pub this: bool,
}

/// The nodes as the follower last read them.
#[derive(Debug, Default)]
pub struct Directory {
    /// Live nodes, this one included, by name.
    live: Vec<NodeEntry>,
    /// The origin (`host:port`, lower case) of every announced URL, live or not.
    origins: Vec<String>,
}

impl Directory {
    /// Built from the live node names (with this one's) and every announced (node, URL).
    pub fn new(me: &str, mut live: Vec<String>, urls: &[(String, String)]) -> Self {
        if !live.iter().any(|node| node == me) {
            live.push(me.to_owned());
        }
        live.sort();
        live.dedup();
        live.truncate(MAX_NODES);
        let url_of = |node: &str| {
            urls.iter()
                .find(|(n, _)| n == node)
                .and_then(|(_, url)| parse_public_url(url).ok())
        };
        let live = live
            .into_iter()
            .map(|node| NodeEntry {
                url: url_of(&node),
                this: node == me,
                node,
            })
            .collect();
        let mut origins: Vec<String> = urls
            .iter()
            .filter_map(|(_, url)| authority(url))
            .take(MAX_NODES)
            .collect();
        origins.sort();
        origins.dedup();
        Self { live, origins }
    }

    /// The live nodes, by name.
    pub fn live(&self) -> &[NodeEntry] {
        &self.live
    }

    /// Every announced page's `host:port`, live or not: where a page may connect.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    /// Whether a page from `origin` (`http://host:port`, as browsers send it) was served by
    /// one of the nodes. The scheme does not matter: a node serves HTTP and HTTPS on one port.
    pub fn trusts(&self, origin: &str) -> bool {
        authority(origin).is_some_and(|origin| self.origins.contains(&origin))
    }
}

/// `http://host:port` (or https) with no path, query or user: the form `--public-url` takes.
/// Returned normalised: lower case, no trailing slash.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    const WHAT: &str =
        "an origin such as http://chat-a.example.org:8080 (no path), at most 200 bytes";
    let text = text.trim_end_matches('/');
    let lower = text.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or(WHAT)?;
    let valid = !rest.is_empty()
        && text.len() <= MAX_URL
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if valid { Ok(lower) } else { Err(WHAT.into()) }
}

/// The `host:port` of an origin or public URL, lower case; None when it is not one.
fn authority(origin: &str) -> Option<String> {
    let url = parse_public_url(origin).ok()?;
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_origins_only() {
        assert_eq!(
            parse_public_url("HTTP://Chat-A.example.org:8080/").as_deref(),
            Ok("http://chat-a.example.org:8080")
        );
        assert_eq!(
            parse_public_url("https://[::1]:8443").as_deref(),
            Ok("https://[::1]:8443")
        );
        for bad in [
            "chat-a:8080",
            "ftp://chat-a",
            "http://",
            "http://chat-a/path",
            "http://user@chat-a",
            "http://chat-a?x=1",
            "javascript:alert(1)",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
        assert!(parse_public_url(&format!("http://{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn every_announced_origin_is_trusted_but_only_live_nodes_are_listed() {
        let urls = vec![
            ("a".to_owned(), "http://127.0.0.1:8001".to_owned()),
            ("b".to_owned(), "http://127.0.0.1:8002".to_owned()),
            ("c".to_owned(), "not a url".to_owned()),
        ];
        let directory = Directory::new("b", vec!["c".into()], &urls);
        let listed: Vec<(&str, Option<&str>, bool)> = directory
            .live()
            .iter()
            .map(|n| (n.node.as_str(), n.url.as_deref(), n.this))
            .collect();
        assert_eq!(
            listed,
            [
                ("b", Some("http://127.0.0.1:8002"), true),
                ("c", None, false)
            ]
        );
        // a is dead, but pages it served are still open somewhere.
        assert!(directory.trusts("http://127.0.0.1:8001"));
        assert!(directory.trusts("https://127.0.0.1:8002/"));
        assert!(!directory.trusts("http://127.0.0.1:8003"));
        assert!(!directory.trusts("http://evil.example"));
        assert!(!directory.trusts("null"));
    }
}
