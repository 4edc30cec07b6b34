//! What a session did, for the lines smtpd logs about it as Postfix
//! does: the command it was at when it ended badly (`lost connection
//! after DATA from ...`, `timeout after RCPT from ...`) and, at its end,
//! how many of each command it gave and how many of those succeeded
//! (`disconnect from ... ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4`).
//! A command succeeded unless one of its replies was 4xx or 5xx.

/// The commands counted, in the order the disconnect line gives them;
/// the last counts the lines that were no command smtpd knows.
const NAMES: [&str; 14] = [
    "helo", "ehlo", "starttls", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy", "expn", "help", "quit",
    "unknown",
];
/// The same, as the `after` of a log line.
const STAGES: [&str; 14] = [
    "HELO", "EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "EXPN", "HELP", "QUIT",
    "UNKNOWN",
];
const UNKNOWN: usize = NAMES.len() - 1;

/// The stage of a session that has sent no command.
pub const CONNECT: &str = "CONNECT";
/// The stage once a message's content has ended.
pub const END_OF_MESSAGE: &str = "END-OF-MESSAGE";

#[derive(Debug)]
struct Counts {
    /// (succeeded, given) per command of [`NAMES`].
    counts: [(u32, u32); NAMES.len()],
    /// The command being answered, and whether a reply refused it.
    current: Option<(usize, bool)>,
}

/// A session's tally: nothing allocated until its first command, so that
/// idle sessions cost a pointer.
#[derive(Debug)]
pub struct Tally {
    counts: Option<Box<Counts>>,
    stage: &'static str,
}

impl Tally {
    pub fn new() -> Tally {
        Tally { counts: None, stage: CONNECT }
    }

    /// A new command line: the one before it is done with.
    pub fn done(&mut self) {
        if let Some(c) = self.counts.as_mut()
            && let Some((i, refused)) = c.current.take()
            && !refused
        {
            c.counts[i].0 += 1;
        }
    }

    /// The command `verb` (any case; one smtpd does not know counts as
    /// `unknown`) begins.
    pub fn begin(&mut self, verb: &str) {
        self.done();
        let i = NAMES.iter().position(|n| n.eq_ignore_ascii_case(verb)).unwrap_or(UNKNOWN);
        let c = self.counts.get_or_insert_with(|| Box::new(Counts { counts: [(0, 0); NAMES.len()], current: None }));
        c.counts[i].1 += 1;
        c.current = Some((i, false));
        self.stage = STAGES[i];
    }

    /// A reply with `code` to the command being answered.
    pub fn replied(&mut self, code: u16) {
        if code >= 400
            && let Some(c) = self.counts.as_mut()
            && let Some((_, refused)) = c.current.as_mut()
        {
            *refused = true;
        }
    }

    /// The command being answered was given up (the session ended
    /// before its final reply).
    pub fn abandon(&mut self) {
        if let Some(c) = self.counts.as_mut()
            && let Some((_, refused)) = c.current.as_mut()
        {
            *refused = true;
        }
    }

    /// The session moved on within a command (content ended).
    pub fn stage_is(&mut self, stage: &'static str) {
        self.stage = stage;
    }

    /// Where the session is: the last command's name, [`CONNECT`] or
    /// [`END_OF_MESSAGE`].
    pub fn stage(&self) -> &'static str {
        self.stage
    }

    /// `ehlo=1 mail=1 rcpt=0/1 commands=2/3`, counts given as
    /// `succeeded/given` where they differ. `unfinished`: the command
    /// being answered never got its final reply, and did not succeed.
    pub fn summary(&self, unfinished: bool) -> String {
        // Postfix gives a session without commands as 0/0.
        let Some(c) = self.counts.as_ref() else { return String::from("commands=0/0") };
        let mut counts = c.counts;
        if let Some((i, false)) = c.current
            && !unfinished
        {
            counts[i].0 += 1;
        }
        let mut out = String::new();
        let (mut ok, mut all) = (0, 0);
        for (name, (good, given)) in NAMES.iter().zip(counts) {
            if given == 0 {
                continue;
            }
            out.push_str(&count(name, good, given));
            out.push(' ');
            ok += good;
            all += given;
        }
        out.push_str(&count("commands", ok, all));
        out
    }
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

fn count(name: &str, good: u32, given: u32) -> String {
    if good == given { format!("{name}={given}") } else { format!("{name}={good}/{given}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_commands_and_their_failures_in_postfix_order() {
        let mut t = Tally::new();
        assert_eq!(t.summary(false), "commands=0/0");
        assert_eq!(t.stage(), CONNECT);
        t.begin("ehlo");
        t.replied(250);
        t.begin("MAIL");
        t.replied(250);
        t.begin("Rcpt");
        t.replied(550);
        t.begin("RCPT");
        t.replied(250);
        t.begin("DATA");
        t.replied(354);
        assert_eq!(t.stage(), "DATA");
        t.stage_is(END_OF_MESSAGE);
        t.replied(250);
        t.begin("XYZZY");
        t.replied(500);
        t.begin("quit");
        t.replied(221);
        assert_eq!(t.stage(), "QUIT");
        assert_eq!(t.summary(false), "ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 unknown=0/1 commands=5/7");
    }

    #[test]
    fn a_command_without_its_final_reply_did_not_succeed() {
        let mut t = Tally::new();
        t.begin("EHLO");
        t.replied(250);
        t.begin("DATA");
        t.replied(354);
        assert_eq!(t.summary(true), "ehlo=1 data=0/1 commands=1/2");
        assert_eq!(t.summary(false), "ehlo=1 data=1 commands=2");
        // A refusal after an intermediate reply counts.
        t.replied(451);
        t.done();
        assert_eq!(t.summary(false), "ehlo=1 data=0/1 commands=1/2");
    }
}
