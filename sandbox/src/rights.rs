//! Policies as data: the Capsicum rights and pledge promises a policy
//! means, computed the same on every system so tests on Linux check them.
use crate::{Grant, Policy};

/// Capsicum rights by name (mapped to capsicum::Right on FreeBSD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CapRight {
    Read,
    Write,
    Seek,
    Fstat,
    Fsync,
    Ftruncate,
    Lookup,
    Create,
    Unlinkat,
    RenameatSource,
    RenameatTarget,
    Mkdirat,
    Accept,
    Event,
    Shutdown,
    Getpeername,
    Getsockopt,
    Setsockopt,
    Fcntl,
}

/// The rights `grant` is limited to on FreeBSD.
pub fn capsicum_rights(_grant: &Grant) -> Vec<CapRight> {
    Vec::new()
}

/// The pledge(2) promises for `policy` on OpenBSD, space separated.
pub fn pledge_promises(_policy: &Policy) -> String {
    String::new()
}
