//! Maildrop files whose message cleanup committed but which could not be
//! removed afterwards (maildrop/ remounted read-only, made immutable, a
//! failing disk). Taken again by the next listing, each would be queued
//! again at every listing, without end; so they are remembered, by name
//! and by the file's identity, skipped by listings, and their removal is
//! tried again at each listing. Their messages are queued already: a
//! file forgotten (pickup restarted) is queued once more, no more.
//!
//! The memory is bounded: once [`MAX_UNREMOVED`] files are remembered, no
//! listing is taken (nothing more could be remembered) until removals
//! work again.
//!
//! Trusts: nothing; names come from listings of maildrop/.

use std::collections::HashMap;
use std::io;

/// Most files remembered; at this many, listings are not taken.
pub const MAX_UNREMOVED: usize = 1000;

/// A file's identity: device and inode.
pub type Identity = (u64, u64);

#[derive(Default)]
pub struct Unremoved {
    files: HashMap<String, Identity>,
}

impl Unremoved {
    /// Remember `name` (file `identity`), queued and not removed.
    pub fn add(&mut self, name: &str, identity: Identity) {
        self.files.insert(name.to_string(), identity);
    }

    /// Whether a listing must skip `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// Whether no more can be remembered: listings are not taken.
    pub fn is_full(&self) -> bool {
        self.files.len() >= MAX_UNREMOVED
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Try again to remove each file: `identity` says what file is under
    /// a name now (`None`: none), `remove` removes it. A file gone, or
    /// replaced by another of the same name (which is then taken as any
    /// other), is forgotten. Returns the names removed now and the
    /// errors of those still in place.
    pub fn retry(
        &mut self,
        identity: impl Fn(&str) -> Option<Identity>,
        mut remove: impl FnMut(&str) -> io::Result<()>,
    ) -> (Vec<String>, Vec<(String, io::Error)>) {
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        self.files.retain(|name, id| {
            if identity(name) != Some(*id) {
                return false;
            }
            match remove(name) {
                Ok(()) => {
                    removed.push(name.clone());
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    failed.push((name.clone(), e));
                    true
                }
            }
        });
        removed.sort();
        (removed, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashSet;

    /// A maildrop file queued whose removal fails (a read-only maildrop/)
    /// is skipped by listings until it can be removed; one replaced
    /// meanwhile by another file of its name is forgotten.
    #[test]
    fn a_queued_file_is_skipped_until_it_can_be_removed() {
        let mut u = Unremoved::default();
        u.add("a", (1, 10));
        u.add("b", (1, 11));
        assert!(u.contains("a") && u.contains("b") && !u.contains("c"));
        let present = RefCell::new(HashSet::from(["a", "b"]));
        let read_only = std::cell::Cell::new(true);
        let identity = |n: &str| match n {
            "a" if present.borrow().contains("a") => Some((1, 10)),
            // b was removed by hand and a new file took its name.
            "b" => Some((1, 99)),
            _ => None,
        };
        let remove = |n: &str| -> io::Result<()> {
            if read_only.get() {
                return Err(io::Error::from_raw_os_error(nix::libc::EROFS));
            }
            present.borrow_mut().remove(n);
            Ok(())
        };
        let (removed, failed) = u.retry(identity, remove);
        assert!(removed.is_empty());
        assert_eq!(failed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(u.contains("a"), "still skipped");
        assert!(!u.contains("b"), "another file: taken as any other");
        read_only.set(false);
        let (removed, failed) = u.retry(identity, remove);
        assert_eq!((removed, failed.len()), (vec![String::from("a")], 0));
        assert_eq!(u.len(), 0);
        assert!(!present.borrow().contains("a"));
    }

    #[test]
    fn at_the_bound_no_listing_is_taken() {
        let mut u = Unremoved::default();
        for i in 0..MAX_UNREMOVED {
            assert!(!u.is_full());
            u.add(&format!("f{i}"), (1, i as u64));
        }
        assert!(u.is_full());
    }
}
