//! The notice pickup sends when cleanup refuses a maildrop file for good:
//! postdrop took the message, sendmail told its caller so, and without a
//! word from the mail system the sender would never learn that it went
//! nowhere. The notice is a delivery status notification like bounce's
//! (the same composer), a failure for each recipient with cleanup's
//! refusal as the reason, submitted to cleanup from the null sender. It
//! goes to the envelope sender, or to the postmaster when the sender is
//! the null sender or not an address mail can go to. The file itself is
//! kept in corrupt/ whatever happens to the notice.
//!
//! pickup keeps no copy of a message it hands over, only the first
//! `bounce.size_limit` bytes of its content (and one more) as they stream
//! past: what a notice returns at most. A message larger than that is returned as its
//! header, as bounce does, and one whose header does not fit either
//! returns nothing.
//!
//! Trusts: nothing in the envelope or content (the composer cleans what it
//! quotes).

use crate::bounce::{
    Action, Addressee, Diagnostic, Kind, Options, Original, OriginalEnvelope, RecipientReport, Report, StatusCode,
    compose, notify_wants,
};
use crate::ipc::msg::MessageEnvelope;
use crate::queue::{QueueId, Time};

/// The first bytes of a message's content and its whole length: all a
/// notice may read of it.
pub struct Kept<'a> {
    pub data: &'a [u8],
    pub len: u64,
}

impl Original for Kept<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if start < self.data.len() {
            let n = buf.len().min(self.data.len() - start);
            buf[..n].copy_from_slice(&self.data[start..start + n]);
            Ok(n)
        } else if offset >= self.len {
            Ok(0)
        } else {
            Err(std::io::Error::other("beyond the part of the message pickup kept"))
        }
    }
}

/// Why cleanup refused the message.
pub struct Refusal<'a> {
    pub code: u16,
    pub enhanced: &'a str,
    pub text: &'a str,
}

/// A notice ready for cleanup: its envelope (from `<>`) and content.
#[derive(Debug)]
pub struct Notice {
    pub envelope: MessageEnvelope,
    pub content: Vec<u8>,
    /// Whom it goes to.
    pub to: String,
}

/// The notice of a refused message, or `None` when nobody asked for one
/// (every recipient said NOTIFY=NEVER or left out FAILURE). `id` names
/// the refused message in the notice and in the log; `hostname` is this
/// host's; `size_limit` is `bounce.size_limit`.
pub fn notice(
    envelope: &MessageEnvelope,
    refusal: &Refusal<'_>,
    kept: &Kept<'_>,
    id: QueueId,
    hostname: &str,
    size_limit: u64,
    now: Time,
) -> Result<Option<Notice>, String> {
    let postmaster = format!("postmaster@{hostname}");
    // A sender no mail can go to (cleanup refused the message for it,
    // perhaps) cannot be told; the postmaster can.
    let sender_ok =
        !envelope.sender.is_empty() && crate::address::parse_mailbox_lenient(&envelope.sender, true).is_ok();
    let (to, address) = match sender_ok {
        true => (Addressee::Sender, envelope.sender.clone()),
        false => (Addressee::Postmaster, postmaster.clone()),
    };
    let status = StatusCode::parse(refusal.enhanced)
        .filter(|s| s.class() == 5)
        .or_else(|| StatusCode::new(5, 0, 0))
        .ok_or("no status code")?;
    let why = format!("{} {} {}", refusal.code, refusal.enhanced, refusal.text);
    let recipients: Vec<RecipientReport> = envelope
        .recipients
        .iter()
        .filter(|r| to == Addressee::Postmaster || notify_wants(r.notify.map(Into::into), Kind::Failure))
        .map(|r| RecipientReport {
            address: r.address.clone(),
            orcpt: r.orcpt.clone(),
            action: Action::Failed,
            status,
            remote_mta: None,
            diagnostic: Diagnostic::Local(why.clone()),
            last_attempt: Some(now.secs),
            will_retry_until: None,
        })
        .collect();
    if recipients.is_empty() {
        return Ok(None);
    }
    let report = Report {
        reporting_mta: hostname.to_string(),
        original: OriginalEnvelope {
            queue_id: id,
            // The original sender, as the postmaster should see it; the
            // composer cleans it.
            sender: envelope.sender.clone(),
            envid: envelope.envid.clone(),
            ret: envelope.ret.map(Into::into),
            arrival: now.secs,
            smtputf8: envelope.smtputf8,
            body: envelope.body.into(),
            content_len: kept.len,
        },
        kind: Kind::Failure,
        to,
        recipients,
        date: now.secs,
        unique: format!("{}P{}{}", id.as_str(), now.secs, now.micros),
    };
    let options = Options { size_limit, postmaster, ..Options::default() };
    let mut original = Kept { data: kept.data, len: kept.len };
    // Should the composer want more than was kept, the notice goes
    // without the message rather than not at all.
    let composed = compose(report.clone(), options.clone(), &mut original)
        .or_else(|_| compose(report, Options { size_limit: 0, ..options }, &mut original))
        .map_err(|e| e.to_string())?;
    let eight_bit = composed.iter().any(|&b| b >= 0x80);
    let smtputf8 = eight_bit && envelope.smtputf8;
    // The postmaster's from double-bounce@, as bounce sends them: one
    // that cannot be delivered is discarded, not reported again.
    let from = match to {
        Addressee::Sender => String::new(),
        Addressee::Postmaster => format!("double-bounce@{hostname}"),
    };
    Ok(Some(Notice {
        envelope: MessageEnvelope::internal(from, vec![address.clone()], eight_bit, smtputf8, hostname),
        content: composed,
        to: address,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::msg::MessageRecipient;
    use crate::smtpd::params::Notify;

    fn envelope(sender: &str, recipients: &[(&str, Option<Notify>)]) -> MessageEnvelope {
        let mut e = MessageEnvelope::internal(
            sender.to_string(),
            recipients.iter().map(|(r, _)| r.to_string()).collect(),
            false,
            false,
            "host.example",
        );
        e.submitter = Some(1000);
        for (r, (_, notify)) in e.recipients.iter_mut().zip(recipients) {
            r.notify = *notify;
        }
        e
    }

    const REFUSAL: Refusal<'static> = Refusal { code: 552, enhanced: "5.3.4", text: "Error: message file too big" };

    fn id() -> QueueId {
        QueueId::new(Time { secs: 1_800_000_000, micros: 0 }, 1, 1)
    }

    fn now() -> Time {
        Time { secs: 1_800_000_000, micros: 5 }
    }

    fn text(n: &Notice) -> String {
        String::from_utf8_lossy(&n.content).into_owned()
    }

    #[test]
    fn the_sender_hears_why_each_recipient_got_nothing() {
        let e = envelope("jo@host.example", &[("ann@example.org", None), ("bob@example.org", None)]);
        let content = b"Subject: the report\r\n\r\nquarterly figures\r\n";
        let kept = Kept { data: content, len: content.len() as u64 };
        let n = notice(&e, &REFUSAL, &kept, id(), "host.example", 50_000, now()).unwrap().unwrap();
        assert_eq!(n.to, "jo@host.example");
        assert_eq!(n.envelope.sender, "", "from the null sender");
        assert_eq!(
            n.envelope.recipients,
            vec![MessageRecipient { address: String::from("jo@host.example"), notify: None, orcpt: None }]
        );
        assert_eq!((n.envelope.protocol.as_str(), n.envelope.submitter), ("local", None));
        let t = text(&n);
        assert!(t.contains("\r\nTo: <jo@host.example>\r\n"), "{t}");
        for r in ["ann@example.org", "bob@example.org"] {
            assert!(t.contains(&format!("Final-Recipient: rfc822; {r}\r\n")), "{t}");
        }
        assert!(t.contains("Status: 5.3.4\r\n"), "{t}");
        assert!(t.contains("552 5.3.4 Error: message file too big"), "{t}");
        assert!(t.contains(&format!("X-Mta-Queue-ID: {}", id().as_str())), "{t}");
        assert!(t.contains("quarterly figures"), "the message is returned: {t}");
    }

    #[test]
    fn a_sender_mail_cannot_reach_is_replaced_by_the_postmaster() {
        for sender in ["", "a@host.example\r\nRCPT TO:<x@example.org>"] {
            let never = Notify { never: true, ..Notify::default() };
            let e = envelope(sender, &[("ann@example.org", Some(never))]);
            let kept = Kept { data: b"Subject: x\r\n\r\ny\r\n", len: 17 };
            let n = notice(&e, &REFUSAL, &kept, id(), "host.example", 50_000, now()).unwrap().unwrap();
            assert_eq!(n.to, "postmaster@host.example", "{sender:?}");
            assert_eq!(n.envelope.sender, "double-bounce@host.example", "{sender:?}");
            let why = if sender.is_empty() {
                "with the null sender"
            } else {
                "sender is not an address mail can be returned to"
            };
            assert!(text(&n).contains(why), "{}", text(&n));
            assert!(!text(&n).contains("\r\nRCPT TO"), "the sender is cleaned");
            assert!(text(&n).contains("\r\nSubject: x\r\n\r\ny\r\n"), "the message is returned: {}", text(&n));
        }
    }

    #[test]
    fn nobody_who_asked_not_to_be_told_is_told() {
        let never = Notify { never: true, ..Notify::default() };
        let e = envelope("jo@host.example", &[("ann@example.org", Some(never))]);
        let kept = Kept { data: b"Subject: x\r\n\r\ny\r\n", len: 17 };
        assert!(notice(&e, &REFUSAL, &kept, id(), "host.example", 50_000, now()).unwrap().is_none());
    }

    #[test]
    fn a_large_message_is_returned_as_its_header_from_what_was_kept() {
        let e = envelope("jo@host.example", &[("ann@example.org", None)]);
        let mut content = b"Subject: big\r\n\r\n".to_vec();
        content.resize(1000, b'x');
        // Only the first 100 bytes were kept of a message of a million.
        let kept = Kept { data: &content[..100], len: 1_000_000 };
        let n = notice(&e, &REFUSAL, &kept, id(), "host.example", 100, now()).unwrap().unwrap();
        let t = text(&n);
        assert!(t.contains("Subject: big"), "{t}");
        assert!(!t.contains("xxxx"), "{t}");
        // A header larger than what was kept: the notice goes without it.
        let header = format!("Subject: {}\r\n\r\nbody\r\n", "y".repeat(500));
        let kept = Kept { data: &header.as_bytes()[..100], len: header.len() as u64 };
        let n = notice(&e, &REFUSAL, &kept, id(), "host.example", 100, now()).unwrap().unwrap();
        assert!(text(&n).contains("552 5.3.4"));
    }
}
