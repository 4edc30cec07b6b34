//! postdrop: the set-gid program (group `submission_group`) that puts a
//! locally submitted message into maildrop/. sendmail runs it and writes a
//! maildrop stream to its standard input.
//!
//! It trusts nothing from its caller but the message: the configuration
//! is the compiled-in one unless the real user is root, the environment
//! is not read, and the stream is validated (format and intake limits)
//! as it is copied. The file is created under a temporary name
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0640: the submitting user and
//! pickup's group), synced, and renamed to its final name only when it is
//! whole: that rename is the completion mark pickup looks for. The caller
//! is the file's owner; pickup believes the owner, not the content.
//! After opening maildrop/ and creating the file, postdrop enters its
//! sandbox: the directory and its three standard descriptors, nothing else.
//! On success it prints the file's name on standard output.
//!
//! Trusts: the system configuration file; not its caller.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{UnlinkatFlags, unlinkat};
use sandbox::{DirAccess, Grant, Net, Policy, Unconfined};

use crate::config::{self, Config};
use crate::header::unique;
use crate::maildrop::{BodyType, Error as DropError, Limits, Reader, Writer, names};
use crate::roles::MAILDROP_DIR;

/// sysexits(3).
pub const EX_USAGE: i32 = 64;
pub const EX_DATAERR: i32 = 65;
pub const EX_UNAVAILABLE: i32 = 69;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_OSERR: i32 = 71;
pub const EX_TEMPFAIL: i32 = 75;
pub const EX_NOPERM: i32 = 77;
pub const EX_CONFIG: i32 = 78;

/// maildrop/ gives the submission group search and write but not read:
/// the directory is opened for search only.
#[cfg(target_os = "linux")]
const DIR_SEARCH: OFlag = OFlag::O_PATH;
#[cfg(target_os = "freebsd")]
const DIR_SEARCH: OFlag = OFlag::from_bits_retain(libc::O_SEARCH);
/// OpenBSD has no search-only open; its maildrop/ is group-readable.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const DIR_SEARCH: OFlag = OFlag::O_RDONLY;

pub const USAGE: &str = "usage: postdrop [-C config] < maildrop-stream (run by sendmail)";

/// Run postdrop; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let root = nix::unistd::getuid().is_root();
    let mut path = PathBuf::from(config::DEFAULT_PATH);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-C" if root => match it.next() {
                Some(p) => path = PathBuf::from(p),
                None => return fail(EX_USAGE, USAGE),
            },
            "-C" => return fail(EX_NOPERM, "-C: only root may choose another configuration"),
            _ => return fail(EX_USAGE, USAGE),
        }
    }
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, &e.to_string()),
    };
    // Mode bits are ours to choose, not the caller's umask's.
    umask(Mode::from_bits_truncate(0o027));
    // A ^C at sendmail's terminal, a hang-up or a kill must not leave a
    // partial file (pickup would keep it a day): the signals wait, and
    // the stream's end, cut short, removes the file (sendmail gone, its
    // pipe ends). SIGXFSZ too: past the caller's file size limit, the
    // write fails (EFBIG) and the file is removed.
    let mut hold = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGHUP, Signal::SIGTERM, Signal::SIGXFSZ] {
        hold.add(s);
    }
    if let Err(e) = hold.thread_block() {
        return fail(EX_OSERR, &format!("blocking signals: {e}"));
    }
    let dir_path = config.spool.join(MAILDROP_DIR);
    let flags = DIR_SEARCH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let maildrop = match open(&dir_path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            return fail(
                EX_UNAVAILABLE,
                &format!(
                    "{}: {e} (has mta started once, and is postdrop set-gid {}?)",
                    dir_path.display(),
                    config.submission_group
                ),
            );
        }
    };
    // The boot's tag in the temporary name tells pickup, after a crash,
    // that nobody is writing this file any more (`maildrop::names`).
    let boot = sandbox::boot_id().map(|b| names::boot_tag(&b));
    let tmp = names::temporary(boot.as_deref(), &unique());
    let cflags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let file = match openat(&maildrop, tmp.as_str(), cflags, Mode::from_bits_truncate(0o640)) {
        Ok(fd) => File::from(fd),
        Err(e) => return fail(EX_TEMPFAIL, &format!("creating a file in {}: {e}", dir_path.display())),
    };
    if let Err(e) = enter(&maildrop, &file, dir_path) {
        let _ = unlinkat(&maildrop, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return fail(EX_SOFTWARE, &format!("cannot enter the sandbox: {e}"));
    }
    let limits = Limits { max_recipients: config.limits.recipients as usize, max_content: config.limits.message_size };
    match copy(std::io::stdin().lock(), &file, limits) {
        Ok(()) => {}
        Err((code, msg)) => {
            let _ = unlinkat(&maildrop, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return fail(code, &msg);
        }
    }
    let mut name = unique();
    match renameat(&maildrop, tmp.as_str(), &maildrop, name.as_str()) {
        Ok(()) => {}
        // Only pickup renames a temporary file, and only a whole one it
        // judged abandoned: the file still has a name, pickup's.
        Err(nix::errno::Errno::ENOENT)
            if file.metadata().is_ok_and(|m| m.nlink() == 1)
                && let Some(taken) = names::final_for(&tmp) =>
        {
            name = taken.to_string();
        }
        Err(e) => {
            let _ = unlinkat(&maildrop, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return fail(EX_TEMPFAIL, &format!("completing the maildrop file: {e}"));
        }
    }
    // The name, for sendmail to report; a caller that closed stdout
    // does not want it.
    let _ = writeln!(std::io::stdout(), "{name}");
    0
}

fn fail(code: i32, msg: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "postdrop: {msg}");
    code
}

/// The sandbox: maildrop/ and the new file, stdin, stdout and stderr.
fn enter(maildrop: &OwnedFd, file: &File, path: PathBuf) -> Result<(), sandbox::Error> {
    let mut p = Policy::new("postdrop");
    p.grants.push(Grant::Dir {
        fd: maildrop.as_raw_fd(),
        path,
        access: DirAccess::ReadWrite,
        watch: false,
        times: false,
        modes: false,
    });
    p.grants.push(Grant::File { fd: file.as_fd().as_raw_fd(), write: true });
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    for (fd, write) in [(stdin.as_fd(), false), (stdout.as_fd(), true), (stderr.as_fd(), true)] {
        // Only those open: a caller may have closed any of them.
        if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok() {
            p.grants.push(Grant::File { fd: fd.as_raw_fd(), write });
        }
    }
    p.net = Net::None;
    sandbox::enter(&p, Unconfined::Refused).map(drop)
}

/// Validate the stream on stdin and write it to the file, synced.
fn copy(input: impl std::io::Read, file: &File, limits: Limits) -> Result<(), (i32, String)> {
    let bad = |e: DropError| match e {
        DropError::Io(e) => (EX_TEMPFAIL, e.to_string()),
        e => (EX_DATAERR, e.to_string()),
    };
    let (mut reader, envelope) = Reader::new(input, limits).map_err(bad)?;
    // What pickup would only set aside (logged, but the submitter never
    // hears of it) is refused here, before the file is whole: sendmail
    // checks the same, but anyone in the group may run postdrop.
    if envelope.body == BodyType::BinaryMime {
        return Err((EX_DATAERR, String::from("BINARYMIME content cannot be submitted locally")));
    }
    if let Err(n) = crate::pickup::envelope_fits(&envelope) {
        let why = format!(
            "the envelope ({n} octets: {} recipients and their ORCPT) is more than one message may carry",
            envelope.recipients.len()
        );
        return Err((EX_DATAERR, why));
    }
    let mut writer = Writer::new(std::io::BufWriter::with_capacity(64 << 10, file), &envelope).map_err(bad)?;
    while let Some(chunk) = reader.next_chunk().map_err(bad)? {
        writer.write(&chunk).map_err(bad)?;
    }
    let buffered = writer.finish().map_err(bad)?;
    let file = buffered.into_inner().map_err(|e| (EX_TEMPFAIL, e.error().to_string()))?;
    file.sync_all().map_err(|e| (EX_TEMPFAIL, format!("syncing the maildrop file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maildrop::{Envelope, Recipient};

    fn stream(e: &Envelope) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), e).expect("envelope");
        w.write(b"Subject: t\r\n\r\nbody\r\n").expect("content");
        w.finish().expect("finish")
    }

    fn run(e: &Envelope) -> (Result<(), (i32, String)>, u64) {
        let path = std::env::temp_dir().join(format!("mta-postdrop-{}-{}", std::process::id(), e.recipients.len()));
        let file = File::options().read(true).write(true).create_new(true).open(&path).expect("scratch file");
        let _ = std::fs::remove_file(&path);
        let limits = Limits { max_recipients: 1_000_000, max_content: 1 << 20 };
        let r = copy(&stream(e)[..], &file, limits);
        (r, file.metadata().expect("meta").len())
    }

    fn envelope(n: usize) -> Envelope {
        let recipients =
            (0..n).map(|i| Recipient { address: format!("user{i}@example.org"), orcpt: None, notify: None }).collect();
        Envelope { sender: "a@example.org".into(), recipients, ..Envelope::default() }
    }

    #[test]
    fn a_stream_pickup_can_take_is_copied() {
        let (r, len) = run(&envelope(3));
        assert_eq!(r, Ok(()));
        assert!(len > 0);
    }

    #[test]
    fn binarymime_is_refused_not_left_for_pickup_to_set_aside() {
        let e = Envelope { body: BodyType::BinaryMime, ..envelope(1) };
        let (r, _) = run(&e);
        let (code, msg) = r.expect_err("refused");
        assert_eq!(code, EX_DATAERR);
        assert!(msg.contains("BINARYMIME"), "{msg}");
    }

    #[test]
    fn an_envelope_over_what_cleanup_takes_is_refused() {
        let e = envelope(200_000);
        assert!(crate::pickup::envelope_fits(&e).is_err(), "the test needs a larger envelope");
        let (r, _) = run(&e);
        let (code, msg) = r.expect_err("refused");
        assert_eq!(code, EX_DATAERR);
        assert!(msg.contains("200000 recipients"), "{msg}");
    }
}
