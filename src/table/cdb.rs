//! A bounded reader for cdb files (D. J. Bernstein's constant database
//! format: a 2048-byte header of 256 (position, slots) pairs, records of
//! (key length, data length, key, data), and hash tables of (hash,
//! position) slots; all numbers 32-bit little-endian). It reads the whole
//! file into memory once, from a descriptor, and checks every offset.

use std::fs::File;
use std::io;

/// A table held in memory.
pub struct Table {
    data: Vec<u8>,
}

fn u32_at(d: &[u8], pos: usize) -> Option<u32> {
    let b = d.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &c| (h << 5).wrapping_add(h) ^ u32::from(c))
}

impl Table {
    /// Read a table from `file` (from its start), refusing files over `max` bytes.
    pub fn read(file: &File, max: u64) -> io::Result<Table> {
        let len = file.metadata()?.len();
        if len > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("table of {len} bytes over {max}")));
        }
        // pread: the descriptor may be shared (several smtpd processes
        // inherit one open file), so its offset must not be used.
        let mut data = vec![0u8; len as usize];
        let mut at = 0;
        while at < data.len() {
            match std::os::unix::fs::FileExt::read_at(file, &mut data[at..], at as u64) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "table shorter than its size")),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Table::from_bytes(data)
    }

    pub fn from_bytes(data: Vec<u8>) -> io::Result<Table> {
        if data.len() < 2048 || data.len() > u32::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a cdb file"));
        }
        Ok(Table { data })
    }

    /// The value of the first record with `key`, or None (also for a
    /// malformed file: a lookup never panics).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let d = &self.data;
        let h = hash(key);
        let slot = (h as usize & 0xff) * 8;
        let tpos = u32_at(d, slot)? as usize;
        let tslots = u32_at(d, slot + 4)? as usize;
        if tslots == 0 || tslots > d.len() / 8 {
            return None;
        }
        let start = ((h >> 8) as usize) % tslots;
        for i in 0..tslots {
            let s = tpos.checked_add(((start + i) % tslots) * 8)?;
            let sh = u32_at(d, s)?;
            let rpos = u32_at(d, s + 4)? as usize;
            if rpos == 0 {
                return None;
            }
            if sh != h {
                continue;
            }
            let klen = u32_at(d, rpos)? as usize;
            let vlen = u32_at(d, rpos + 4)? as usize;
            let kstart = rpos.checked_add(8)?;
            let vstart = kstart.checked_add(klen)?;
            if d.get(kstart..vstart)? == key {
                return d.get(vstart..vstart.checked_add(vlen)?);
            }
        }
        None
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Every record as (key, value), in file order. The records lie
    /// between the header and the first hash table; one that does not fit
    /// there ends the walk with an error.
    pub fn records(&self) -> Records<'_> {
        let end = (0..256).filter_map(|i| u32_at(&self.data, i * 8)).map(|p| p as usize).min().unwrap_or(2048);
        Records { data: &self.data, pos: 2048, end, done: false }
    }
}

/// The records of a [`Table`], from [`Table::records`].
pub struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
    done: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = io::Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos == self.end {
            return None;
        }
        match record_at(self.data, self.pos, self.end) {
            Some((key, value, next)) => {
                self.pos = next;
                Some(Ok((key, value)))
            }
            None => {
                self.done = true;
                Some(Err(io::Error::new(io::ErrorKind::InvalidData, "damaged cdb record")))
            }
        }
    }
}

/// The key and value of the record at `pos`, and where the next one
/// starts, if the record ends by `end`.
fn record_at(d: &[u8], pos: usize, end: usize) -> Option<(&[u8], &[u8], usize)> {
    let klen = u32_at(d, pos)? as usize;
    let vlen = u32_at(d, pos.checked_add(4)?)? as usize;
    let kstart = pos.checked_add(8)?;
    let vstart = kstart.checked_add(klen)?;
    let next = vstart.checked_add(vlen)?;
    if next > end {
        return None;
    }
    Some((d.get(kstart..vstart)?, d.get(vstart..next)?, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(pairs: &[(&str, &str)]) -> Vec<u8> {
        // Tests run in parallel: each table gets a file of its own.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mta-cdb-{}-{n}", std::process::id()));
        let mut w = cdb2::CDBWriter::create(&path).unwrap();
        for (k, v) in pairs {
            w.add(k.as_bytes(), v.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        let d = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        d
    }

    #[test]
    fn lookups_agree_with_cdb2() {
        let pairs: Vec<(String, String)> = (0..500).map(|i| (format!("user{i}"), format!("v{i}"))).collect();
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let t = Table::from_bytes(build(&refs)).unwrap();
        for (k, v) in &pairs {
            assert_eq!(t.get(k.as_bytes()), Some(v.as_bytes()));
        }
        assert_eq!(t.get(b"nobody"), None);
        let empty = Table::from_bytes(build(&[])).unwrap();
        assert_eq!(empty.get(b"x"), None);
    }

    #[test]
    fn records_walk_every_pair_in_order() {
        let t = Table::from_bytes(build(&[("alice", "1"), ("bob", ""), ("carol", "333")])).unwrap();
        let all: Vec<(&[u8], &[u8])> = t.records().map(Result::unwrap).collect();
        assert_eq!(all, [(&b"alice"[..], &b"1"[..]), (b"bob", b""), (b"carol", b"333")]);
        assert_eq!(Table::from_bytes(build(&[])).unwrap().records().count(), 0);
    }

    #[test]
    fn records_of_a_damaged_table_end_in_an_error() {
        let mut d = build(&[("alice", "1"), ("bob", "2")]);
        // The second record's key length now runs into the hash tables.
        let second = 2048 + 8 + 5 + 1;
        d[second..second + 4].copy_from_slice(&1000u32.to_le_bytes());
        let t = Table::from_bytes(d).unwrap();
        let all: Vec<_> = t.records().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].as_ref().unwrap(), &(&b"alice"[..], &b"1"[..]));
        assert!(all[1].is_err());
    }

    #[test]
    fn short_files_refused() {
        assert!(Table::from_bytes(vec![0; 100]).is_err());
    }

    proptest! {
        /// cdb_lookup_no_panic: any bytes after the header, any key.
        #[test]
        fn cdb_lookup_no_panic(body in proptest::collection::vec(any::<u8>(), 2048..4096), key in proptest::collection::vec(any::<u8>(), 0..16)) {
            let t = Table::from_bytes(body).unwrap();
            let _ = t.get(&key);
        }

        /// cdb_records_no_panic: any bytes after the header; the walk ends.
        #[test]
        fn cdb_records_no_panic(body in proptest::collection::vec(any::<u8>(), 2048..4096)) {
            let t = Table::from_bytes(body).unwrap();
            prop_assert!(t.records().count() <= 4096 / 8);
        }
    }
}
