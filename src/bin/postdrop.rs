//! postdrop: puts a locally submitted message into maildrop/ (set-gid).
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(mta::postdrop::main(&args));
}
