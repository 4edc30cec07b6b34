//! TLS for the SMTP client: the rustls configurations (ring provider),
//! built once before the sandbox. Opportunistic TLS (Postfix's `may`, and
//! its `encrypt`, which `require` is) does not authenticate the server:
//! [`AnyCertificate`] takes any chain, but the handshake signatures are
//! still checked against the certificate the server sent, so the session
//! is at least bound to that key. A verifying configuration (`verify`,
//! `secure`) would be a second [`TlsConfigs`] field built with a root
//! store; the driver picks the configuration per session.
//!
//! Trusts: nothing from the server; the provider's algorithms.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The client configurations a session may use.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// Encryption without authentication (opportunistic and required TLS,
    /// implicit TLS to the relay host).
    pub unverified: Arc<ClientConfig>,
}

impl TlsConfigs {
    pub fn new() -> Result<TlsConfigs, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(AnyCertificate::new(&provider));
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsConfigs { unverified: Arc::new(config) })
    }
}

/// Accepts any certificate chain; verifies handshake signatures.
#[derive(Debug)]
pub struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    pub fn new(provider: &CryptoProvider) -> AnyCertificate {
        AnyCertificate { algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The name to send as SNI: the host's DNS name, or its address (no SNI)
/// when the host is an address or not a valid DNS name.
pub fn server_name(host: &str, addr: std::net::IpAddr) -> ServerName<'static> {
    match ServerName::try_from(host.to_string()) {
        Ok(n) => n,
        Err(_) => ServerName::IpAddress(addr.into()),
    }
}

/// "TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384", for logs.
pub fn describe(conn: &rustls::ClientConnection) -> Option<String> {
    crate::smtpd::tls::describe(conn)
}
