//! The local delivery agent: it delivers a message to a user's mailbox
//! on this host, running as that user. Its root parent
//! ([`agent`]) takes deliveries from qmgr, follows the aliases to users
//! ([`resolve`]) and hands each mailbox delivery to a worker started as
//! the recipient ([`child`]), which delivers message after message to
//! one mailbox and uses what both mailbox forms share ([`deliver`]: the
//! envelope, the prepended headers, loop detection,
//! CR LF to LF conversion, the error), appending to a Unix mbox in the
//! mail spool ([`mbox`]), or delivering into a Maildir ([`maildir`]).
//! Mailbox delivery workers are kept between deliveries ([`pool`]) and
//! run, with the one-shot children, by [`spawn`]; a command ([`pipe`])
//! is started outside the parent's sandbox by its command spawner
//! ([`spawner`]). A mailbox whose
//! delivery was killed mid-append is cut back by a repair child, run as
//! the same user ([`repair`]).

pub mod agent;
pub mod child;
pub mod deliver;
pub mod forward;
pub mod maildir;
pub mod mbox;
pub mod pipe;
pub mod pool;
pub mod repair;
pub mod resolve;
pub mod spawn;
pub mod spawner;
pub mod users;

#[cfg(test)]
mod tests;
