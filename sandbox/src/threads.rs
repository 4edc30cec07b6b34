//! Counting the calling process's threads.
//!
//! Landlock, seccomp (without TSYNC) and a forked child's copy of the
//! address space all concern the calling thread only, so [`crate::enter`]
//! and [`crate::fork_wait`] refuse to run while another thread exists.
use crate::Error;

/// Ok when the calling process has exactly one thread.
pub(crate) fn require_single() -> Result<(), Error> {
    match count()? {
        1 => Ok(()),
        n => Err(Error::MultiThreaded(n)),
    }
}

/// The number of threads in the calling process.
#[cfg(target_os = "linux")]
pub(crate) fn count() -> Result<usize, Error> {
    // One directory entry per thread; read_dir skips "." and "..".
    let entries = std::fs::read_dir("/proc/self/task").map_err(|e| io_error("read /proc/self/task", &e))?;
    let mut n = 0;
    for entry in entries {
        entry.map_err(|e| io_error("read /proc/self/task", &e))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(target_os = "linux")]
fn io_error(what: &'static str, e: &std::io::Error) -> Error {
    Error::Sys { what, errno: e.raw_os_error().unwrap_or(libc::EIO) }
}

/// FreeBSD: sysctl kern.proc.pid.<pid> with KERN_PROC_INC_THREAD returns
/// one kinfo_proc per thread. The entry size is read from the first
/// entry's ki_structsize (its first field), so a libc/kernel difference
/// in the structure's size cannot skew the count.
#[cfg(target_os = "freebsd")]
pub(crate) fn count() -> Result<usize, Error> {
    let pid = libc::pid_t::try_from(std::process::id()).map_err(|_| Error::Policy("pid out of range".into()))?;
    let mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID | libc::KERN_PROC_INC_THREAD, pid];
    let mut tries = 0;
    loop {
        let mut len: libc::size_t = 0;
        // SAFETY: mib points to 4 valid c_ints; a null oldp with a valid
        // oldlenp asks only for the size, which the kernel writes to len.
        let rc = unsafe {
            libc::sysctl(mib.as_ptr(), mib.len() as libc::c_uint, std::ptr::null_mut(), &mut len, std::ptr::null(), 0)
        };
        if rc != 0 {
            return Err(last_error("sysctl kern.proc.pid"));
        }
        // Room for threads started between the two calls.
        len += len / 2 + 4096;
        let mut buf = vec![0u8; len];
        // SAFETY: buf is a writable buffer of len bytes and len is passed
        // as its size; the kernel writes at most len bytes and stores the
        // number written back into len.
        let rc = unsafe {
            libc::sysctl(
                mib.as_ptr(),
                mib.len() as libc::c_uint,
                buf.as_mut_ptr().cast(),
                &mut len,
                std::ptr::null(),
                0,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            tries += 1;
            if e.raw_os_error() == Some(libc::ENOMEM) && tries < 8 {
                continue;
            }
            return Err(Error::Sys { what: "sysctl kern.proc.pid", errno: e.raw_os_error().unwrap_or(libc::EIO) });
        }
        if len < 4 {
            return Err(Error::Policy("sysctl kern.proc.pid returned no entry".into()));
        }
        let size = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s >= 4)
            .ok_or_else(|| Error::Policy(format!("sysctl kern.proc.pid: unexpected ki_structsize {size}")))?;
        return Ok(len / size);
    }
}

/// OpenBSD: sysctl KERN_PROC with KERN_PROC_PID | KERN_PROC_SHOW_THREADS
/// returns the process's own entry (p_tid == -1) followed by one entry
/// per thread.
#[cfg(target_os = "openbsd")]
pub(crate) fn count() -> Result<usize, Error> {
    use std::mem::{offset_of, size_of};
    let pid = libc::c_int::try_from(std::process::id()).map_err(|_| Error::Policy("pid out of range".into()))?;
    let elem = size_of::<libc::kinfo_proc>();
    let elem_c = libc::c_int::try_from(elem).map_err(|_| Error::Policy("kinfo_proc too large".into()))?;
    let mut tries = 0;
    loop {
        let mut mib =
            [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID | libc::KERN_PROC_SHOW_THREADS, pid, elem_c, 0];
        let mut len: libc::size_t = 0;
        // SAFETY: mib points to 6 valid c_ints; a null oldp with a valid
        // oldlenp asks only for the size, which the kernel writes to len.
        let rc = unsafe {
            libc::sysctl(
                mib.as_ptr(),
                mib.len() as libc::c_uint,
                std::ptr::null_mut(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            return Err(last_error("sysctl kern.proc"));
        }
        // Room for threads started between the two calls.
        let count = len / elem + 8;
        mib[5] = libc::c_int::try_from(count).map_err(|_| Error::Policy("too many threads".into()))?;
        len = count * elem;
        let mut buf = vec![0u8; len];
        // SAFETY: buf is a writable buffer of len bytes and len is passed
        // as its size; the kernel copies at most mib[5] entries of mib[4]
        // bytes (= len) and stores the number of bytes written into len.
        let rc = unsafe {
            libc::sysctl(
                mib.as_ptr(),
                mib.len() as libc::c_uint,
                buf.as_mut_ptr().cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            tries += 1;
            if e.raw_os_error() == Some(libc::ENOMEM) && tries < 8 {
                continue;
            }
            return Err(Error::Sys { what: "sysctl kern.proc", errno: e.raw_os_error().unwrap_or(libc::EIO) });
        }
        let at = offset_of!(libc::kinfo_proc, p_tid);
        let threads = buf[..len.min(buf.len())]
            .chunks_exact(elem)
            .filter(|entry| i32::from_ne_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]]) != -1)
            .count();
        return Ok(threads);
    }
}

#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
fn last_error(what: &'static str) -> Error {
    Error::Sys { what, errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) }
}

/// Elsewhere the count is unknown; report one thread so that `enter`
/// fails on the missing sandbox instead.
#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
pub(crate) fn count() -> Result<usize, Error> {
    Ok(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_threads() {
        let before = super::count().expect("count");
        assert!(before >= 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            ready_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        ready_rx.recv().unwrap();
        let during = super::count().expect("count");
        assert!(during >= 2, "before {before}, during {during}");
        assert!(matches!(super::require_single(), Err(crate::Error::MultiThreaded(n)) if n >= 2));
        tx.send(()).unwrap();
        t.join().unwrap();
    }
}
