//! postdrop: puts a locally submitted message into maildrop/ (set-gid).
#![forbid(unsafe_code)]

fn main() {
    // (Not `env::args`, which panics at an argument that is not UTF-8.)
    let args: Result<Vec<String>, _> = std::env::args_os().map(std::ffi::OsString::into_string).collect();
    let Ok(args) = args else {
        eprintln!("postdrop: an argument is not UTF-8\n{}", mta::postdrop::USAGE);
        std::process::exit(64);
    };
    std::process::exit(mta::postdrop::main(&args));
}
