//! A minimal POSIX tar (ustar) writer and reader, enough for bags: regular files and folders,
//! UTF-8 names, pax `path` records for names that do not fit the ustar fields, and pax `size`
//! records for files of 8 GiB and more.
//!
//! Written by hand rather than with the `tar` crate: a bag needs about a hundred lines of it, and
//! the crate brings platform metadata handling (ownership, extended attributes, file times) that a
//! deterministic archive must switch off anyway.

const BLOCK: usize = 512;
/// The largest size the 11 octal digits of a ustar header hold.
const MAX_OCTAL_SIZE: u64 = 0o77_777_777_777;

/// Writes `entries` (path, bytes) as a tar file, with a folder entry before the first file of
/// each folder. Every entry has owner 0:0, mode 0644 (folders 0755) and time `mtime`.
pub fn write(entries: &[(String, &[u8])], mtime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut folders = std::collections::BTreeSet::new();
    for (path, bytes) in entries {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let folder = &path[..at + i + 1];
            if folders.insert(folder.to_owned()) {
                entry(&mut out, folder, b'5', 0o755, &[], mtime);
            }
            at += i + 1;
        }
        entry(&mut out, path, b'0', 0o644, bytes, mtime);
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    out
}

fn entry(out: &mut Vec<u8>, path: &str, kind: u8, mode: u32, bytes: &[u8], mtime: u64) {
    let size = bytes.len() as u64;
    let split = split_name(path);
    let mut pax = String::new();
    if split.is_none() {
        pax.push_str(&pax_record("path", path));
    }
    if size > MAX_OCTAL_SIZE {
        pax.push_str(&pax_record("size", &size.to_string()));
    }
    if !pax.is_empty() {
        let name = format!("PaxHeaders/{}", name_tail(path, 80));
        let header = header(&name, "", b'x', 0o644, pax.len() as u64, mtime);
        out.extend_from_slice(&header);
        push_padded(out, pax.as_bytes());
    }
    let (prefix, name) = split.unwrap_or_else(|| (String::new(), name_tail(path, 99)));
    let shown_size = if size > MAX_OCTAL_SIZE { 0 } else { size };
    out.extend_from_slice(&header(&name, &prefix, kind, mode, shown_size, mtime));
    push_padded(out, bytes);
}

/// `(prefix, name)` for the ustar fields (name ≤ 100 bytes, prefix ≤ 155 bytes, split at a `/`),
/// `None` when the path does not fit.
fn split_name(path: &str) -> Option<(String, String)> {
    if path.len() <= 100 {
        return Some((String::new(), path.to_owned()));
    }
    // The trailing '/' of a folder belongs to the name part.
    let search = path.strip_suffix('/').unwrap_or(path);
    for (i, _) in search.match_indices('/') {
        let (prefix, name) = (&path[..i], &path[i + 1..]);
        if prefix.len() <= 155 && name.len() <= 100 && !name.is_empty() {
            return Some((prefix.to_owned(), name.to_owned()));
        }
    }
    None
}

/// The last characters of `path` that fit `max` bytes, as a placeholder name for readers that
/// ignore pax records.
fn name_tail(path: &str, max: usize) -> String {
    let mut start = path.len().saturating_sub(max);
    while !path.is_char_boundary(start) {
        start += 1;
    }
    path[start..].trim_start_matches('/').to_owned()
}

/// One pax record: `<length> <key>=<value>\n`, where the length counts the whole record.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut length = body.len() + 1;
    while (length.to_string().len() + body.len()) != length {
        length = length.to_string().len() + body.len();
    }
    format!("{length}{body}")
}

fn header(name: &str, prefix: &str, kind: u8, mode: u32, size: u64, mtime: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    put(&mut h[0..100], name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.min(MAX_OCTAL_SIZE));
    h[148..156].fill(b' ');
    h[156] = kind;
    put(&mut h[257..263], b"ustar\0");
    put(&mut h[263..265], b"00");
    put(&mut h[265..297], b"root");
    put(&mut h[297..329], b"root");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    put(&mut h[345..500], prefix.as_bytes());
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

fn put(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

/// Zero-padded octal digits and a NUL, filling the field.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    put(field, text.as_bytes());
    field[digits] = 0;
}

fn push_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    let rest = bytes.len() % BLOCK;
    if rest != 0 {
        out.extend(std::iter::repeat_n(0u8, BLOCK - rest));
    }
}

/// The regular files of a tar file, by path, in archive order. Folders are skipped; links,
/// devices and other special entries are refused (a bag has none).
pub fn read(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut files = Vec::new();
    let mut at = 0;
    let mut pax_path: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    let mut long_name: Option<String> = None;
    loop {
        let Some(h) = bytes.get(at..at + BLOCK) else {
            return Err(format!("truncated at byte {at}: no end-of-archive marker"));
        };
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let stored: u32 = parse_octal(&h[148..156])
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| format!("entry at byte {at}: unreadable header checksum"))?;
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| u32::from(if (148..156).contains(&i) { b' ' } else { b }))
            .sum();
        if sum != stored {
            return Err(format!(
                "entry at byte {at}: header checksum {stored} does not match the header ({sum})"
            ));
        }
        let field_text = |f: &[u8]| {
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8(f[..end].to_vec())
        };
        let name = field_text(&h[0..100])
            .map_err(|_| format!("entry at byte {at}: the name is not UTF-8"))?;
        let prefix = if &h[257..262] == b"ustar" {
            field_text(&h[345..500])
                .map_err(|_| format!("entry at byte {at}: the name prefix is not UTF-8"))?
        } else {
            String::new()
        };
        let size = match pax_size.take() {
            Some(s) => s,
            None => parse_size(&h[124..136])
                .ok_or_else(|| format!("entry {name:?}: unreadable size"))?,
        };
        let kind = h[156];
        let start = at + BLOCK;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| format!("entry {name:?}: truncated ({size} bytes announced)"))?;
        let content = &bytes[start..end];
        at = start + usize::try_from(size.div_ceil(BLOCK as u64) * BLOCK as u64).unwrap_or(0);
        let path = match (pax_path.take(), long_name.take()) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) if prefix.is_empty() => name.clone(),
            (None, None) => format!("{prefix}/{name}"),
        };
        match kind {
            b'0' | 0 | b'7' => files.push((path, content.to_vec())),
            b'5' => {}
            b'x' => {
                for (key, value) in
                    parse_pax(content).map_err(|e| format!("entry {name:?}: {e}"))?
                {
                    match key.as_str() {
                        "path" => pax_path = Some(value),
                        "size" => {
                            pax_size = Some(value.parse().map_err(|_| {
                                format!("entry {name:?}: pax size {value:?} is not a number")
                            })?);
                        }
                        _ => {}
                    }
                }
            }
            b'g' => {}
            b'L' => {
                let text = content.split(|&b| b == 0).next().unwrap_or_default();
                long_name = Some(
                    String::from_utf8(text.to_vec())
                        .map_err(|_| format!("entry at byte {start}: long name is not UTF-8"))?,
                );
            }
            other => {
                return Err(format!(
                    "entry {path:?}: unsupported entry type {:?} (a bag holds only files and \
                     folders)",
                    char::from(other)
                ));
            }
        }
    }
    Ok(files)
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| char::from(b))
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// A size field: octal, or GNU base-256 (first byte's high bit set) for large sizes.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    parse_octal(field)
}

fn parse_pax(content: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut records = Vec::new();
    let mut rest = content;
    while !rest.is_empty() && rest[0] != 0 {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("pax record without a length")?;
        let length: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or("pax record with a bad length")?;
        let record = rest.get(space + 1..length).ok_or("truncated pax record")?;
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        let text = std::str::from_utf8(record).map_err(|_| "pax record is not UTF-8")?;
        let (key, value) = text.split_once('=').ok_or("pax record without '='")?;
        records.push((key.to_owned(), value.to_owned()));
        rest = &rest[length..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_short_split_and_pax_names() {
        let long_folder = "thư mục rất dài ".repeat(8);
        let split = format!("bag/{}/a.txt", "x".repeat(120));
        let pax = format!("bag/{long_folder}/{}.md", "biên bản ".repeat(20));
        let entries: Vec<(String, &[u8])> = vec![
            ("bag/bagit.txt".to_owned(), b"BagIt-Version: 1.0\n"),
            (split.clone(), b"split"),
            (pax.clone(), &[7u8; 1000]),
            ("bag/empty".to_owned(), b""),
        ];
        let tar = write(&entries, 1_748_736_000);
        assert_eq!(tar.len() % BLOCK, 0);
        let back = read(&tar).expect("read");
        let expected: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(p, b)| (p.clone(), b.to_vec()))
            .collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_record("path", "a"), "9 path=a\n");
        let r = pax_record("path", &"x".repeat(95));
        assert_eq!(r.len().to_string(), r.split(' ').next().expect("length"));
    }

    #[test]
    fn damaged_headers_and_links_are_reported() {
        let mut tar = write(&[("a".to_owned(), b"x".as_slice())], 0);
        tar[10] ^= 1;
        assert!(read(&tar).expect_err("checksum").contains("checksum"));
        let mut link = [0u8; BLOCK];
        link.copy_from_slice(&header("l", "", b'2', 0o644, 0, 0));
        let mut tar = link.to_vec();
        tar.extend_from_slice(&[0u8; 2 * BLOCK]);
        assert!(read(&tar).expect_err("link").contains("unsupported"));
        assert!(read(&[0u8; 100]).is_err());
    }
}
