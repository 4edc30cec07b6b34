//! TLS for the SMTP client: the rustls configurations (ring provider),
//! built once before the sandbox, and the words the log and the
//! deferral reasons use for what happened.
//!
//! Two configurations. Opportunistic and required TLS (Postfix's `may`
//! and `encrypt`) do not authenticate the server: [`AnyCertificate`]
//! takes any chain, but the handshake signatures are still checked
//! against the certificate the server sent, so the session is at least
//! bound to that key. `verify` uses rustls's WebPKI verifier with the
//! compiled-in webpki roots and the certificates of `smtp.tls_ca_file`
//! (read by master, since this process cannot open files): the chain
//! must lead to one of them, every certificate must be within its
//! validity dates, and the end certificate must name the host the
//! connection was made to ([`verify_name`]). A failure ends the session;
//! at `verify` and `require` it defers the mail and never falls back to
//! plaintext, at the opportunistic level the agent starts the delivery
//! again without TLS on a new connection (see the agent's `job_done`).
//!
//! Trusts: nothing from the server; the provider's algorithms; master's
//! CA certificates (checked again here).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Most names of a certificate quoted in a reason.
const NAMES_QUOTED: usize = 3;

/// The client configurations a session may use.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// Encryption without authentication (opportunistic and required TLS,
    /// `implicit` to the relay host).
    pub unverified: Arc<ClientConfig>,
    /// The certificate verified (`verify`, `implicit-verify`).
    pub verified: Arc<ClientConfig>,
}

impl TlsConfigs {
    /// `ca`: DER certificates trusted besides the webpki roots.
    pub fn new(ca: &[Vec<u8>]) -> Result<TlsConfigs, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(AnyCertificate::new(&provider));
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for (i, der) in ca.iter().enumerate() {
            roots
                .add(CertificateDer::from(der.as_slice()))
                .map_err(|e| format!("CA certificate {} from smtp.tls_ca_file: {e}", i + 1))?;
        }
        let verified = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConfigs { unverified: Arc::new(unverified), verified: Arc::new(verified) })
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

/// The name a verified session checks the certificate against: the host
/// name connected to (the MX host, or the host of a `[host]` next hop).
/// An address has no name to check.
pub fn verify_name(host: &str) -> Result<ServerName<'static>, String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "TLS policy verify: {host} is an address literal, which has no host name to verify the server \
             certificate against"
        ));
    }
    match ServerName::try_from(host.to_string()) {
        Ok(n @ ServerName::DnsName(_)) => Ok(n),
        _ => Err(format!("TLS policy verify: {host} is not a host name a certificate can be verified against")),
    }
}

/// "TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384", for the session's line.
pub fn describe(conn: &rustls::ClientConnection) -> Option<String> {
    crate::smtpd::tls::describe(conn)
}

/// "TLSv1.3:TLS13_AES_256_GCM_SHA384:verified" (or `:untrusted`), for the
/// `tls=` field of each delivery's line.
pub fn field(conn: &rustls::ClientConnection, verified: bool) -> Option<String> {
    let (version, suite) = crate::smtpd::tls::negotiated(conn)?;
    let trust = if verified { "verified" } else { "untrusted" };
    Some(format!("{version}:{suite:?}:{trust}"))
}

/// Why a handshake failed, in words for the deferral reason: what was
/// wrong with the certificate of `host`, or rustls's own words.
pub fn explain(e: &rustls::Error, host: &str) -> String {
    let rustls::Error::InvalidCertificate(ce) = e else { return e.to_string() };
    let date = |t: &UnixTime| crate::date::rfc5322_date(t.as_secs());
    let what = match ce {
        CertificateError::Expired => String::from("has expired"),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("has expired (not valid after {})", date(not_after))
        }
        CertificateError::NotValidYet => String::from("is not valid yet"),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("is not valid yet (not valid before {})", date(not_before))
        }
        CertificateError::NotValidForName => format!("does not name {host}"),
        CertificateError::NotValidForNameContext { presented, .. } => {
            let names: Vec<String> = presented.iter().take(NAMES_QUOTED).map(|n| presented_name(n)).collect();
            let more = if presented.len() > NAMES_QUOTED { ", ..." } else { "" };
            if names.is_empty() {
                format!("does not name {host} (it names no host)")
            } else {
                format!("does not name {host} (it names {}{more})", names.join(", "))
            }
        }
        CertificateError::UnknownIssuer => String::from("is not issued by a trusted certificate authority"),
        CertificateError::BadSignature => String::from("has a bad signature"),
        CertificateError::Revoked => String::from("is revoked"),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            String::from("is not for TLS servers (extended key usage)")
        }
        other => format!("was not verified: {other}"),
    };
    format!("the certificate of {host} {what}")
}

/// `DnsName("mx.example")` as webpki writes it → `mx.example`.
fn presented_name(n: &str) -> String {
    n.strip_prefix("DnsName(\"").and_then(|r| r.strip_suffix("\")")).unwrap_or(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_host_names_are_verified() {
        assert!(matches!(verify_name("mx.example.org"), Ok(ServerName::DnsName(_))));
        let e = verify_name("192.0.2.1").unwrap_err();
        assert!(e.contains("192.0.2.1 is an address literal"), "{e}");
        let e = verify_name("2001:db8::1").unwrap_err();
        assert!(e.contains("address literal"), "{e}");
        let e = verify_name("bad name").unwrap_err();
        assert!(e.contains("not a host name"), "{e}");
    }

    #[test]
    fn certificate_failures_in_words() {
        let name = |expected: &str, presented: Vec<String>| {
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from(expected.to_string()).unwrap(),
                presented,
            })
        };
        let e = name("mx.example.org", vec![String::from("DnsName(\"other.example\")")]);
        assert_eq!(
            explain(&e, "mx.example.org"),
            "the certificate of mx.example.org does not name mx.example.org (it names other.example)"
        );
        let many = (0..5).map(|i| format!("DnsName(\"n{i}.example\")")).collect();
        let text = explain(&name("mx.example.org", many), "mx.example.org");
        assert!(text.ends_with("(it names n0.example, n1.example, n2.example, ...)"), "{text}");
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(86_400 * 2)),
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(86_400)),
        });
        assert_eq!(
            explain(&expired, "mx.example.org"),
            "the certificate of mx.example.org has expired (not valid after Fri, 2 Jan 1970 00:00:00 +0000)"
        );
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(explain(&unknown, "h.example").contains("not issued by a trusted certificate authority"));
        let other = rustls::Error::General(String::from("boom"));
        assert_eq!(explain(&other, "h.example"), other.to_string());
    }

    #[test]
    fn configured_authorities_are_checked_again() {
        assert!(TlsConfigs::new(&[]).is_ok());
        let e = TlsConfigs::new(&[b"not a certificate".to_vec()]).unwrap_err();
        assert!(e.contains("CA certificate 1 from smtp.tls_ca_file"), "{e}");
    }
}
