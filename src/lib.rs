//! mta: a mail transfer agent with the Postfix security architecture.
//! One module per process role, shared modules named after what they own.
#![forbid(unsafe_code)]

pub mod address;
pub mod aliases;
pub mod bounce;
pub mod child;
pub mod cleanup;
pub mod config;
pub mod connector;
pub mod control;
pub mod date;
pub mod header;
pub mod ipc;
pub mod local;
pub mod log;
pub mod lookup;
pub mod maildrop;
pub mod master;
pub mod pickup;
pub mod postdrop;
pub mod qmgr;
pub mod queue;
pub mod roles;
pub mod sendmail;
pub mod smtp;
pub mod smtpd;
pub mod stream;
pub mod table;
