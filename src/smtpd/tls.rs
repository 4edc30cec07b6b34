//! TLS for the SMTP server: a rustls configuration (ring provider) built
//! from the PEM certificate chain and key that master read and sent, with
//! session tickets.
//!
//! Trusts: master's material; it is still parsed and checked here.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Build the server configuration; an error says what is wrong with the files.
pub fn server_config(certificate: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(certificate)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err(String::from("certificate: no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    // Session tickets (RFC 5077, RFC 8446 4.6.1): a client that comes
    // back resumes its session without a full handshake, however many
    // others came meanwhile, and the server keeps nothing per client.
    // Without them rustls resumes from a cache of the last 256 sessions,
    // which a busy server turns over in seconds. The key is random, held
    // in memory only, and replaced every 6 hours (rustls's ring
    // ticketer); the tickets of one smtpd process are not the others'.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    Ok(Arc::new(config))
}

/// "TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384", for Received: and logs
/// (of a server or a client connection).
pub fn describe(conn: &rustls::CommonState) -> Option<String> {
    let (version, suite) = negotiated(conn)?;
    Some(format!("{version} with cipher {suite:?}"))
}

/// The version's name ("TLSv1.3") and the cipher suite of a connection
/// whose handshake is done.
pub fn negotiated(conn: &rustls::CommonState) -> Option<(&'static str, rustls::CipherSuite)> {
    let version = match conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        _ => "TLS",
    };
    Some((version, conn.negotiated_cipher_suite()?.suite()))
}
