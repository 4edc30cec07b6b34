//! The Linux back end: Landlock, then a seccomp-bpf filter, with
//! no_new_privs.
//!
//! Landlock is the file-system sandbox (seccomp cannot be one: an
//! `openat(dirfd, "/abs/path")` passes an AT_FDCWD rule). It handles every
//! file-system access right the crate knows, in best-effort mode, so the
//! running kernel enforces the most it can; a kernel without Landlock
//! makes [`enter`] fail with [`Error::Unsupported`]. Beneath each
//! directory grant it allows what [`DirAccess`] says; `open_paths` are
//! readable (and executable when the policy may exec); with `read_fs`,
//! everything beneath "/" is (and, from ABI 9, its UNIX sockets
//! reachable). Where the kernel
//! has them (ABI 4 and 6), TCP bind/connect are denied unless the policy
//! has [`Net::Connect`], and abstract UNIX sockets and signals are scoped
//! to the sandbox; from ABI 9, connecting to a pathname UNIX socket is
//! allowed beneath each [`Grant::SocketDir`] only.
//!
//! The seccomp filter is a deny-list, `EPERM` for: io_uring, namespaces
//! (unshare, setns, clone with a CLONE_NEW* flag), thread creation
//! (unless the policy allows `threads`),
//! ptrace and process_vm_*, userfaultfd, keyrings, bpf, perf_event_open,
//! mounting, chroot, kexec, module loading, handle-based opens, clock and
//! host administration, TIOCSTI; and unless the policy allows it: execve,
//! fork (vfork, clone), socket creation and connect (with
//! [`Net::Connect`], AF_INET and AF_INET6 sockets; with a
//! [`Grant::SocketDir`] or `name_service`, AF_UNIX stream sockets),
//! socket pairs (with
//! `socketpairs`, AF_UNIX ones only), set*id, and
//! path-based calls relative to the working directory (`open`, `creat`
//! and other legacy path calls; `openat` and the other `*at` calls whose
//! directory is AT_FDCWD); with `read_fs`, every path-based call that
//! changes something, whatever its directory, the lookups being
//! Landlock's to judge. clone3 fails with ENOSYS, since its flags
//! cannot be inspected, and the C library falls back to clone. On x86_64
//! the x32 system-call range is refused, and any other architecture is
//! killed by seccompiler's architecture check.
//!
//! no_new_privs is set first unless the policy may exec: local's root
//! parent. (What it executes itself is its own program, which is not
//! set-id; its users' commands, which may run sendmail, whose postdrop is
//! set-gid, come from its command spawner, a process it starts before it
//! enters its sandbox: they have neither its filter nor no_new_privs.)
//! Without no_new_privs the kernel requires CAP_SYS_ADMIN for both
//! Landlock and seccomp, so an exec policy must be entered as root.
//! Note that the Landlock domain binds the programs such a role executes
//! as well: they can read only its `open_paths`.
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{BorrowedFd, RawFd};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};

use crate::{DirAccess, Error, Grant, Net, Policy};

/// The newest Landlock ABI this code was written and tested against. The
/// crate's best-effort mode reduces it to what the kernel has.
const LANDLOCK_ABI: ABI = ABI::V9;

/// `landlock_create_ruleset` flag asking for the ABI version.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

pub(crate) fn enter(p: &Policy) -> Result<(), Error> {
    for g in &p.grants {
        check_open(p, g.fd())?;
    }
    // Compile before restricting anything: a policy the filter compiler
    // rejects leaves the process as it was.
    let programs = seccomp_programs(p)?;
    // An exec policy keeps set-id programs working only for root, who
    // alone may install the filters without no_new_privs; anyone else
    // (an unprivileged instance) gets no_new_privs all the same.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let nnp = !p.exec || !root;
    if nnp {
        set_no_new_privs()?;
    }
    let landlock = if p.whole_fs { Ok(()) } else { landlock(p) };
    if let Err(e @ (Error::Sys { .. } | Error::Policy(_))) = landlock {
        return Err(e);
    }
    // Even without Landlock, install the filter: the caller may run on
    // (logged as unconfined) when the configuration allows it.
    for prog in &programs {
        install(prog, !nnp)?;
    }
    landlock
}

/// What the running kernel offers, e.g. "landlock ABI 7, seccomp available".
pub(crate) fn describe() -> String {
    // SAFETY: with a null attribute pointer and size 0 and only the
    // VERSION flag, landlock_create_ruleset reads no memory and returns
    // the ABI version (or -1 with errno).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    let landlock = if v > 0 { format!("landlock ABI {v}") } else { String::from("landlock unavailable") };
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let filters = std::path::Path::new("/proc/sys/kernel/seccomp/actions_avail").exists();
    let seccomp = if filters || mode >= 0 { "seccomp available" } else { "seccomp unavailable" };
    format!("{landlock}, {seccomp}")
}

fn check_open(p: &Policy, fd: RawFd) -> Result<(), Error> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(Error::Policy(format!("{}: granted descriptor {fd} is not open", p.role)));
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn set_no_new_privs() -> Result<(), Error> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::Sys { what: "prctl(PR_SET_NO_NEW_PRIVS)", errno: errno() });
    }
    Ok(())
}

/// A Landlock error as ours: the system error in its source chain if
/// there is one.
fn landlock_error(e: landlock::RulesetError) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(errno) = io.raw_os_error()
        {
            return Error::Sys { what: "landlock", errno };
        }
        source = s.source();
    }
    Error::Policy(format!("landlock: {e}"))
}

/// Read access beneath a directory.
fn read_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// What [`DirAccess::ReadWrite`] means: regular files and directories
/// only. No device, FIFO, socket or symbolic-link creation (a process
/// that kept CAP_MKNOD could otherwise make a disk's device node inside
/// the directory and open it), no execution, no device ioctls.
fn read_write_access() -> BitFlags<AccessFs> {
    read_access()
        | AccessFs::WriteFile
        | AccessFs::RemoveFile
        | AccessFs::RemoveDir
        | AccessFs::MakeReg
        | AccessFs::MakeDir
        | AccessFs::Refer
        | AccessFs::Truncate
}

fn landlock(p: &Policy) -> Result<(), Error> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))
        .map_err(landlock_error)?;
    if p.net == Net::None {
        ruleset = ruleset.handle_access(AccessNet::from_all(LANDLOCK_ABI)).map_err(landlock_error)?;
    }
    ruleset = ruleset.scope(Scope::from_all(LANDLOCK_ABI)).map_err(landlock_error)?;
    let mut created = ruleset.create().map_err(landlock_error)?;
    for g in &p.grants {
        if let Grant::Dir { fd, access, .. } = g {
            // SAFETY: enter checked that fd is open, and the process has
            // a single thread, so it stays open while this borrow lives
            // (to the end of this statement).
            let dir = unsafe { BorrowedFd::borrow_raw(*fd) };
            let allowed = match access {
                DirAccess::Read => read_access(),
                DirAccess::ReadWrite => read_write_access(),
            };
            created = created.add_rule(PathBeneath::new(dir, allowed)).map_err(landlock_error)?;
        }
    }
    // Connecting to the sockets of a socket directory: a right of ABI 9
    // (before it Landlock does not govern pathname sockets, and the
    // best-effort ruleset leaves this rule out).
    for g in &p.grants {
        if let Grant::SocketDir { fd, .. } = g {
            // SAFETY: as above: checked open, single-threaded, borrowed
            // for this statement only.
            let dir = unsafe { BorrowedFd::borrow_raw(*fd) };
            created = created.add_rule(PathBeneath::new(dir, AccessFs::ResolveUnix)).map_err(landlock_error)?;
        }
    }
    // The whole file system readable, and its UNIX sockets reachable (a
    // right of ABI 9, as above), for the C library's name services.
    if p.read_fs {
        let root = PathFd::new("/").map_err(|e| Error::Policy(format!("{}: open /: {e}", p.role)))?;
        created =
            created.add_rule(PathBeneath::new(root, read_access() | AccessFs::ResolveUnix)).map_err(landlock_error)?;
    }
    let open_access = if p.exec { read_access() | AccessFs::Execute } else { read_access() };
    for path in &p.open_paths {
        let fd =
            PathFd::new(path).map_err(|e| Error::Policy(format!("{}: open path {}: {e}", p.role, path.display())))?;
        created = created.add_rule(PathBeneath::new(fd, open_access)).map_err(landlock_error)?;
    }
    let status = created.no_new_privs(!p.exec).restrict_self().map_err(|e| match landlock_error(e) {
        Error::Sys { errno: libc::EPERM, .. } if p.exec => {
            Error::Sys { what: "landlock without no_new_privs (needs CAP_SYS_ADMIN)", errno: libc::EPERM }
        }
        other => other,
    })?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(Error::Unsupported("landlock"));
    }
    Ok(())
}

/// Syscall numbers that are the same on every architecture (added after
/// the tables were unified at 424) but not yet in the libc crate.
const SYS_SETXATTRAT: i64 = 463;
const SYS_REMOVEXATTRAT: i64 = 466;
const SYS_OPEN_TREE_ATTR: i64 = 467;
const SYS_FILE_SETATTR: i64 = 469;

/// The bits of socket(2)'s type argument that are the type (the rest are
/// SOCK_NONBLOCK and SOCK_CLOEXEC).
const SOCK_TYPE_MASK: u64 = 0xf;

/// The clone(2) flags that create namespaces. (CLONE_NEWTIME is 0x80,
/// which in clone's first argument is part of the exit signal; it can
/// only be used through unshare and clone3, both refused.)
const CLONE_NEW_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// Denials keyed by syscall number. An empty rule list denies always.
#[derive(Default)]
struct Denials {
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    always: BTreeSet<i64>,
}

impl Denials {
    fn always(&mut self, nr: i64) {
        self.always.insert(nr);
        self.rules.insert(nr, Vec::new());
    }

    /// Denies `nr` when all of `conds` hold; several calls for the same
    /// number deny when any of them holds.
    fn when(&mut self, nr: i64, conds: Vec<SeccompCondition>) -> Result<(), Error> {
        if self.always.contains(&nr) {
            return Ok(());
        }
        let rule = SeccompRule::new(conds).map_err(seccomp_error)?;
        self.rules.entry(nr).or_default().push(rule);
        Ok(())
    }

    /// Denies `nr` when argument `arg` (an int) is AT_FDCWD.
    fn at_cwd(&mut self, nr: i64, arg: u8) -> Result<(), Error> {
        let c = cond(arg, SeccompCmpOp::Eq, libc::AT_FDCWD as u32 as u64)?;
        self.when(nr, vec![c])
    }
}

fn seccomp_error(e: impl std::fmt::Display) -> Error {
    Error::Policy(format!("seccomp: {e}"))
}

/// A condition on the low 32 bits of argument `arg` (the C `int` the
/// kernel reads).
fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, Error> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(seccomp_error)
}

fn flag_set(arg: u8, flag: libc::c_int) -> Result<SeccompCondition, Error> {
    let f = flag as u32 as u64;
    cond(arg, SeccompCmpOp::MaskedEq(f), f)
}

fn flag_clear(arg: u8, flag: libc::c_int) -> Result<SeccompCondition, Error> {
    cond(arg, SeccompCmpOp::MaskedEq(flag as u32 as u64), 0)
}

/// The filter's denials for `p`.
fn denials(p: &Policy) -> Result<Denials, Error> {
    let mut d = Denials::default();
    for nr in [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_process_madvise,
        libc::SYS_pidfd_getfd,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_fanotify_init,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        SYS_OPEN_TREE_ATTR,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_quotactl_fd,
        libc::SYS_syslog,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        libc::SYS_vhangup,
        libc::SYS_migrate_pages,
        libc::SYS_move_pages,
        SYS_FILE_SETATTR,
    ] {
        d.always(nr);
    }
    #[cfg(target_arch = "x86_64")]
    for nr in [libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib, libc::SYS_lookup_dcookie] {
        d.always(nr);
    }
    // Faking terminal input is a classic way out of a sandbox.
    for req in [libc::TIOCSTI, libc::TIOCLINUX] {
        // The request type is c_ulong with glibc and c_int with musl.
        #[allow(clippy::unnecessary_cast)]
        d.when(libc::SYS_ioctl, vec![cond(1, SeccompCmpOp::Eq, req as u64)?])?;
    }

    if !p.exec {
        d.always(libc::SYS_execve);
        d.always(libc::SYS_execveat);
    }

    if p.fork || p.threads {
        // Processes or threads as the policy says; namespaces never.
        for flag in CLONE_NEW_FLAGS {
            d.when(libc::SYS_clone, vec![flag_set(0, flag)?])?;
        }
        if !p.threads {
            d.when(libc::SYS_clone, vec![flag_set(0, libc::CLONE_THREAD)?])?;
        }
        if !p.fork {
            d.when(libc::SYS_clone, vec![flag_clear(0, libc::CLONE_THREAD)?])?;
        }
    } else {
        d.always(libc::SYS_clone);
    }
    #[cfg(target_arch = "x86_64")]
    if !p.fork {
        d.always(libc::SYS_fork);
        d.always(libc::SYS_vfork);
    }

    // AF_UNIX sockets for a role with socket directories (which Landlock
    // confines from ABI 9); socket pairs only with `socketpairs`.
    // With `name_service` too, for the C library's name services.
    let unix = p.name_service || p.grants.iter().any(|g| matches!(g, Grant::SocketDir { .. }));
    let mut families = Vec::new();
    if p.net == Net::Connect {
        families.extend([libc::AF_INET, libc::AF_INET6]);
    }
    if unix {
        families.push(libc::AF_UNIX);
    }
    if families.is_empty() {
        d.always(libc::SYS_socket);
        d.always(libc::SYS_connect);
    } else {
        let others = families.iter().map(|&f| cond(0, SeccompCmpOp::Ne, f as u64)).collect::<Result<Vec<_>, _>>()?;
        d.when(libc::SYS_socket, others)?;
    }
    if unix {
        // Stream sockets only: the kernel knows no other AF_UNIX type but
        // these, and a datagram socket could reach any socket by sendto
        // where Landlock does not govern pathname sockets (before ABI 9).
        for kind in [libc::SOCK_DGRAM, libc::SOCK_SEQPACKET, libc::SOCK_RAW] {
            let family = cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)?;
            let kind = cond(1, SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK), kind as u64)?;
            d.when(libc::SYS_socket, vec![family, kind])?;
        }
    }
    if p.socketpairs {
        d.when(libc::SYS_socketpair, vec![cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?])?;
    } else {
        d.always(libc::SYS_socketpair);
    }

    if !p.change_uid {
        for nr in [
            libc::SYS_setuid,
            libc::SYS_setgid,
            libc::SYS_setreuid,
            libc::SYS_setregid,
            libc::SYS_setresuid,
            libc::SYS_setresgid,
            libc::SYS_setgroups,
            libc::SYS_setfsuid,
            libc::SYS_setfsgid,
        ] {
            d.always(nr);
        }
    }

    if p.whole_fs || !p.open_paths.is_empty() {
        return Ok(d);
    }
    // Calls that name a path relative to the working directory and have
    // no directory argument: those that change something, and those that
    // only look (left to a `read_fs` policy, whose Landlock ruleset
    // grants reading everywhere; what Landlock does not govern, such as
    // modes, owners, times and attributes, it may not change at all).
    #[cfg(target_arch = "x86_64")]
    let (looks, changes) = (
        [libc::SYS_open, libc::SYS_stat, libc::SYS_lstat, libc::SYS_access, libc::SYS_readlink],
        [
            libc::SYS_creat,
            libc::SYS_mkdir,
            libc::SYS_rmdir,
            libc::SYS_link,
            libc::SYS_unlink,
            libc::SYS_symlink,
            libc::SYS_rename,
            libc::SYS_chmod,
            libc::SYS_chown,
            libc::SYS_lchown,
            libc::SYS_mknod,
            libc::SYS_utime,
            libc::SYS_utimes,
        ],
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (looks, changes): ([i64; 0], [i64; 0]) = ([], []);
    let looks = looks.into_iter().chain([
        libc::SYS_statfs,
        libc::SYS_getxattr,
        libc::SYS_lgetxattr,
        libc::SYS_listxattr,
        libc::SYS_llistxattr,
    ]);
    let changes = changes.into_iter().chain([
        libc::SYS_truncate,
        libc::SYS_chdir,
        libc::SYS_setxattr,
        libc::SYS_lsetxattr,
        libc::SYS_removexattr,
        libc::SYS_lremovexattr,
        SYS_SETXATTRAT,
        SYS_REMOVEXATTRAT,
        libc::SYS_inotify_add_watch,
        libc::SYS_fanotify_mark,
    ]);
    for nr in changes {
        d.always(nr);
    }
    if !p.read_fs {
        for nr in looks {
            d.always(nr);
        }
    }
    // The *at calls. Without `read_fs`, when their directory is the
    // working directory: paths beneath granted directories (and absolute
    // paths given with one) are Landlock's to judge. With it, there is no
    // directory grant, and those that change something are refused
    // whatever their directory.
    let at_looks = [
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_readlinkat,
    ];
    let mut at_changes = vec![
        (libc::SYS_mkdirat, 0),
        (libc::SYS_mknodat, 0),
        (libc::SYS_unlinkat, 0),
        (libc::SYS_linkat, 0),
        (libc::SYS_linkat, 2),
        (libc::SYS_renameat2, 0),
        (libc::SYS_renameat2, 2),
        (libc::SYS_fchmodat, 0),
        (libc::SYS_fchmodat2, 0),
        (libc::SYS_fchownat, 0),
        (libc::SYS_utimensat, 0),
        (libc::SYS_symlinkat, 1),
    ];
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    at_changes.extend([(libc::SYS_renameat, 0), (libc::SYS_renameat, 2)]);
    #[cfg(target_arch = "x86_64")]
    at_changes.push((libc::SYS_futimesat, 0));
    if p.read_fs {
        for (nr, _) in at_changes {
            d.always(nr);
        }
    } else {
        for nr in at_looks {
            d.at_cwd(nr, 0)?;
        }
        for (nr, arg) in at_changes {
            d.at_cwd(nr, arg)?;
        }
    }
    Ok(d)
}

fn target_arch() -> Result<TargetArch, Error> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| Error::Unsupported("seccomp on this architecture"))
}

/// The BPF programs to install: the deny-list (EPERM), clone3 (ENOSYS)
/// and, on x86_64, the x32 range.
fn seccomp_programs(p: &Policy) -> Result<Vec<BpfProgram>, Error> {
    let arch = target_arch()?;
    let compile = |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32| -> Result<BpfProgram, Error> {
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)
            .map_err(seccomp_error)?;
        BpfProgram::try_from(filter).map_err(seccomp_error)
    };
    let mut programs = vec![
        compile(denials(p)?.rules, libc::EPERM)?,
        compile(BTreeMap::from([(libc::SYS_clone3, Vec::new())]), libc::ENOSYS)?,
    ];
    #[cfg(target_arch = "x86_64")]
    programs.push(x32_program());
    Ok(programs)
}

/// Refuses x32 system calls (numbers with bit 30 set, same audit
/// architecture as x86_64), which the deny-list's numbers do not match.
#[cfg(target_arch = "x86_64")]
fn x32_program() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // seccomp_data.arch: anything but x86_64 is left to the other
        // filters (which kill it).
        insn(BPF_LD_W_ABS, 0, 0, 4),
        insn(0x15, 1, 0, 0xC000_003E), // JEQ AUDIT_ARCH_X86_64: to the nr check
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        // seccomp_data.nr
        insn(BPF_LD_W_ABS, 0, 0, 0),
        insn(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// `struct sock_fprog` for seccompiler's `sock_filter` (the libc crate's
/// is declared with its own filter type).
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// Installs one filter on the calling thread. With `exec` the kernel
/// does not require no_new_privs but CAP_SYS_ADMIN instead.
fn install(prog: &[sock_filter], exec: bool) -> Result<(), Error> {
    let len = libc::c_ushort::try_from(prog.len()).map_err(|_| Error::Policy("seccomp filter too long".into()))?;
    let fprog = SockFprog { len, filter: prog.as_ptr() };
    // SAFETY: fprog points to `len` initialised instructions that live
    // across the call; the kernel copies the program and keeps no
    // reference to our memory.
    let rc = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0 as libc::c_uint, &fprog as *const SockFprog)
    };
    if rc != 0 {
        let errno = errno();
        return Err(match errno {
            libc::EINVAL => Error::Unsupported("seccomp filters"),
            libc::EACCES if exec => Error::Sys { what: "seccomp without no_new_privs (needs CAP_SYS_ADMIN)", errno },
            _ => Error::Sys { what: "seccomp", errno },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn filters_compile_for_every_shape() {
        for net in [Net::None, Net::Connect] {
            for bits in 0..64u8 {
                let mut p = Policy::new("t");
                p.threads = bits & 32 != 0;
                p.socketpairs = bits & 16 != 0;
                p.net = net;
                p.fork = bits & 1 != 0;
                p.exec = bits & 2 != 0;
                p.change_uid = bits & 4 != 0;
                if bits & 8 != 0 {
                    p.open_paths.push(PathBuf::from("/etc"));
                }
                let progs = seccomp_programs(&p).expect("compiles");
                assert!(progs.iter().all(|prog| !prog.is_empty() && prog.len() < 4096));
            }
        }
    }

    #[test]
    fn denials_follow_the_policy() {
        let strict = denials(&Policy::new("t")).unwrap();
        for nr in [libc::SYS_execve, libc::SYS_socket, libc::SYS_clone, libc::SYS_setuid, libc::SYS_ptrace] {
            assert!(strict.always.contains(&nr), "{nr}");
        }
        assert!(!strict.always.contains(&libc::SYS_openat));
        assert!(strict.rules.contains_key(&libc::SYS_openat));

        let mut broad = Policy::new("local");
        broad.exec = true;
        broad.fork = true;
        broad.change_uid = true;
        broad.net = Net::Connect;
        broad.open_paths.push(PathBuf::from("/etc"));
        let d = denials(&broad).unwrap();
        for nr in [libc::SYS_execve, libc::SYS_setuid, libc::SYS_openat, libc::SYS_connect] {
            assert!(!d.rules.contains_key(&nr), "{nr}");
        }
        // Still conditional: namespaces and threads; non-inet sockets.
        assert!(!d.rules[&libc::SYS_clone].is_empty());
        assert!(!d.rules[&libc::SYS_socket].is_empty());
        assert!(d.always.contains(&libc::SYS_unshare));
        assert!(d.always.contains(&libc::SYS_socketpair));
        broad.socketpairs = true;
        let d = denials(&broad).unwrap();
        assert!(!d.always.contains(&libc::SYS_socketpair));
        assert!(!d.rules[&libc::SYS_socketpair].is_empty());

        // Threads: clone with CLONE_THREAD passes; without it (a
        // process), or with a namespace flag, it is refused; fork and
        // vfork are.
        let mut threads = Policy::new("lookup");
        threads.threads = true;
        let d = denials(&threads).unwrap();
        assert!(!d.always.contains(&libc::SYS_clone));
        assert_eq!(d.rules[&libc::SYS_clone].len(), CLONE_NEW_FLAGS.len() + 1);
        #[cfg(target_arch = "x86_64")]
        assert!(d.always.contains(&libc::SYS_fork) && d.always.contains(&libc::SYS_vfork));
        threads.fork = true;
        let d = denials(&threads).unwrap();
        assert_eq!(d.rules[&libc::SYS_clone].len(), CLONE_NEW_FLAGS.len());

        // Name services: AF_UNIX stream sockets and connect, nothing else.
        let mut ns = Policy::new("local");
        ns.whole_fs = true;
        ns.name_service = true;
        let d = denials(&ns).unwrap();
        assert!(!d.rules.contains_key(&libc::SYS_connect));
        assert!(!d.always.contains(&libc::SYS_connect));
        assert!(!d.always.contains(&libc::SYS_socket));
        // Other families; AF_UNIX datagram, seqpacket and raw.
        assert_eq!(d.rules[&libc::SYS_socket].len(), 4);
        assert!(d.always.contains(&libc::SYS_socketpair));

        // The file system readable: looking by path is left to Landlock,
        // every change by path refused whatever the directory (modes,
        // owners and times too, which Landlock does not govern).
        ns.whole_fs = false;
        ns.read_fs = true;
        let d = denials(&ns).unwrap();
        for nr in [libc::SYS_openat, libc::SYS_newfstatat, libc::SYS_statx, libc::SYS_readlinkat, libc::SYS_open] {
            assert!(!d.rules.contains_key(&nr), "{nr}");
        }
        for nr in [
            libc::SYS_unlinkat,
            libc::SYS_renameat2,
            libc::SYS_fchmodat,
            libc::SYS_fchownat,
            libc::SYS_utimensat,
            libc::SYS_symlinkat,
            libc::SYS_chmod,
            libc::SYS_truncate,
            libc::SYS_setxattr,
        ] {
            assert!(d.always.contains(&nr), "{nr}");
        }
        assert!(!seccomp_programs(&ns).expect("compiles").is_empty());

        // A socket directory: AF_UNIX sockets and connect, still no pairs.
        for net in [Net::None, Net::Connect] {
            let mut p = Policy::new("connector");
            p.net = net;
            p.grants.push(Grant::SocketDir {
                fd: 4,
                path: PathBuf::from("/run/lmtp"),
                sockets: vec![std::ffi::OsString::from("s")],
            });
            let d = denials(&p).unwrap();
            assert!(!d.rules.contains_key(&libc::SYS_connect), "{net:?}");
            // Other families; AF_UNIX datagram, seqpacket and raw.
            let socket_rules = &d.rules[&libc::SYS_socket];
            assert_eq!(socket_rules.len(), 4, "{net:?}");
            assert!(!d.always.contains(&libc::SYS_socket), "{net:?}");
            assert!(d.always.contains(&libc::SYS_socketpair), "{net:?}");
            assert!(!seccomp_programs(&p).expect("compiles").is_empty());
        }
    }

    #[test]
    fn describes_the_kernel() {
        let s = describe();
        assert!(s.starts_with("landlock "), "{s}");
        assert!(s.contains("seccomp"), "{s}");
    }
}
