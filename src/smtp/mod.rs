//! The outbound SMTP/LMTP client: the protocol core of the `smtp`
//! delivery agent, kept free of I/O like the server session. The agent's
//! driver (socket, TLS, timers, the queue file) feeds it and carries out
//! what it decides.
//!
//! - `client`: the session state machine, its jobs and results;
//! - `reply`: bounded parsing of server replies, enhanced status codes;
//! - `content`: CR LF normalisation and dot-stuffing of the content;
//! - `mime7bit`: 8-bit to 7-bit MIME conversion for servers without
//!   8BITMIME.

pub mod agent;
pub mod client;
pub mod content;
pub mod mime7bit;
pub mod reply;
