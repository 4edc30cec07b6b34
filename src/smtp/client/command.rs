//! The command lines the client sends: MAIL FROM and RCPT TO with their
//! ESMTP parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT),
//! AUTH PLAIN, and base64 (xtext and RFC 6533's forms of a UTF-8 address
//! for ORCPT are [`crate::address::orcpt`]'s). Every value
//! that reaches a command line is checked or encoded so that it cannot
//! carry a CR, an LF or a space into the line.
//!
//! Trusts: nothing; values come from queue files.

use crate::address::orcpt::{self, xtext};
use crate::address::{self, MAX_PATH};
use crate::queue::{BodyType, Notify, Ret};

use super::job::{Credentials, Features, Job, JobRecipient};

/// Base64 (RFC 4648) with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Check an envelope address before it goes into a command; returns
/// whether it needs SMTPUTF8. `postmaster` without a domain is allowed
/// for recipients (RFC 5321 4.5.1).
pub fn check_address(addr: &str, recipient: bool) -> Result<bool, address::Error> {
    if recipient && addr.eq_ignore_ascii_case("postmaster") {
        return Ok(false);
    }
    if addr.len() + 2 > MAX_PATH {
        return Err(address::Error::TooLong);
    }
    // The next server judges the local part (a long SRS sender, `a..b`).
    let mailbox = address::parse_mailbox_lenient(addr, true)?;
    Ok(mailbox.is_utf8())
}

/// The AUTH PLAIN initial response, or why the credentials cannot be sent.
pub fn auth_plain(c: &Credentials) -> Result<String, &'static str> {
    if c.username.is_empty() || c.username.contains('\0') || c.password.contains('\0') {
        return Err("a user name is required, and neither it nor the password may contain NUL");
    }
    let mut msg = Vec::with_capacity(c.username.len() + c.password.len() + 2);
    msg.push(0);
    msg.extend_from_slice(c.username.as_bytes());
    msg.push(0);
    msg.extend_from_slice(c.password.as_bytes());
    let line = format!("AUTH PLAIN {}\r\n", base64(&msg));
    // RFC 4954 4: a command line of at most 12,288 octets.
    if line.len() > 12_288 {
        return Err("user name and password are too long");
    }
    Ok(line)
}

/// MAIL FROM with the parameters the server offered and the job needs.
pub fn mail(job: &Job, features: &Features, smtputf8: bool) -> String {
    let mut line = format!("MAIL FROM:<{}>", job.sender);
    if features.size.is_some() {
        line.push_str(&format!(" SIZE={}", job.size));
    }
    if job.body == BodyType::EightBitMime && features.eightbitmime {
        line.push_str(" BODY=8BITMIME");
    }
    if smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if features.dsn {
        match job.ret {
            Some(Ret::Full) => line.push_str(" RET=FULL"),
            Some(Ret::Headers) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &job.envid {
            line.push_str(&format!(" ENVID={}", xtext(envid)));
        }
    }
    line.push_str("\r\n");
    line
}

/// RCPT TO, with NOTIFY and ORCPT when the server offered DSN;
/// `smtputf8`: the transaction's MAIL carries SMTPUTF8 (see
/// [`orcpt::to_send`]).
pub fn rcpt(r: &JobRecipient, dsn: bool, smtputf8: bool) -> String {
    let mut line = format!("RCPT TO:<{}>", r.address);
    if dsn {
        match r.notify {
            Some(Notify::Never) => line.push_str(" NOTIFY=NEVER"),
            Some(Notify::On { success, failure, delay }) => {
                let words: Vec<&str> = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                    .into_iter()
                    .filter_map(|(on, w)| on.then_some(w))
                    .collect();
                if !words.is_empty() {
                    line.push_str(&format!(" NOTIFY={}", words.join(",")));
                }
            }
            None => {}
        }
        if let Some(value) = r.orcpt.as_deref().and_then(|o| orcpt::to_send(o, smtputf8)) {
            line.push_str(&format!(" ORCPT={value}"));
        }
    }
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(base64(b"\0user\0pass"), "AHVzZXIAcGFzcw==");
    }

    #[test]
    fn addresses_that_could_break_a_command_are_refused() {
        assert_eq!(check_address("user@example.org", false), Ok(false));
        assert_eq!(check_address("üser@example.org", true), Ok(true));
        assert_eq!(check_address("Postmaster", true), Ok(false));
        assert!(check_address("Postmaster", false).is_err());
        for bad in ["a@b> SIZE=1", "a@b\r\nRSET", "a b@c", "<a@b>", "a@b@c", ""] {
            assert!(check_address(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn auth_plain_refuses_nul_and_encodes() {
        let c = |u: &str, p: &str| Credentials { username: u.into(), password: p.into() };
        assert_eq!(auth_plain(&c("user", "pass")).unwrap(), "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
        assert!(auth_plain(&c("us\0er", "pass")).is_err());
        assert!(auth_plain(&c("", "pass")).is_err());
        assert!(auth_plain(&c("user", &"x".repeat(10_000))).is_err());
    }
}
