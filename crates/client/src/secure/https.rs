//! Shared files over HTTPS in an encrypted conversation: the server serves TLS on its HTTP
//! port beside plain HTTP, with the same certificate, so the file requests (which carry the
//! token) go inside TLS pinned to the fingerprint the conversation trusts. A ureq connector
//! that always wraps the TCP connection in that TLS (URLs keep `http://`, so that ureq's own
//! TLS, not built in, is never asked for).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use chat_protocol::fingerprint::Fingerprint;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport, TransportAdapter,
};

/// Wraps every connection in TLS to the server with this fingerprint.
pub struct PinnedTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for PinnedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedTls").finish_non_exhaustive()
    }
}

impl PinnedTls {
    /// TLS to `host`'s server, whose certificate must have `fingerprint`.
    pub fn new(host: &str, fingerprint: Fingerprint) -> Result<Self, String> {
        let config = super::tls::config(Some(fingerprint), Arc::new(Mutex::new(None)))
            .map_err(|error| error.to_string())?;
        Ok(Self {
            config: Arc::new(config),
            name: super::tls::server_name(host),
        })
    }
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = PinnedTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        let mut conn = ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(|error| ureq::Error::Io(std::io::Error::other(error)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        // A certificate that is not the pinned one fails here, before any request is sent.
        conn.complete_io(&mut sock).map_err(ureq::Error::Io)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(PinnedTransport {
            buffers,
            stream: StreamOwned { conn, sock },
        }))
    }
}

/// A connection inside the pinned TLS.
pub struct PinnedTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for PinnedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedTransport").finish_non_exhaustive()
    }
}

impl Transport for PinnedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
