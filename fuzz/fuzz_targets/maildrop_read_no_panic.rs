//! pickup's reader of maildrop files (written by postdrop for local
//! users) never panics, never allocates from an unchecked length, and
//! never returns more content than its limit, whatever the bytes; a
//! stream the writer made reads back as written.
//!
//! The first byte picks the mode: bit 0 reads with `new_counting`; with
//! bit 1 the rest is content that the writer makes a valid stream of, in
//! which one byte (at the offset of bytes 1 and 2) is then XORed with
//! byte 3 (none when it is zero), so that the reader is driven past its
//! CRC and record checks; without it, the rest is read as it is.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mta::maildrop::{Envelope, Limits, Reader, Recipient, Writer};

fn read(stream: &[u8], counting: bool) -> Option<Vec<u8>> {
    let limits = Limits { max_recipients: 50, max_content: 1 << 16 };
    let opened = if counting {
        Reader::new_counting(stream, limits).map(|(r, e, _)| (r, e))
    } else {
        Reader::new(stream, limits)
    };
    let (mut reader, envelope) = opened.ok()?;
    assert!(envelope.recipients.len() <= limits.max_recipients);
    let mut content = Vec::new();
    // Each chunk is at least one byte: the loop ends within the input.
    for _ in 0..=stream.len() {
        match reader.next_chunk() {
            Ok(Some(chunk)) => {
                assert!(!chunk.is_empty());
                content.extend_from_slice(&chunk);
                assert!(content.len() as u64 <= limits.max_content);
            }
            Ok(None) => {
                assert_eq!(content.len() as u64, reader.content_len());
                return Some(content);
            }
            Err(_) => {
                assert!(reader.next_chunk().is_err(), "a failed stream read on");
                return None;
            }
        }
    }
    panic!("more chunks than input bytes");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let counting = mode & 1 == 1;
    if mode & 2 == 0 {
        read(rest, counting);
        return;
    }
    let Some((&[hi, lo, xor], content)) = rest.split_first_chunk::<3>() else { return };
    let envelope = Envelope {
        sender: "sender@example.org".into(),
        recipients: vec![Recipient { address: "root".into(), orcpt: None, notify: None }],
        ..Envelope::default()
    };
    let mut w = Writer::new(Vec::new(), &envelope).expect("writer");
    // Written in two pieces, as sendmail writes what it reads.
    let half = content.len() / 2;
    w.write(&content[..half]).expect("write");
    w.write(&content[half..]).expect("write");
    let mut stream = w.finish().expect("finish");
    if xor == 0 {
        assert_eq!(read(&stream, counting).as_deref(), Some(content), "a valid stream read back otherwise");
        return;
    }
    let at = usize::from(u16::from_be_bytes([hi, lo])) % stream.len();
    stream[at] ^= xor;
    read(&stream, counting);
});
