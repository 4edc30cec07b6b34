//! mtactl(8): control a running mta.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(mta::control::client::main(&args));
}
