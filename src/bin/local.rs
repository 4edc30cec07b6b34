//! The local role: the local delivery agent (root parent), and, run as
//! `local deliver ...` by that parent as a recipient, one mailbox or
//! file delivery (see mta::local::child); as `local repair ...`, the
//! repair of a mailbox after such a delivery was killed
//! (mta::local::repair); as `local pipe ...`, one command delivery
//! (mta::local::pipe, started by the command spawner); as `local
//! forward ...`, the reading of a `.forward` (mta::local::forward); as
//! `local spawner ...`, the command spawner, started by the parent in
//! `prepare`, before it enters its sandbox (mta::local::spawner); as
//! `local users LIMIT`, the listing of the name service's users for
//! master's local-recipient table (mta::local::users).
#![forbid(unsafe_code)]

use mta::roles::Role;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("deliver") => mta::local::child::main(&args[2..]),
        Some("repair") => mta::local::repair::main(&args[2..]),
        Some("pipe") => mta::local::pipe::main(&args[2..]),
        Some("forward") => mta::local::forward::main(&args[2..]),
        Some("spawner") => mta::local::spawner::main(&args[2..]),
        Some("users") => mta::local::users::main(&args[2..]),
        _ => {}
    }
    let mut child = mta::child::start(Role::Local);
    let prepared = mta::local::agent::prepare(&mut child);
    let token = child.enter();
    mta::local::agent::serve(token, child, prepared)
}
