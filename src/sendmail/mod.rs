//! The logic of the `sendmail` command (also run as `mailq` and
//! `newaliases`): the command line ([`args`]), the message read from
//! standard input ([`input`]) and the header prepared for local submission
//! ([`headers`]), none of which does I/O; and the plumbing ([`run`]) that
//! hands the envelope and the content to the set-gid `postdrop`.
//!
//! Trusts: nothing. Any local user runs sendmail with any arguments and
//! any input.

pub mod args;
pub mod headers;
pub mod input;
pub mod run;

#[cfg(test)]
mod tests;

pub use args::{FlushTarget, Invocation, Mode, UsageError, parse, usage};
pub use headers::{HeaderError, HeaderOptions, Prepared, parse_address_list, prepare, qualify, split_header};
pub use input::Input;
