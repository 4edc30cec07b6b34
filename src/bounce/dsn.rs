//! The composer: a report, from its envelope and recipients to the last
//! CR LF, handed out chunk by chunk, the original pulled in chunks.
//!
//! A MIME boundary must be announced in the header before any part, and
//! must occur nowhere inside the parts. The composer therefore plans
//! before it writes: one pass over the original decides what is returned
//! (see the module text of `bounce`) and checks the first boundary
//! candidate against it; a colliding candidate is replaced by the next one
//! and checked in another pass, at most eight times. Candidates are made of
//! the queue ID, the caller's unique token and a counter, and are checked
//! against every value the report quotes as well (addresses, replies, host
//! names), so no line of the report but the delimiters can hold one. The
//! copy pass checks the bytes again as it hands them out; a source that
//! read differently the second time is an error, not a broken report.
//!
//! Trusts: nothing in the report's values or the content; the [`Original`]
//! may return short reads.

use super::scan::Scan;
use super::text::{TextEncoding, WRAP_INDENT, alnum, clean, field, fits_plain, wrap};
use super::{Action, Addressee, BodyType, Diagnostic, Error, Kind, Options, Original, RecipientReport, Report, Ret};
use crate::cleanup::message::rfc5322_date;
use crate::queue::{MAX_ADDRESS, MAX_ENVID};

/// Boundaries tried before giving up.
const BOUNDARY_TRIES: usize = 8;
/// Most characters of the caller's unique token used.
const MAX_TOKEN: usize = 40;
/// Longest host name written.
const MAX_HOST: usize = 255;
/// Longest diagnostic written.
const MAX_DIAGNOSTIC: usize = 2048;

/// What part of the original a report returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Returned {
    /// Nothing: the report has two parts.
    Nothing,
    /// The first this many bytes: whole header fields.
    Headers(u64),
    /// The whole message, this many bytes.
    Message(u64),
}

impl Returned {
    /// Bytes of the original returned.
    pub fn bytes(self) -> u64 {
        match self {
            Returned::Nothing => 0,
            Returned::Headers(n) | Returned::Message(n) => n,
        }
    }
}

/// What the composer decided before writing; the caller needs `body` and
/// `smtputf8` to submit the report (MAIL FROM:<> BODY=8BITMIME, SMTPUTF8).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Plan {
    pub returned: Returned,
    /// SevenBit, or EightBitMime when any part holds 8-bit text.
    pub body: BodyType,
    /// The report's own header or envelope needs SMTPUTF8 (a UTF-8
    /// addressee or host name of an SMTPUTF8 original).
    pub smtputf8: bool,
    /// The MIME boundary.
    pub boundary: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Head,
    TextRecipient(usize),
    DsnHead,
    DsnRecipient(usize),
    OriginalHead,
    Original,
    Close,
    Done,
}

/// Composes one report; see the module text. Call [`Composer::next_chunk`]
/// until it returns `None`, writing each chunk out in order.
#[derive(Debug)]
pub struct Composer {
    report: Report,
    options: Options,
    /// The RFC 6533 types: the original came with SMTPUTF8.
    global: bool,
    host: String,
    to: String,
    token: String,
    /// The text or delivery-status part holds UTF-8.
    generated_8bit: bool,
    /// Plain, or quoted-printable when a word of the text part is too
    /// long for a line.
    text_encoding: TextEncoding,
    plan: Option<Plan>,
    /// The returned part of the original holds 8-bit bytes.
    content_8bit: bool,
    stage: Stage,
    buf: Vec<u8>,
    /// The copy pass's check of the returned bytes.
    copy: Option<Scan>,
    failed: bool,
}

/// Compose a whole report into memory: for tests and small reports.
pub fn compose<O: Original + ?Sized>(report: Report, options: Options, original: &mut O) -> Result<Vec<u8>, Error> {
    let mut composer = Composer::new(report, options)?;
    let mut out = Vec::new();
    while let Some(chunk) = composer.next_chunk(original)? {
        out.extend_from_slice(chunk);
    }
    Ok(out)
}

impl Composer {
    /// Checks the report: never to the null sender, at least one
    /// recipient, actions that belong to the kind, a usable unique token.
    pub fn new(mut report: Report, options: Options) -> Result<Composer, Error> {
        let global = report.original.smtputf8;
        // Each ORCPT in the form the report gives it (RFC 6533 3), once,
        // so that the boundary is checked against what is written.
        for r in &mut report.recipients {
            if let Some(o) = r.orcpt.take() {
                let (kind, address) = crate::address::orcpt::to_report(&o, global);
                r.orcpt = Some(format!("{kind};{address}"));
            }
        }
        let (to, empty) = match report.to {
            Addressee::Sender => (report.original.sender.as_str(), Error::NullSender),
            Addressee::Postmaster => (options.postmaster.as_str(), Error::NoPostmaster),
        };
        let to = clean(to, global, MAX_ADDRESS);
        if to.is_empty() {
            return Err(empty);
        }
        if report.recipients.is_empty() {
            return Err(Error::NoRecipients);
        }
        if let Some((index, r)) = report.recipients.iter().enumerate().find(|(_, r)| !r.action.belongs_to(report.kind))
        {
            return Err(Error::ActionMismatch { index, action: r.action, kind: report.kind });
        }
        let token = alnum(&report.unique, MAX_TOKEN);
        if token.is_empty() {
            return Err(Error::NoUniqueToken);
        }
        let mut host = clean(&report.reporting_mta, global, MAX_HOST).replace(' ', "?");
        if host.is_empty() {
            host = String::from("localhost");
        }
        let generated_8bit = global && quoted_values(&report, &host, &to).any(|v| !v.is_ascii());
        let mut composer = Composer {
            report,
            options,
            global,
            host,
            to,
            token,
            generated_8bit,
            text_encoding: TextEncoding::Plain,
            plan: None,
            content_8bit: false,
            stage: Stage::Head,
            buf: Vec::new(),
            copy: None,
            failed: false,
        };
        let plain = composer.report.recipients.iter().all(|r| fits_plain(&composer.text_entry(r), WRAP_INDENT));
        if !plain {
            composer.text_encoding = TextEncoding::QuotedPrintable;
        }
        Ok(composer)
    }

    /// Plans the report, reading the original once (or a few times, when
    /// a boundary collides); `next_chunk` does it if it was not done.
    pub fn plan<O: Original + ?Sized>(&mut self, original: &mut O) -> Result<&Plan, Error> {
        if self.failed {
            return Err(Error::Aborted);
        }
        if self.plan.is_none() {
            match self.make_plan(original) {
                Ok(plan) => self.plan = Some(plan),
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        self.plan.as_ref().ok_or(Error::Aborted)
    }

    /// The next chunk of the report, or None when it is complete.
    pub fn next_chunk<O: Original + ?Sized>(&mut self, original: &mut O) -> Result<Option<&[u8]>, Error> {
        self.plan(original)?;
        match self.step(original) {
            Ok(true) => Ok(Some(&self.buf)),
            Ok(false) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn boundary(&self, attempt: usize) -> String {
        format!("{}.{}.{attempt}", self.report.original.queue_id, self.token)
    }

    fn make_plan<O: Original + ?Sized>(&mut self, original: &mut O) -> Result<Plan, Error> {
        let env = &self.report.original;
        let len = env.content_len;
        let limit = self.options.size_limit;
        let read_size = self.options.read_size.max(1);
        let whole = self.report.kind == Kind::Failure
            && env.ret != Some(Ret::Headers)
            && env.body != BodyType::BinaryMime
            && len <= limit;
        let mut scan = Scan::new(&self.boundary(0), Some(limit));
        let returned = if limit == 0 || len == 0 {
            Returned::Nothing
        } else {
            // For the header only, one byte past the limit tells whether the
            // field ending at the limit continues.
            let end = if whole { len } else { len.min(limit.saturating_add(1)) };
            read_range(original, &mut self.buf, &mut scan, end, len, read_size, !whole)?;
            if scan.offset() == len {
                scan.finish_content();
            }
            match scan.header_cut() {
                _ if whole && scan.clean_before(len) => Returned::Message(len),
                0 => Returned::Nothing,
                cut => Returned::Headers(cut),
            }
        };
        let end = returned.bytes();
        let mut attempt = 0;
        while scan.found_within(end) || self.quotes(&self.boundary(attempt)) {
            attempt += 1;
            if attempt == BOUNDARY_TRIES {
                return Err(Error::BoundaryCollision { tried: attempt });
            }
            scan = Scan::new(&self.boundary(attempt), None);
            read_range(original, &mut self.buf, &mut scan, end, len, read_size, false)?;
        }
        self.content_8bit = scan.eight_bit_before(end);
        let body = match self.content_8bit || self.generated_8bit {
            true => BodyType::EightBitMime,
            false => BodyType::SevenBit,
        };
        let smtputf8 = !self.to.is_ascii() || !self.host.is_ascii();
        Ok(Plan { returned, body, smtputf8, boundary: self.boundary(attempt) })
    }

    /// Whether a value the report quotes contains `boundary`.
    fn quotes(&self, boundary: &str) -> bool {
        quoted_values(&self.report, &self.host, &self.to).any(|v| v.contains(boundary))
    }

    /// Fills `buf` with the next chunk; false when the report is complete.
    fn step<O: Original + ?Sized>(&mut self, original: &mut O) -> Result<bool, Error> {
        let Some(plan) = self.plan.as_ref() else { return Err(Error::Aborted) };
        let returned = plan.returned;
        let n = self.report.recipients.len();
        let (text, next) = match self.stage {
            Stage::Head => (self.head(plan), Stage::TextRecipient(0)),
            Stage::TextRecipient(i) => {
                let next = if i + 1 < n { Stage::TextRecipient(i + 1) } else { Stage::DsnHead };
                (self.text_recipient(&self.report.recipients[i]), next)
            }
            Stage::DsnHead => (self.dsn_head(&plan.boundary), Stage::DsnRecipient(0)),
            Stage::DsnRecipient(i) => {
                let next = if i + 1 < n { Stage::DsnRecipient(i + 1) } else { Stage::OriginalHead };
                (self.dsn_recipient(&self.report.recipients[i]), next)
            }
            Stage::OriginalHead if returned == Returned::Nothing => (String::new(), Stage::Close),
            Stage::OriginalHead => (self.original_head(plan), Stage::Original),
            Stage::Original => return self.copy(original),
            Stage::Close => (format!("\r\n--{}--\r\n", plan.boundary), Stage::Done),
            Stage::Done => return Ok(false),
        };
        self.stage = next;
        if text.is_empty() {
            return self.step(original);
        }
        self.buf.clear();
        self.buf.extend_from_slice(text.as_bytes());
        Ok(true)
    }

    /// The next chunk of the returned original, checked again.
    fn copy<O: Original + ?Sized>(&mut self, original: &mut O) -> Result<bool, Error> {
        let Some(plan) = self.plan.as_ref() else { return Err(Error::Aborted) };
        let end = plan.returned.bytes();
        let copy = self.copy.get_or_insert_with(|| Scan::new(&plan.boundary, None));
        let offset = copy.offset();
        if offset < end {
            let want = (end - offset).min(self.options.read_size.max(1) as u64) as usize;
            read_chunk(original, &mut self.buf, offset, want, self.report.original.content_len)?;
            copy.feed(&self.buf);
            return Ok(true);
        }
        if end == self.report.original.content_len {
            copy.finish_content();
        }
        if copy.found_within(end) || !copy.clean_before(end) || (copy.eight_bit_before(end) && !self.content_8bit) {
            return Err(Error::ContentChanged);
        }
        self.stage = Stage::Close;
        self.step(original)
    }

    fn subject(&self) -> &'static str {
        match (self.report.kind, self.report.to) {
            (Kind::Failure, Addressee::Sender) => "Undelivered Mail Returned to Sender",
            (Kind::Failure, Addressee::Postmaster) => "Postmaster Notice: Undelivered Mail",
            (Kind::Delay, _) => "Delayed Mail (still being retried)",
            (Kind::Success, _) => "Successful Mail Delivery Report",
        }
    }

    /// The report's header, the preamble, and the text part up to the
    /// recipients.
    fn head(&self, plan: &Plan) -> String {
        let mut s = String::new();
        let host = &self.host;
        field(&mut s, "From", &format!("Mail Delivery System <MAILER-DAEMON@{host}>"));
        field(&mut s, "To", &format!("<{}>", self.to));
        field(&mut s, "Subject", self.subject());
        field(&mut s, "Date", &rfc5322_date(u64::try_from(self.report.date).unwrap_or(0)));
        field(&mut s, "Message-ID", &format!("<{}.{}@{host}>", self.report.original.queue_id, self.token));
        // RFC 3834: a reply to the sender's message; a notice to the
        // postmaster is no reply to anything the postmaster sent.
        let auto = if self.report.to == Addressee::Sender { "auto-replied" } else { "auto-generated" };
        field(&mut s, "Auto-Submitted", auto);
        field(&mut s, "MIME-Version", "1.0");
        let report_type = if self.global { "global-delivery-status" } else { "delivery-status" };
        s.push_str(&format!(
            "Content-Type: multipart/report; report-type={report_type};\r\n\tboundary=\"{}\"\r\n",
            plan.boundary
        ));
        if plan.body == BodyType::EightBitMime {
            field(&mut s, "Content-Transfer-Encoding", "8bit");
        }
        s.push_str("\r\nThis is a delivery status notification in MIME format.\r\n");
        s.push_str(&format!("\r\n--{}\r\n", plan.boundary));
        field(&mut s, "Content-Description", "Notification");
        let charset = if self.generated_8bit { "utf-8" } else { "us-ascii" };
        field(&mut s, "Content-Type", &format!("text/plain; charset={charset}"));
        if self.text_encoding == TextEncoding::QuotedPrintable {
            field(&mut s, "Content-Transfer-Encoding", "quoted-printable");
        } else if self.generated_8bit {
            field(&mut s, "Content-Transfer-Encoding", "8bit");
        }
        s.push_str("\r\n");
        for (i, paragraph) in self.intro(plan.returned).iter().enumerate() {
            if i > 0 {
                s.push_str("\r\n");
            }
            wrap(&mut s, paragraph, 0, self.text_encoding);
        }
        s
    }

    /// The paragraphs before the list of recipients.
    fn intro(&self, returned: Returned) -> Vec<String> {
        let mut p = vec![format!("This is the mail system at host {}.", self.host)];
        match (self.report.kind, self.report.to) {
            (Kind::Failure, Addressee::Sender) => p.push(String::from(
                "Your message could not be delivered to one or more of its recipients. Each of them is listed \
                 below with the reason.",
            )),
            (Kind::Failure, Addressee::Postmaster) if self.report.original.sender.is_empty() => p.push(String::from(
                "A message with the null sender, such as a delivery report, could not be delivered to one or \
                 more of its recipients. As it cannot be returned to its sender, it is reported to the \
                 postmaster instead. Each recipient is listed below with the reason.",
            )),
            // pickup's notice of a local submission from a sender no mail
            // can go to.
            (Kind::Failure, Addressee::Postmaster) => p.push(String::from(
                "A message could not be delivered to one or more of its recipients, and its sender is not an \
                 address mail can be returned to, so it is reported to the postmaster instead. Each recipient is \
                 listed below with the reason.",
            )),
            (Kind::Delay, _) => {
                p.push(String::from("This is a warning only: you do not need to send your message again."));
                p.push(String::from(
                    "Your message has not yet been delivered to one or more of its recipients, listed below \
                     with the reason for the delay. Delivery will be tried again, and you will be told if it \
                     finally fails.",
                ));
            }
            (Kind::Success, _) => p.push(String::from(
                "Your message was delivered to the recipients listed below, as you asked to be told. Where it \
                 was placed in a mailbox, nothing more will be reported; where it was passed on to a system \
                 that does not report delivery, you may still hear from that system.",
            )),
        }
        match returned {
            Returned::Message(_) => p.push(String::from("A copy of the message is attached.")),
            Returned::Headers(_) => p.push(String::from("The header of the message is attached.")),
            Returned::Nothing => {}
        }
        if self.report.kind == Kind::Failure && self.report.to == Addressee::Sender {
            p.push(String::from(
                "For help, contact your postmaster and include this report. You may remove your own text from \
                 the returned message first.",
            ));
        }
        p
    }

    /// A recipient's entry in the text part.
    fn text_recipient(&self, r: &RecipientReport) -> String {
        let mut s = String::from("\r\n");
        wrap(&mut s, &self.text_entry(r), WRAP_INDENT, self.text_encoding);
        s
    }

    /// A recipient's entry in the text part, before it is wrapped.
    fn text_entry(&self, r: &RecipientReport) -> String {
        let address = self.address(&r.address);
        let mut line = format!("<{address}>");
        let orig = r.orcpt.as_deref().map(|o| self.orcpt(o).1);
        if let Some(orig) = orig.filter(|o| !o.is_empty() && !o.eq_ignore_ascii_case(&address)) {
            line.push_str(&format!(" (originally <{orig}>)"));
        }
        let remote = r.remote_mta.as_deref().map(|h| self.clean(h, MAX_HOST)).filter(|h| !h.is_empty());
        let reason = match (&r.diagnostic, remote) {
            (Diagnostic::Smtp(reply), Some(host)) => format!("host {host} said: {}", self.clean(reply, MAX_DIAGNOSTIC)),
            (Diagnostic::Smtp(reply), None) => format!("the remote server said: {}", self.clean(reply, MAX_DIAGNOSTIC)),
            (Diagnostic::Local(reason), _) => self.clean(reason, MAX_DIAGNOSTIC),
        };
        let reason = if reason.is_empty() { String::from("no reason was recorded") } else { reason };
        format!("{line}: {reason}")
    }

    /// The end of the text part, the delivery-status part's header and its
    /// per-message fields.
    fn dsn_head(&self, boundary: &str) -> String {
        let env = &self.report.original;
        let mut s = format!("\r\n--{boundary}\r\n");
        field(&mut s, "Content-Description", "Delivery report");
        let kind = if self.global { "message/global-delivery-status" } else { "message/delivery-status" };
        field(&mut s, "Content-Type", kind);
        if self.generated_8bit {
            field(&mut s, "Content-Transfer-Encoding", "8bit");
        }
        s.push_str("\r\n");
        field(&mut s, "Reporting-MTA", &format!("dns; {}", self.host));
        field(&mut s, "X-Mta-Queue-ID", env.queue_id.as_str());
        let sender = self.address(&env.sender);
        if !sender.is_empty() {
            field(&mut s, "X-Mta-Sender", &format!("{}; {sender}", self.address_type(&sender)));
        }
        let envid = env.envid.as_deref().map(|e| self.clean(e, MAX_ENVID)).unwrap_or_default();
        if !envid.is_empty() {
            field(&mut s, "Original-Envelope-Id", &envid);
        }
        if env.arrival > 0 {
            field(&mut s, "Arrival-Date", &date(env.arrival));
        }
        s
    }

    /// A recipient's delivery-status fields.
    fn dsn_recipient(&self, r: &RecipientReport) -> String {
        let mut s = String::from("\r\n");
        let address = self.address(&r.address);
        field(&mut s, "Final-Recipient", &format!("{}; {address}", self.address_type(&address)));
        if let Some((kind, orig)) = r.orcpt.as_deref().map(|o| self.orcpt(o)).filter(|(_, o)| !o.is_empty()) {
            field(&mut s, "Original-Recipient", &format!("{kind}; {orig}"));
        }
        field(&mut s, "Action", r.action.as_str());
        field(&mut s, "Status", &r.status.to_string());
        // An LMTP server on a UNIX socket is named by the socket's path,
        // which is no DNS name: the text part names it, this field not.
        let dns_name = |h: &String| !h.is_empty() && !h.starts_with('/');
        if let Some(host) = r.remote_mta.as_deref().map(|h| self.clean(h, MAX_HOST)).filter(dns_name) {
            field(&mut s, "Remote-MTA", &format!("dns; {host}"));
        }
        let (kind, text) = match &r.diagnostic {
            Diagnostic::Smtp(reply) => ("smtp", reply),
            Diagnostic::Local(reason) => ("X-Mta", reason),
        };
        let text = self.clean(text, MAX_DIAGNOSTIC);
        if !text.is_empty() {
            field(&mut s, "Diagnostic-Code", &format!("{kind}; {text}"));
        }
        if let Some(t) = r.last_attempt.filter(|&t| t > 0) {
            field(&mut s, "Last-Attempt-Date", &date(t));
        }
        if let Some(t) = r.will_retry_until.filter(|&t| t > 0 && r.action == Action::Delayed) {
            field(&mut s, "Will-Retry-Until", &date(t));
        }
        s
    }

    /// The returned part's header.
    fn original_head(&self, plan: &Plan) -> String {
        let mut s = format!("\r\n--{}\r\n", plan.boundary);
        let whole = matches!(plan.returned, Returned::Message(_));
        let description = match (self.report.kind, whole) {
            (Kind::Success, _) => "Message Headers",
            (_, true) => "Undelivered Message",
            (_, false) => "Undelivered Message Headers",
        };
        field(&mut s, "Content-Description", description);
        let kind = match (self.global, whole) {
            (false, true) => "message/rfc822",
            (false, false) => "text/rfc822-headers",
            (true, true) => "message/global",
            (true, false) => "message/global-headers",
        };
        field(&mut s, "Content-Type", kind);
        if self.content_8bit {
            field(&mut s, "Content-Transfer-Encoding", "8bit");
        }
        s.push_str("\r\n");
        s
    }

    fn clean(&self, s: &str, max: usize) -> String {
        clean(s, self.global, max)
    }

    fn address(&self, s: &str) -> String {
        clean(s, self.global, MAX_ADDRESS)
    }

    /// RFC 6533: `utf-8` for a UTF-8 address in a global report.
    fn address_type(&self, address: &str) -> &'static str {
        if address.is_ascii() { "rfc822" } else { "utf-8" }
    }

    /// An ORCPT value, in the form the report gives it (see
    /// [`Composer::new`]), as address type and address.
    fn orcpt(&self, orcpt: &str) -> (String, String) {
        let (kind, address) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
        let kind: String = kind.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(32).collect();
        let kind = if kind.is_empty() { String::from("rfc822") } else { kind };
        (kind, self.address(address))
    }
}

/// Every value from outside that the report quotes, as given.
fn quoted_values<'a>(report: &'a Report, host: &'a str, to: &'a str) -> impl Iterator<Item = &'a str> {
    let env = &report.original;
    let envelope = [Some(host), Some(to), Some(env.sender.as_str()), env.envid.as_deref()];
    let recipients = report.recipients.iter().flat_map(|r| {
        let diagnostic = match &r.diagnostic {
            Diagnostic::Smtp(s) | Diagnostic::Local(s) => s.as_str(),
        };
        [Some(r.address.as_str()), r.orcpt.as_deref(), r.remote_mta.as_deref(), Some(diagnostic)]
    });
    envelope.into_iter().chain(recipients).flatten()
}

fn date(unix: i64) -> String {
    rfc5322_date(u64::try_from(unix).unwrap_or(0))
}

/// Reads `[scan.offset(), end)` of the original into `scan`, in chunks;
/// with `header_only`, stops once the header block is decided.
fn read_range<O: Original + ?Sized>(
    original: &mut O,
    buf: &mut Vec<u8>,
    scan: &mut Scan,
    end: u64,
    content_len: u64,
    read_size: usize,
    header_only: bool,
) -> Result<(), Error> {
    while scan.offset() < end && !(header_only && scan.headers_done()) {
        let offset = scan.offset();
        let want = (end - offset).min(read_size as u64) as usize;
        read_chunk(original, buf, offset, want, content_len)?;
        scan.feed(buf);
    }
    Ok(())
}

/// Reads at most `want` (at least 1) bytes at `offset` into `buf`.
fn read_chunk<O: Original + ?Sized>(
    original: &mut O,
    buf: &mut Vec<u8>,
    offset: u64,
    want: usize,
    content_len: u64,
) -> Result<(), Error> {
    buf.clear();
    buf.resize(want, 0);
    loop {
        match original.read_at(offset, buf) {
            Ok(0) => return Err(Error::ContentShort { offset, expected: content_len }),
            Ok(n) => {
                buf.truncate(n.min(want));
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(Error::Read { offset, error }),
        }
    }
}
