//! The OpenBSD back end: unveil(2), then pledge(2).
//!
//! Each directory grant is unveiled by path ("r" or "rwc") and each
//! `open_paths` entry "r" ("rx" if the policy may exec); with nothing to
//! unveil, "/" is unveiled with no permissions, so that no path at all is
//! visible. Unveil is then locked and the process pledges
//! [`pledge_promises`]. The exec promises are left NULL: a program the
//! role executes (local's delivery children, which confine themselves)
//! starts unrestricted by pledge, and unveil does not survive execve(2)
//! either.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::ptr;

use crate::{Error, Policy, pledge_promises, unveil_paths};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn fail(what: &'static str) -> Error {
    match errno() {
        libc::ENOSYS => Error::Unsupported(what),
        errno => Error::Sys { what, errno },
    }
}

fn cstring(bytes: &[u8], role: &str) -> Result<CString, Error> {
    CString::new(bytes).map_err(|_| Error::Policy(format!("{role}: NUL byte in a path or promise")))
}

pub(crate) fn enter(p: &Policy) -> Result<(), Error> {
    let mut unveils = Vec::new();
    for (path, perms) in unveil_paths(p) {
        unveils.push((cstring(path.as_os_str().as_bytes(), p.role)?, cstring(perms.as_bytes(), p.role)?));
    }
    if p.whole_fs {
        // No unveil at all: the whole file system stays visible.
        let promises = cstring(pledge_promises(p).as_bytes(), p.role)?;
        // SAFETY: promises is a NUL-terminated string that outlives the
        // call; a null execpromises leaves exec'd programs unpledged.
        if unsafe { libc::pledge(promises.as_ptr(), ptr::null()) } != 0 {
            return Err(fail("pledge"));
        }
        return Ok(());
    }
    if unveils.is_empty() {
        unveils.push((cstring(b"/", p.role)?, cstring(b"", p.role)?));
    }
    let promises = cstring(pledge_promises(p).as_bytes(), p.role)?;

    for (path, perms) in &unveils {
        // SAFETY: both are NUL-terminated strings that outlive the call.
        if unsafe { libc::unveil(path.as_ptr(), perms.as_ptr()) } != 0 {
            return Err(match errno() {
                libc::ENOENT => Error::Policy(format!("{}: unveil {}: no such file", p.role, path.to_string_lossy())),
                _ => fail("unveil"),
            });
        }
    }
    // SAFETY: two null pointers lock the unveil list; no memory is read.
    if unsafe { libc::unveil(ptr::null(), ptr::null()) } != 0 {
        return Err(fail("unveil"));
    }
    // SAFETY: promises is a NUL-terminated string that outlives the call;
    // a null execpromises leaves exec'd programs unpledged.
    if unsafe { libc::pledge(promises.as_ptr(), ptr::null()) } != 0 {
        return Err(fail("pledge"));
    }
    Ok(())
}
