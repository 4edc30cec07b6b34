//! Listing the users the system's name service knows: setpwent(3),
//! getpwent(3), endpwent(3), which go through /etc/passwd (the BSDs'
//! pwd.db) and every source nsswitch.conf (or nsdispatch) names that can
//! list its users: NIS, LDAP through nslcd or nss_ldap, sssd with
//! enumeration on, systemd's user database.
//!
//! getpwent keeps its place and its answer in state shared by the whole
//! process, so the listing runs only in a process with one thread (the
//! program `local users`, whose output master reads).

use std::ffi::CStr;
use std::io;
use std::marker::PhantomData;

/// That the process had one thread when this was made, which it must be
/// made before the sandbox is entered: counting threads is a sysctl
/// OpenBSD's pledge allows only with "ps", and breaking a promise kills
/// the process. It cannot leave the thread that made it (not `Send`), and
/// a confined process starts no thread (seccomp refuses `CLONE_THREAD`;
/// `local users` starts none anywhere).
pub struct OneThread(PhantomData<*const ()>);

/// Check that the calling process has one thread (see [`OneThread`]).
pub fn one_thread() -> io::Result<OneThread> {
    crate::threads::require_single().map_err(|e| io::Error::other(e.to_string()))?;
    Ok(OneThread(PhantomData))
}

/// The names of the users the name service lists, in its order (a name
/// may come twice, from two sources), at most `max`, and whether there
/// were more. Names that are not UTF-8 are left out. Only in a process
/// with one thread (`_single`).
pub fn user_names(_single: &OneThread, max: usize) -> io::Result<(Vec<String>, bool)> {
    let mut names = Vec::new();
    let mut more = false;
    // SAFETY: setpwent takes nothing and rewinds the process-wide
    // listing; no other thread exists to use it meanwhile (`OneThread`).
    unsafe { libc::setpwent() };
    loop {
        // SAFETY: as above; the record getpwent returns is valid until
        // its next call, and it is read (its name copied) before that.
        let p = unsafe { libc::getpwent() };
        if p.is_null() {
            break;
        }
        // SAFETY: a non-null record from getpwent has pw_name pointing at
        // a NUL-terminated string (or null, checked), valid until the
        // next getpwent call.
        let name = unsafe {
            let n = (*p).pw_name;
            if n.is_null() { None } else { Some(CStr::from_ptr(n).to_bytes().to_vec()) }
        };
        let Some(Ok(name)) = name.map(String::from_utf8) else { continue };
        if names.len() == max {
            more = true;
            break;
        }
        names.push(name);
    }
    // SAFETY: closes the listing setpwent opened; no record is used after.
    unsafe { libc::endpwent() };
    Ok((names, more))
}
