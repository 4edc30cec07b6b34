//! sendmail(8), also run as mailq and newaliases: local submission.
#![forbid(unsafe_code)]

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let rest: Vec<std::ffi::OsString> = args.collect();
    std::process::exit(mta::sendmail::run::main(&argv0, &rest));
}
