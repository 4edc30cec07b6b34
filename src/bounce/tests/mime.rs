//! A small, strict MIME reader for the tests: it checks what a report
//! must be on the wire (CR LF lines of at most 998 octets, a header block,
//! a multipart body whose delimiters are the only lines starting with the
//! boundary) and gives back the parts and the delivery-status fields.
//! Written by hand so that the tests need no mail parser.

/// A message or body part: its unfolded header fields and its body.
#[derive(Debug)]
pub struct Entity<'a> {
    pub fields: Vec<(String, String)>,
    pub body: &'a [u8],
}

impl Entity<'_> {
    /// The first field called `name` (any case), unfolded.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn count(&self, name: &str) -> usize {
        self.fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }

    /// The Content-Type's `type/subtype` in lower case and its parameters.
    pub fn content_type(&self) -> (String, Vec<(String, String)>) {
        let v = self.get("Content-Type").unwrap_or("text/plain");
        let mut items = split_params(v).into_iter();
        let mime = items.next().unwrap_or_default().trim().to_ascii_lowercase();
        let params = items
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim();
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                Some((k.trim().to_ascii_lowercase(), v.to_string()))
            })
            .collect();
        (mime, params)
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.content_type().1.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(self.body).expect("UTF-8 body")
    }
}

/// Splits at `;` outside quotes.
fn split_params(v: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in v.chars() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().unwrap().push(c);
    }
    out
}

/// Every line ends in CR LF, holds no other CR or LF, and has at most
/// 998 octets.
pub fn check_lines(raw: &[u8]) -> Result<(), String> {
    if !raw.ends_with(b"\r\n") {
        return Err("does not end in CR LF".into());
    }
    for (n, line) in raw[..raw.len() - 1].split(|&b| b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\r") else { return Err(format!("line {n}: bare LF")) };
        if line.contains(&b'\r') {
            return Err(format!("line {n}: bare CR"));
        }
        if line.len() > 998 {
            return Err(format!("line {n}: {} octets", line.len()));
        }
    }
    Ok(())
}

/// Header fields, unfolded, up to the empty line; the rest is the body.
pub fn entity(raw: &[u8]) -> Result<Entity<'_>, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &raw[pos..];
        if rest.is_empty() {
            return Ok(Entity { fields, body: rest });
        }
        let end = rest.windows(2).position(|w| w == b"\r\n").ok_or("header line without CR LF")?;
        let line = std::str::from_utf8(&rest[..end]).map_err(|e| format!("header not UTF-8: {e}"))?;
        pos += end + 2;
        if line.is_empty() {
            return Ok(Entity { fields, body: &raw[pos..] });
        }
        if line.starts_with([' ', '\t']) {
            let last = fields.last_mut().ok_or("continuation before any field")?;
            last.1.push_str(line);
            continue;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| format!("not a header field: {line:?}"))?;
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(format!("bad field name {name:?}"));
        }
        fields.push((name.to_string(), value.trim_start().to_string()));
    }
}

/// The body parts of a multipart body (RFC 2046 5.1.1). Fails when a line
/// that starts with `--boundary` is not exactly a delimiter, when the
/// close delimiter is missing, or when anything but an empty epilogue
/// follows it.
pub fn multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>, String> {
    let dash = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut part_start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..].windows(2).position(|w| w == b"\r\n").map_or(body.len(), |e| pos + e);
        let line = &body[pos..end];
        if line.starts_with(dash.as_bytes()) {
            // The CR LF before a delimiter belongs to the delimiter.
            let content_end = pos.saturating_sub(2);
            if line == dash.as_bytes() || line == close.as_bytes() {
                if let Some(start) = part_start {
                    parts.push(&body[start..content_end.max(start)]);
                }
                if line == close.as_bytes() {
                    let epilogue = &body[(end + 2).min(body.len())..];
                    if !epilogue.is_empty() {
                        return Err(format!("{} bytes after the close delimiter", epilogue.len()));
                    }
                    return Ok(parts);
                }
                part_start = Some(end + 2);
            } else {
                return Err(format!("a line starts with the boundary: {:?}", String::from_utf8_lossy(line)));
            }
        }
        pos = end + 2;
    }
    Err("no close delimiter".into())
}

/// The groups of a delivery-status body: per-message fields first, then
/// one group per recipient.
pub fn dsn_groups(body: &[u8]) -> Result<Vec<Vec<(String, String)>>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut groups = Vec::new();
    for block in text.split("\r\n\r\n").filter(|b| !b.trim().is_empty()) {
        let mut raw = block.trim_end_matches("\r\n").as_bytes().to_vec();
        raw.extend_from_slice(b"\r\n\r\n");
        let e = entity(&raw)?;
        if !e.body.is_empty() {
            return Err("delivery-status group with a body".into());
        }
        groups.push(e.fields);
    }
    Ok(groups)
}

/// Looks a field up in a group.
pub fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}
