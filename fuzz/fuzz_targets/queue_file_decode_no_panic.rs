//! The queue file reader never panics and never allocates from an
//! unchecked length, whatever the bytes, and what it accepts it writes
//! back to the same file.
//!
//! With the first byte odd, the rest has every record's CRC (and the
//! content's) made right before it is read, so that the fuzzer reaches
//! the validation of each field behind them; even, the rest is read as
//! it is.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta::queue::QueueFile;

/// The queue file header, then records of a 12-byte header (tag, length,
/// CRC of header bytes 0-7 and the payload) and a payload.
const HEADER: usize = 8;
const REC: usize = 12;

fn fix_crcs(b: &mut [u8]) {
    let mut pos = HEADER;
    while pos + REC <= b.len() {
        let len = u32::from_le_bytes([b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]]) as usize;
        let Some(end) = pos.checked_add(REC + len).filter(|&e| e <= b.len()) else { return };
        if &b[pos..pos + 4] == b"CONT" && len >= 12 {
            // Its payload: the content's length and CRC; the content is
            // the rest of the file.
            let content = crc32fast::hash(&b[end..]);
            b[pos + REC + 8..pos + REC + 12].copy_from_slice(&content.to_le_bytes());
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&b[pos..pos + 8]);
        h.update(&b[pos + REC..end]);
        let crc = h.finalize();
        b[pos + 8..pos + 12].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut bytes);
    }
    if let Ok(q) = QueueFile::decode(&bytes) {
        let again = q.encode().expect("a decoded queue file encodes");
        assert_eq!(QueueFile::decode(&again).expect("what was written reads back"), q);
    }
});
