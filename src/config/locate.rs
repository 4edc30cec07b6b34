//! Where a key is written in the configuration text: the line an error
//! about several keys (found after the file was read, by
//! `Config::check`) names, as an error about one key's value names its
//! own (serde_ucl finds that one).
//!
//! serde_ucl keeps the positions of values only while it deserializes,
//! and gives one only with an error: so the text is deserialized again
//! into a walker that follows the key's path and fails at its value,
//! and the failure's position is the answer.
//!
//! Trusts: nothing; the text was read and checked already.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The failure the walker ends with at the value it looks for.
const FOUND: &str = "mta: the key looked for";

/// The line of the key a `Config::check` message names (they begin
/// with "key `a.b.c`:"), or of the closest enclosing key that is in the
/// text (a value left at its default is not): None when not even the
/// first part is written.
pub fn line_of_message(text: &str, message: &str) -> Option<usize> {
    let key = message.strip_prefix("key `")?.split('`').next()?;
    let path: Vec<&str> = key.split('.').collect();
    (1..=path.len()).rev().find_map(|n| line_of(text, &path[..n]))
}

/// The line where the value of `path` is written in `text`.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let Err(e) = Walk { path }.deserialize(serde_ucl::UclDeserializer::new(text)) else { return None };
    match &e {
        serde_ucl::UclError::Deserialize(d) if d.error().to_string() == FOUND => e.position().map(|p| p.line),
        _ => None,
    }
}

/// Follows `path` from the value it is given; at its end, fails with
/// [`FOUND`].
struct Walk<'p> {
    path: &'p [&'p str],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => Err(de::Error::custom(FOUND)),
            Some((key, rest)) => d.deserialize_map(Entries { key, rest }),
        }
    }
}

/// The entries of an object: the one named `key` is walked on into.
struct Entries<'p> {
    key: &'p str,
    rest: &'p [&'p str],
}

impl<'de> Visitor<'de> for Entries<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object holding `{}`", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<String>()? {
            if k == self.key {
                map.next_value_seed(Walk { path: self.rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_on_their_lines() {
        let text = "hostname = \"a.example\";\n\nrelay {\n  host = \"[192.0.2.1]\";\n\n  password_file = \"/x\";\n}\n\
                    listen { smtp { address = \"127.0.0.1:25\"; tls = implicit; } }\n";
        assert_eq!(line_of(text, &["hostname"]), Some(1));
        assert_eq!(line_of(text, &["relay", "password_file"]), Some(6));
        assert_eq!(line_of(text, &["relay", "host"]), Some(4));
        assert_eq!(line_of(text, &["listen", "smtp", "tls"]), Some(8));
        assert_eq!(line_of(text, &["relay", "tls"]), None);
        assert_eq!(line_of(text, &["nosuch"]), None);
        // A scalar has no keys beneath it.
        assert_eq!(line_of(text, &["hostname", "x"]), None);
        assert_eq!(line_of(text, &[]), None);
    }

    #[test]
    fn messages_name_their_key_or_the_closest_written() {
        let text = "\nqueue {\n  backoff {\n    min = 1h;\n  }\n}\nlocal { lock_timeout = 0s; }\n";
        assert_eq!(line_of_message(text, "key `queue.backoff.min`: x"), Some(4));
        // max is not written: its block is.
        assert_eq!(line_of_message(text, "key `queue.backoff.max`: x"), Some(3));
        assert_eq!(line_of_message(text, "key `local`: x"), Some(7));
        assert_eq!(line_of_message(text, "key `dns`: x"), None);
        assert_eq!(line_of_message(text, "no key named"), None);
    }
}
