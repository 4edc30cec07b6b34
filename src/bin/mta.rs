//! mta(8): the master daemon.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(mta::master::main(&args));
}
