//! The SMTP client's TLS settings: the security levels (`smtp.tls` and
//! the values of `smtp.tls_policy`), how the relay host is reached
//! (`relay.tls`), the per-destination table, and the CA file
//! (`smtp.tls_ca_file`), which master reads and checks block by block.
//!
//! Which level a session uses ([`DeliveryConf::session_tls`]): to the
//! relay host, `relay.tls` decides unless it is `starttls`; otherwise the
//! `smtp.tls_policy` entry whose key is the next hop, written the same
//! way (after [`Nexthop::parse`]: lower case, no trailing dot, brackets
//! and port as given), else `smtp.tls`. A key matches one next hop only:
//! `example.org` is the MX next hop of that domain on the default port,
//! `[mx.example.org]:587` that host's addresses on port 587.
//!
//! Trusts: the file is root's; every value is still checked.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Deserializer, Serialize};

use super::delivery::{DeliveryConf, Relay, SmtpClient};
use crate::qmgr::schedule::Nexthop;
use crate::smtp::client::TlsPolicy;

/// A TLS security level of the SMTP client (`smtp.tls`, the values of
/// `smtp.tls_policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTls {
    /// Never use STARTTLS.
    None,
    /// Use it when offered, without verifying the certificate (Postfix's
    /// `may`): protects against passive eavesdropping only.
    #[default]
    Opportunistic,
    /// Defer mail for servers that do not offer STARTTLS (Postfix's
    /// `encrypt`); the certificate is not verified.
    Require,
    /// TLS required, and the certificate chain verified against the
    /// trusted roots, its validity dates and the host name connected to
    /// checked (Postfix's `verify`); any failure defers the mail.
    Verify,
}

impl ClientTls {
    /// What the client's state machine does (it never verifies: the
    /// driver picks a verifying TLS configuration).
    pub fn policy(self) -> TlsPolicy {
        match self {
            ClientTls::None => TlsPolicy::None,
            ClientTls::Opportunistic => TlsPolicy::Opportunistic,
            ClientTls::Require | ClientTls::Verify => TlsPolicy::Require,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientTls::None => "none",
            ClientTls::Opportunistic => "opportunistic",
            ClientTls::Require => "require",
            ClientTls::Verify => "verify",
        }
    }
}

/// How the relay host is reached (`relay.tls`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// STARTTLS at the level of the relay's `smtp.tls_policy` entry, else
    /// `smtp.tls`.
    #[default]
    Starttls,
    /// STARTTLS required: mail waits rather than go in plaintext.
    Require,
    /// STARTTLS required and the certificate verified.
    Verify,
    /// TLS from the first byte (port 465), not verified.
    Implicit,
    /// TLS from the first byte, the certificate verified.
    #[serde(rename = "implicit-verify")]
    ImplicitVerify,
}

impl RelayTls {
    /// TLS from the first byte.
    pub fn implicit(self) -> bool {
        matches!(self, RelayTls::Implicit | RelayTls::ImplicitVerify)
    }

    /// The level this choice sets; None for `starttls`, which leaves it to
    /// `smtp.tls_policy` and `smtp.tls`.
    pub fn level(self) -> Option<ClientTls> {
        match self {
            RelayTls::Starttls => None,
            RelayTls::Require | RelayTls::Implicit => Some(ClientTls::Require),
            RelayTls::Verify | RelayTls::ImplicitVerify => Some(ClientTls::Verify),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RelayTls::Starttls => "starttls",
            RelayTls::Require => "require",
            RelayTls::Verify => "verify",
            RelayTls::Implicit => "implicit",
            RelayTls::ImplicitVerify => "implicit-verify",
        }
    }
}

/// The TLS of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTls {
    /// Implicit TLS has `Require` or `Verify`.
    pub level: ClientTls,
    /// TLS from the first byte.
    pub implicit: bool,
}

/// A next hop that is an address: no name to verify a certificate against.
pub fn is_address(nexthop: &Nexthop) -> bool {
    !nexthop.mx && nexthop.host.parse::<IpAddr>().is_ok()
}

/// `smtp.tls_policy`: each key a next hop in Postfix's notation, stored
/// as [`Nexthop`] writes it; each value a level. Read both from the file
/// and from master's message (keys already in that form).
pub fn de_tls_policy<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, ClientTls>, D::Error> {
    let raw = BTreeMap::<String, ClientTls>::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (key, level) in raw {
        let nexthop = Nexthop::parse(&key).map_err(|e| serde::de::Error::custom(format!("`{key}`: {e}")))?;
        if level == ClientTls::Verify && is_address(&nexthop) {
            return Err(serde::de::Error::custom(format!(
                "`{key}`: an address literal has no host name to verify a certificate against"
            )));
        }
        let normal = nexthop.to_string();
        if out.insert(normal.clone(), level).is_some() {
            return Err(serde::de::Error::custom(format!("`{key}`: the next hop `{normal}` is given twice")));
        }
    }
    Ok(out)
}

impl SmtpClient {
    /// The level for sessions to `nexthop` that are not the relay's.
    pub fn tls_level(&self, nexthop: &Nexthop) -> ClientTls {
        // Most configurations have no table: no name to make.
        if self.tls_policy.is_empty() {
            return self.tls;
        }
        self.tls_policy.get(&nexthop.to_string()).copied().unwrap_or(self.tls)
    }
}

impl DeliveryConf {
    /// The TLS of a session to `nexthop`; `to_relay`: it is the relay host.
    pub fn session_tls(&self, nexthop: &Nexthop, to_relay: bool) -> SessionTls {
        if to_relay && let Some(level) = self.relay.tls.level() {
            return SessionTls { level, implicit: self.relay.tls.implicit() };
        }
        SessionTls { level: self.smtp.tls_level(nexthop), implicit: false }
    }
}

/// Checks across `relay` and `smtp`; the message names the key.
pub fn check(relay: &Relay, smtp: &SmtpClient) -> Result<(), String> {
    let Some(host) = relay.host.as_deref() else { return Ok(()) };
    let nexthop = Nexthop::parse(host).map_err(|e| format!("key `relay.host`: {e}"))?;
    let verifies = relay.tls.level() == Some(ClientTls::Verify);
    if verifies && is_address(&nexthop) {
        return Err(format!(
            "key `relay.tls`: {} needs a host name in relay.host; `{host}` is an address literal, \
             which no certificate can be verified against",
            relay.tls.as_str()
        ));
    }
    let key = nexthop.to_string();
    if relay.tls != RelayTls::Starttls && smtp.tls_policy.contains_key(&key) {
        return Err(format!(
            "key `smtp.tls_policy`: `{key}` is the relay host, whose TLS relay.tls = {} sets \
             (set relay.tls = starttls for the table to apply)",
            relay.tls.as_str()
        ));
    }
    Ok(())
}

/// Largest CA file read.
pub const MAX_CA_FILE: u64 = 512 << 10;
/// Most certificates in the CA file.
pub const MAX_CA_CERTIFICATES: usize = 1000;

/// Read `smtp.tls_ca_file`: a regular file of PEM CERTIFICATE blocks
/// (text between them is ignored). Returns each certificate's DER; an
/// error names the file and, for a bad block, its line.
pub fn read_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use std::io::Read;
    let name = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("{name}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{name}: not a regular file"));
    }
    let mut data = Vec::new();
    f.take(MAX_CA_FILE + 1).read_to_end(&mut data).map_err(|e| format!("{name}: {e}"))?;
    if data.len() as u64 > MAX_CA_FILE {
        return Err(format!("{name}: larger than {MAX_CA_FILE} bytes"));
    }
    parse_ca_pem(&data).map_err(|e| format!("{name}: {e}"))
}

/// The CERTIFICATE blocks of a PEM bundle, each checked as a trust
/// anchor; an error names the line where the bad block starts.
pub fn parse_ca_pem(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    // Each certificate must be usable as a trust anchor: tried here.
    let mut store = rustls::RootCertStore::empty();
    // (line number of BEGIN, label, the block's text so far)
    let mut block: Option<(usize, String, Vec<u8>)> = None;
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        let trimmed = text.trim_ascii();
        match block.as_mut() {
            None => {
                let Some(rest) = trimmed.strip_prefix(b"-----BEGIN ") else { continue };
                let label = rest.strip_suffix(b"-----").unwrap_or(rest);
                let label = String::from_utf8_lossy(label).into_owned();
                if label != "CERTIFICATE" {
                    let hint = if label == "TRUSTED CERTIFICATE" {
                        " (OpenSSL's own form: convert it with `openssl x509`)"
                    } else {
                        ""
                    };
                    return Err(format!("line {n}: a `{label}` block, not a CERTIFICATE{hint}"));
                }
                let mut text = trimmed.to_vec();
                text.push(b'\n');
                block = Some((n, label, text));
            }
            Some((start, label, text)) => {
                text.extend_from_slice(trimmed);
                text.push(b'\n');
                if !trimmed.starts_with(b"-----END ") {
                    continue;
                }
                if trimmed != format!("-----END {label}-----").as_bytes() {
                    return Err(format!("line {n}: the block begun on line {start} ends with another label"));
                }
                let start = *start;
                let der = CertificateDer::from_pem_slice(text)
                    .map_err(|e| format!("line {start}: the CERTIFICATE block cannot be decoded: {e}"))?;
                store
                    .add(der.clone())
                    .map_err(|e| format!("line {start}: the certificate cannot be used as a trusted root: {e}"))?;
                if out.len() == MAX_CA_CERTIFICATES {
                    return Err(format!("line {start}: more than {MAX_CA_CERTIFICATES} certificates"));
                }
                out.push(der.as_ref().to_vec());
                block = None;
            }
        }
    }
    if let Some((start, label, _)) = block {
        return Err(format!("line {start}: the {label} block has no END line"));
    }
    if out.is_empty() {
        return Err(String::from("no CERTIFICATE block"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::smtp::agent::tests::certs;

    fn nh(s: &str) -> Nexthop {
        Nexthop::parse(s).unwrap()
    }

    #[test]
    fn levels_and_table_parse() {
        let c = Config::parse(
            "smtp {\n tls = verify;\n tls_policy {\n  \"Example.ORG.\" = \"require\";\n  \
             \"[mx.partner.example]:587\" = verify;\n  \"[192.0.2.1]\" = none;\n }\n}\n",
        )
        .unwrap();
        assert_eq!(c.smtp.tls, ClientTls::Verify);
        let keys: Vec<(&str, ClientTls)> = c.smtp.tls_policy.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            keys,
            vec![
                ("[192.0.2.1]", ClientTls::None),
                ("[mx.partner.example]:587", ClientTls::Verify),
                ("example.org", ClientTls::Require),
            ]
        );
        assert_eq!(Config::parse("").unwrap().smtp.tls, ClientTls::Opportunistic);
    }

    #[test]
    fn bad_tables_name_line_and_key() {
        let (line, m) = Config::parse("smtp {\n tls_policy {\n  \"a.example\" = \"strict\";\n }\n}\n").unwrap_err();
        assert_eq!(line, Some(3));
        assert!(m.contains("smtp.tls_policy") && m.contains("strict"), "{m}");
        let (line, m) = Config::parse("smtp {\n tls_policy {\n  \"[a.example\" = verify;\n }\n}\n").unwrap_err();
        assert!(line.is_some(), "{m}");
        assert!(m.contains("smtp.tls_policy") && m.contains("`[a.example`") && m.contains("missing `]`"), "{m}");
        let (_, m) = Config::parse("smtp { tls_policy { \"[192.0.2.1]:25\" = verify; } }\n").unwrap_err();
        assert!(m.contains("address literal has no host name"), "{m}");
        let (_, m) = Config::parse("smtp { tls_policy { \"[IPv6:2001:db8::1]\" = verify; } }\n").unwrap_err();
        assert!(m.contains("address literal"), "{m}");
        let (_, m) =
            Config::parse("smtp { tls_policy { \"a.example\" = none; \"A.example.\" = verify; } }\n").unwrap_err();
        assert!(m.contains("given twice"), "{m}");
        let (_, m) = Config::parse("smtp { tls = secure; }\n").unwrap_err();
        assert!(m.contains("smtp.tls"), "{m}");
    }

    #[test]
    fn lookup_matches_the_next_hop_as_written() {
        let c = Config::parse(
            "smtp { tls = opportunistic; tls_policy { \"example.org\" = verify; \"[mx.partner.example]:587\" = require; } }",
        )
        .unwrap();
        let d = c.delivery(None);
        let level = |s: &str| d.session_tls(&nh(s), false).level;
        assert_eq!(level("example.org"), ClientTls::Verify);
        assert_eq!(level("EXAMPLE.org."), ClientTls::Verify);
        assert_eq!(level("[mx.partner.example]:587"), ClientTls::Require);
        // Another form of the same names is another next hop.
        assert_eq!(level("[example.org]"), ClientTls::Opportunistic);
        assert_eq!(level("example.org:2525"), ClientTls::Opportunistic);
        assert_eq!(level("mx.partner.example"), ClientTls::Opportunistic);
        assert_eq!(level("[mx.partner.example]"), ClientTls::Opportunistic);
        assert_eq!(level("sub.example.org"), ClientTls::Opportunistic);
        assert!(!d.session_tls(&nh("example.org"), false).implicit);
    }

    #[test]
    fn the_relay_host_gets_relay_tls_or_the_table() {
        let relay = |tls: &str, table: &str| {
            let text = format!(
                "relay {{ host = \"[smtp.example.net]:587\"; tls = {tls}; }}\nsmtp {{ tls = none; tls_policy {{ {table} }} }}"
            );
            let c = Config::parse(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
            c.delivery(None).session_tls(&nh("[smtp.example.net]:587"), true)
        };
        let st = |level, implicit| SessionTls { level, implicit };
        assert_eq!(relay("starttls", ""), st(ClientTls::None, false));
        assert_eq!(relay("starttls", "\"[smtp.example.net]:587\" = verify;"), st(ClientTls::Verify, false));
        assert_eq!(relay("require", ""), st(ClientTls::Require, false));
        assert_eq!(relay("verify", ""), st(ClientTls::Verify, false));
        assert_eq!(relay("implicit", ""), st(ClientTls::Require, true));
        assert_eq!(relay("implicit-verify", ""), st(ClientTls::Verify, true));
        // The same next hop not as the relay host: the table and smtp.tls.
        let c = Config::parse("relay { host = \"[smtp.example.net]:587\"; tls = verify; }").unwrap();
        assert_eq!(c.delivery(None).session_tls(&nh("[smtp.example.net]:587"), false).level, ClientTls::Opportunistic);
    }

    #[test]
    fn relay_settings_that_contradict_are_refused() {
        let (_, m) = Config::parse("relay { host = \"[192.0.2.1]\"; tls = implicit-verify; }").unwrap_err();
        assert!(m.contains("key `relay.tls`") && m.contains("address literal"), "{m}");
        let (_, m) = Config::parse("relay { host = \"[smtp.example.net]\"; tls = require; }\nsmtp { tls_policy { \"[smtp.example.net]\" = verify; } }")
            .unwrap_err();
        assert!(m.contains("key `smtp.tls_policy`") && m.contains("relay.tls = require"), "{m}");
        let (_, m) = Config::parse("relay { host = \"[192.0.2.1]\"; tls = bogus; }").unwrap_err();
        assert!(m.contains("relay.tls"), "{m}");
        // Credentials need TLS with the relay, however its level is set.
        let pw = "password_file = \"/nonexistent\";";
        let (_, m) = Config::parse(&format!(
            "relay {{ host = \"[s.example]\"; {pw} }}\nsmtp {{ tls_policy {{ \"[s.example]\" = none; }} }}"
        ))
        .unwrap_err();
        assert!(m.contains("relay.password_file"), "{m}");
        assert!(Config::parse(&format!("relay {{ host = \"[s.example]\"; {pw} }}\nsmtp {{ tls = none; tls_policy {{ \"[s.example]\" = verify; }} }}")).is_ok());
        assert!(
            Config::parse(&format!("relay {{ host = \"[s.example]\"; tls = verify; {pw} }}\nsmtp {{ tls = none; }}"))
                .is_ok()
        );
        assert!(Config::parse("relay { host = \"[192.0.2.1]\"; tls = implicit; }").is_ok());
    }

    #[test]
    fn ca_bundle_blocks_are_checked_with_their_lines() {
        let two = format!("# a comment\n{}\nsome text\r\n{}", certs::CA, certs::GOOD);
        let ders = parse_ca_pem(two.as_bytes()).unwrap();
        assert_eq!(ders.len(), 2);
        assert_eq!(ders[0][0], 0x30, "DER");
        let e = parse_ca_pem(b"").unwrap_err();
        assert_eq!(e, "no CERTIFICATE block");
        let e = parse_ca_pem(format!("x\n{}", certs::GOOD_KEY).as_bytes()).unwrap_err();
        assert_eq!(e, "line 2: a `PRIVATE KEY` block, not a CERTIFICATE");
        let e = parse_ca_pem(b"-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n").unwrap_err();
        assert!(e.starts_with("line 1: a `TRUSTED CERTIFICATE` block") && e.contains("openssl x509"), "{e}");
        let cut: String = certs::CA.lines().take(4).map(|l| format!("{l}\n")).collect();
        let e = parse_ca_pem(format!("{}\n\n{cut}", certs::CA).as_bytes()).unwrap_err();
        assert_eq!(e, "line 13: the CERTIFICATE block has no END line");
        let e = parse_ca_pem(b"\n-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(e.starts_with("line 2: the CERTIFICATE block cannot be decoded"), "{e}");
        let e = parse_ca_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(e.starts_with("line 1: the certificate cannot be used as a trusted root"), "{e}");
        let e = parse_ca_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509 CRL-----\n").unwrap_err();
        assert_eq!(e, "line 3: the block begun on line 1 ends with another label");
        let many = certs::CA.repeat(MAX_CA_CERTIFICATES + 1);
        let e = parse_ca_pem(many.as_bytes()).unwrap_err();
        assert!(e.contains(&format!("more than {MAX_CA_CERTIFICATES} certificates")), "{e}");
    }

    #[test]
    fn ca_file_is_checked_for_mta_n() {
        let dir = std::env::temp_dir().join(format!("mta-ca-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mta.conf");
        std::fs::write(&conf, "aliases = \"aliases\";\nsmtp { tls_ca_file = \"ca.pem\"; }\n").unwrap();
        // Missing, then relative to the configuration's folder.
        let check = |conf: &std::path::Path| crate::master::intake::check(&Config::load(conf).unwrap());
        let e = check(&conf).unwrap_err();
        assert!(
            e.contains("key `smtp.tls_ca_file`") && e.contains(&format!("{}", dir.join("ca.pem").display())),
            "{e}"
        );
        std::fs::write(dir.join("ca.pem"), format!("{}\n-----BEGIN CERTIFICATE-----\nAAAA\n", certs::CA)).unwrap();
        let e = check(&conf).unwrap_err();
        assert!(e.contains("ca.pem: line 12: the CERTIFICATE block has no END line"), "{e}");
        std::fs::write(dir.join("ca.pem"), certs::CA).unwrap();
        check(&conf).unwrap();
        let c = Config::load(&conf).unwrap();
        assert_eq!(c.smtp.tls_ca_file, Some(dir.join("ca.pem")));
        assert_eq!(read_ca_file(&dir.join("ca.pem")).unwrap().len(), 1);
        let e = read_ca_file(&dir).unwrap_err();
        assert!(e.ends_with("not a regular file"), "{e}");
        std::fs::write(dir.join("big.pem"), vec![b'#'; MAX_CA_FILE as usize + 1]).unwrap();
        let e = read_ca_file(&dir.join("big.pem")).unwrap_err();
        assert!(e.contains(&format!("larger than {MAX_CA_FILE} bytes")), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
