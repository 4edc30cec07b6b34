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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(pairs: &[(&str, &str)]) -> Vec<u8> {
        let path = std::env::temp_dir().join(format!("mta-cdb-{}-{}", std::process::id(), pairs.len()));
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
    }
}
