//! Pinning a server by its certificate's fingerprint, as every version-3 client does (our
//! client, chat-bench, the test harness): a rustls verifier that checks the handshake's
//! signature (the server proves it holds the certificate's key) and compares the certificate's
//! fingerprint with the pin, ignoring names and dates (self-signed certificates, pinned like
//! SSH host keys), and a TLS 1.3-only client configuration around it. Behind the `pinning`
//! feature, so that the codecs alone need no TLS stack.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::fingerprint::Fingerprint;

/// The verifier: with a pin, only that certificate; without one, any (recorded in
/// `presented` for the caller to decide on), or with `pin_first` the first one seen and only
/// it from then on.
#[derive(Debug)]
pub struct PinVerifier {
    expected: Mutex<Option<Fingerprint>>,
    pin_first: bool,
    presented: Arc<Mutex<Option<Fingerprint>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinVerifier {
    /// A verifier; what the server presents is written to `presented`.
    pub fn new(
        expected: Option<Fingerprint>,
        pin_first: bool,
        presented: Arc<Mutex<Option<Fingerprint>>>,
    ) -> Self {
        Self {
            expected: Mutex::new(expected),
            pin_first,
            presented,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_certificate(end_entity.as_ref());
        *self
            .presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(presented);
        let mut expected = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        match *expected {
            Some(pin) if pin != presented => Err(rustls::Error::General(format!(
                "the server presents {presented}, not the pinned {pin}"
            ))),
            Some(_) => Ok(ServerCertVerified::assertion()),
            None => {
                if self.pin_first {
                    *expected = Some(presented);
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration offers TLS 1.3 only.
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Without this a pin would only compare public bytes anyone can copy.
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS 1.3-only client configuration (ring) around `verifier`, without session resumption:
/// a resumed session would skip the certificate, and with it the pin, and every membership
/// wants fresh keys anyway.
pub fn client_config(verifier: PinVerifier) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}
