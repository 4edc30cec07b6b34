//! The names of files in maildrop/. postdrop writes a file under a
//! temporary name, `.tmp.`, a tag of the machine's boot and a unique
//! part (`.tmp.B<16 hex>.<unique>`), and renames it to a final name when
//! it is whole. pickup takes only final names; a temporary name is a file
//! still being written, or one whose writer died.
//!
//! The boot tag is what lets pickup tell those apart at once after a
//! crash: postdrop syncs the file before its rename, but cannot sync
//! maildrop/ (it may only search it), so a crash can undo a rename that
//! sendmail had already reported as success. A temporary file from
//! another boot has no writer left; whole, it is taken at once.
//!
//! Trusts: nothing; names are checked when parsed.

/// The prefix of every temporary name.
pub const TEMPORARY: &str = ".tmp.";

/// A tag for a boot identity (`sandbox::boot_id`): `B` and 16 hex digits
/// of its FNV-1a hash, stable across processes (unlike std's hashers).
pub fn boot_tag(boot: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in boot.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("B{h:016X}")
}

/// The temporary name for a file postdrop writes in this boot (`tag`
/// from [`boot_tag`]; without one, the boot cannot be told).
pub fn temporary(tag: Option<&str>, unique: &str) -> String {
    match tag {
        Some(tag) => format!("{TEMPORARY}{tag}.{unique}"),
        None => format!("{TEMPORARY}{unique}"),
    }
}

/// The final name pickup gives a whole file it found under the temporary
/// name `name`; `None` if `name` is not one postdrop makes.
pub fn final_for(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(TEMPORARY)?;
    let done = match rest.split_once('.') {
        Some((tag, unique)) if is_tag(tag) => unique,
        _ => rest,
    };
    (!done.is_empty() && !done.starts_with('.') && !done.contains('.')).then_some(done)
}

/// The boot tag in a temporary name, if it has one.
pub fn tag_of(name: &str) -> Option<&str> {
    let (tag, _) = name.strip_prefix(TEMPORARY)?.split_once('.')?;
    is_tag(tag).then_some(tag)
}

fn is_tag(s: &str) -> bool {
    s.len() == 17 && s.starts_with('B') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the writer of the temporary file `name` is certainly gone
/// because it ran in another boot than `current` (this boot's tag). A
/// name without a tag, or no tag for this boot, tells nothing.
pub fn from_another_boot(name: &str, current: Option<&str>) -> bool {
    matches!((tag_of(name), current), (Some(t), Some(c)) if t != c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_carry_the_boot_and_map_to_a_final_name() {
        let tag = boot_tag("linux:0f6e2b4c-1d2a-4b8e-9d3c-2e8f1a7b6c5d");
        assert_eq!(tag, boot_tag("linux:0f6e2b4c-1d2a-4b8e-9d3c-2e8f1a7b6c5d"), "stable");
        assert_ne!(tag, boot_tag("linux:0f6e2b4c-1d2a-4b8e-9d3c-2e8f1a7b6c5e"));
        let name = temporary(Some(&tag), "0065AB12CD0000002A1234567890ABCDEF");
        assert!(name.starts_with(".tmp.B") && name.len() == 5 + 17 + 1 + 34, "{name}");
        assert_eq!(tag_of(&name), Some(tag.as_str()));
        assert_eq!(final_for(&name), Some("0065AB12CD0000002A1234567890ABCDEF"));
        // Names of an older postdrop, without a tag.
        assert_eq!(final_for(".tmp.0065AB12"), Some("0065AB12"));
        assert_eq!(tag_of(".tmp.0065AB12"), None);
        assert_eq!(temporary(None, "0065AB12"), ".tmp.0065AB12");
        for bad in [".tmp.", ".tmp..x", ".x.0065", "0065", ".tmp.a.b.c", ".tmp.Bzz.x"] {
            assert_eq!(final_for(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_tag_of_another_boot_means_the_writer_is_gone() {
        let now = boot_tag("boot 2");
        let then = temporary(Some(&boot_tag("boot 1")), "0065AB12");
        let this = temporary(Some(&now), "0065AB12");
        assert!(from_another_boot(&then, Some(&now)));
        assert!(!from_another_boot(&this, Some(&now)));
        assert!(!from_another_boot(&then, None), "this boot unknown");
        assert!(!from_another_boot(".tmp.0065AB12", Some(&now)), "an untagged name");
    }
}
