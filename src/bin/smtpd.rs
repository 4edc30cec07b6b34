//! The smtpd role: the SMTP server.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::fs::File;
use std::net::TcpListener;

use mta::roles::Role;
use mta::smtpd::checks::{Acceptance, MAX_TABLE};
use mta::table::cdb::Table;

fn main() {
    let mut child = mta::child::start(Role::Smtpd);
    let Some(intake) = child.config.intake.clone() else { child.fatal("no intake settings from master") };
    // Before the sandbox: read the table and take the listeners.
    let Some(table_fd) = child.fds.pop() else { child.fatal("no local-recipient table") };
    // The descriptor stays open until the sandbox is entered: the policy names it.
    let table_file = File::from(table_fd);
    let recipients = match Table::read(&table_file, MAX_TABLE) {
        Ok(t) => t,
        Err(e) => child.fatal(&format!("local-recipient table: {e}")),
    };
    let listeners: Vec<TcpListener> = child.fds.drain(..).map(TcpListener::from).collect();
    for l in &listeners {
        if let Err(e) = l.set_nonblocking(true) {
            child.fatal(&format!("listener: {e}"));
        }
    }
    let checks = Acceptance {
        domains: intake.domains.clone(),
        own_addresses: intake.own_addresses.clone(),
        networks: intake.networks.clone(),
        recipients,
        delimiter: intake.recipient_delimiter.clone(),
        check_local: intake.recipient_check,
        incomplete: intake.incomplete,
        lookup: intake.directory_lookup.is_some(),
        space_ok: Cell::new(true),
        rates: std::cell::RefCell::new(mta::smtpd::rate::Rates::new(
            [
                intake.limits.connection_rate_per_client,
                intake.limits.message_rate_per_client,
                intake.limits.recipient_rate_per_client,
            ],
            intake.limits.rate_time_unit,
        )),
    };
    let token = child.enter();
    drop(table_file);
    mta::smtpd::server::serve(token, child, listeners, checks)
}
