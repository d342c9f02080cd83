//! A BagIt 1.0 bag (RFC 8493) assembled in memory and written as a folder, a ZIP or a tar file.
//!
//! The bag holds `bagit.txt`, `bag-info.txt` (with the computed `Payload-Oxum`), the payload under
//! `data/`, the payload manifests `manifest-sha256.txt` and `manifest-sha512.txt`, and the tag
//! manifests `tagmanifest-sha256.txt` and `tagmanifest-sha512.txt` over every other tag file.
//! Everything is sorted, and packed files carry fixed dates, so the same content always gives the
//! same bytes.

use std::collections::BTreeMap;
use std::io::{Cursor, Write as _};
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::ArchiveError;

/// The version written to `bagit.txt`.
pub const BAGIT_VERSION: &str = "1.0";

/// The checksum algorithms of the manifests, in the order their files are written.
pub const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

/// A manifest checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name used in manifest file names (`manifest-sha256.txt`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The algorithm a manifest file name names; `None` for one this crate does not compute.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// Lowercase hexadecimal digest of `bytes`.
    pub fn digest(self, bytes: &[u8]) -> String {
        match self {
            Algorithm::Sha256 => hex::encode(Sha256::digest(bytes)),
            Algorithm::Sha512 => hex::encode(Sha512::digest(bytes)),
        }
    }
}

/// How a package is stored: a folder, or one file holding the folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    #[default]
    Folder,
    Zip,
    Tar,
}

impl Packing {
    /// The file extension of a packed bag, `None` for a folder.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Packing::Folder => None,
            Packing::Zip => Some("zip"),
            Packing::Tar => Some("tar"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Packing::Folder => "folder",
            Packing::Zip => "zip",
            Packing::Tar => "tar",
        }
    }

    /// The packing `--zip` / `--tar` ask for, else `default`.
    pub fn from_flags(zip: bool, tar: bool, default: Packing) -> Packing {
        match (zip, tar) {
            (true, _) => Packing::Zip,
            (_, true) => Packing::Tar,
            _ => default,
        }
    }
}

/// Percent-encodes a path for a manifest line as RFC 8493 §2.1.3 asks: `%` as `%25`, CR as
/// `%0D`, LF as `%0A`; everything else (UTF-8 included) is written as it is.
pub fn encode_manifest_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`encode_manifest_path`]. Only `%25`, `%0D` and `%0A` (either case) are
/// decoded; any other `%` is kept as it is, as RFC 8493 encodes no other character.
pub fn decode_manifest_path(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        match code.as_deref() {
            Some("25") => out.push('%'),
            Some("0D") => out.push('\r'),
            Some("0A") => out.push('\n'),
            _ => {
                out.push('%');
                rest = &rest[i + 1..];
                continue;
            }
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

/// Why a path cannot be a payload path; `None` when it can. A payload path is relative to
/// `data/`, uses `/` between non-empty components, and has no `.` or `..` component and no NUL.
pub fn unsafe_path_reason(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("the path is empty");
    }
    if path.starts_with('/') {
        return Some("the path is absolute");
    }
    if path.contains('\0') {
        return Some("the path contains a NUL character");
    }
    if path.contains('\\') {
        return Some("the path contains a backslash");
    }
    for part in path.split('/') {
        match part {
            "" => return Some("the path has an empty component"),
            "." | ".." => return Some("the path has a . or .. component"),
            _ => {}
        }
    }
    None
}

/// A bag being assembled.
#[derive(Debug, Clone)]
pub struct Bag {
    name: String,
    /// Payload files by their path relative to `data/`.
    payload: BTreeMap<String, Vec<u8>>,
    /// `bag-info.txt` entries in the order they are written (labels may repeat).
    info: Vec<(String, String)>,
}

impl Bag {
    /// An empty bag; `name` is the folder name of the bag (and of its root inside a packed file).
    pub fn new(name: impl Into<String>) -> Bag {
        Bag {
            name: name.into(),
            payload: BTreeMap::new(),
            info: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a payload file at `path` (relative to `data/`).
    pub fn add_payload(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        if let Some(reason) = unsafe_path_reason(path) {
            return Err(ArchiveError::UnsafePath {
                path: path.to_owned(),
                reason,
            });
        }
        if self.payload.contains_key(path) {
            return Err(ArchiveError::DuplicatePayload {
                path: format!("data/{path}"),
            });
        }
        // A file and a folder of the same name cannot both exist.
        let clash = self.payload.keys().find(|p| {
            p.strip_prefix(path).is_some_and(|r| r.starts_with('/'))
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
        if let Some(other) = clash {
            return Err(ArchiveError::DuplicatePayload {
                path: format!("data/{path} (and data/{other})"),
            });
        }
        self.payload.insert(path.to_owned(), bytes);
        Ok(())
    }

    /// Adds a `bag-info.txt` entry. Line breaks in the value become spaces (a tag value is one
    /// logical line); the label must be a non-empty run of characters without `:` or whitespace.
    pub fn add_info(&mut self, label: &str, value: &str) -> Result<(), ArchiveError> {
        if label.is_empty() || label.contains(':') || label.chars().any(char::is_whitespace) {
            return Err(ArchiveError::Config(format!(
                "bag-info label {label:?} must be non-empty, without ':' or whitespace"
            )));
        }
        let value: String = value
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        self.info.push((label.to_owned(), value.trim().to_owned()));
        Ok(())
    }

    /// `octets.streams` of the payload.
    pub fn payload_oxum(&self) -> String {
        let bytes: usize = self.payload.values().map(Vec::len).sum();
        format!("{bytes}.{}", self.payload.len())
    }

    pub fn payload_files(&self) -> usize {
        self.payload.len()
    }

    /// Computes the tag files and freezes the bag: `bagit.txt`, `bag-info.txt` (with
    /// `Payload-Oxum`), the manifests and the tag manifests, next to the payload.
    pub fn seal(self) -> SealedBag {
        let payload_oxum = self.payload_oxum();
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let bagit = format!("BagIt-Version: {BAGIT_VERSION}\nTag-File-Character-Encoding: UTF-8\n");
        files.insert("bagit.txt".into(), bagit.into_bytes());
        let mut info = String::new();
        for (label, value) in &self.info {
            info.push_str(&format!("{label}: {value}\n"));
        }
        info.push_str(&format!("Payload-Oxum: {payload_oxum}\n"));
        files.insert("bag-info.txt".into(), info.into_bytes());
        for algorithm in ALGORITHMS {
            let mut manifest = String::new();
            for (path, bytes) in &self.payload {
                manifest.push_str(&format!(
                    "{}  {}\n",
                    algorithm.digest(bytes),
                    encode_manifest_path(&format!("data/{path}"))
                ));
            }
            files.insert(
                format!("manifest-{}.txt", algorithm.name()),
                manifest.into_bytes(),
            );
        }
        let mut tag_manifests = Vec::new();
        for algorithm in ALGORITHMS {
            let mut manifest = String::new();
            for (path, bytes) in &files {
                manifest.push_str(&format!(
                    "{}  {}\n",
                    algorithm.digest(bytes),
                    encode_manifest_path(path)
                ));
            }
            tag_manifests.push((format!("tagmanifest-{}.txt", algorithm.name()), manifest));
        }
        for (name, manifest) in tag_manifests {
            files.insert(name, manifest.into_bytes());
        }
        let payload_files = self.payload.len();
        for (path, bytes) in self.payload {
            files.insert(format!("data/{path}"), bytes);
        }
        SealedBag {
            name: self.name,
            files,
            payload_oxum,
            payload_files,
        }
    }
}

/// A complete bag: every file by its path relative to the bag's folder.
#[derive(Debug, Clone)]
pub struct SealedBag {
    name: String,
    files: BTreeMap<String, Vec<u8>>,
    payload_oxum: String,
    payload_files: usize,
}

impl SealedBag {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    pub fn payload_oxum(&self) -> &str {
        &self.payload_oxum
    }

    pub fn payload_files(&self) -> usize {
        self.payload_files
    }

    /// The SHA-256 of `tagmanifest-sha256.txt`: one checksum that covers the whole bag (the tag
    /// manifest covers the payload manifests, which cover the payload).
    pub fn tagmanifest_sha256(&self) -> String {
        Algorithm::Sha256.digest(
            self.files
                .get("tagmanifest-sha256.txt")
                .map_or(&[][..], Vec::as_slice),
        )
    }

    /// Writes the bag into `dir` (created; it must not exist yet), each file synced to disk.
    pub fn write_dir(&self, dir: &Path) -> Result<(), ArchiveError> {
        std::fs::create_dir(dir).map_err(|e| ArchiveError::io(dir, e))?;
        let mut folders = std::collections::BTreeSet::new();
        for (path, bytes) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent()
                && parent != dir
            {
                std::fs::create_dir_all(parent).map_err(|e| ArchiveError::io(parent, e))?;
                folders.insert(parent.to_path_buf());
            }
            let mut file =
                std::fs::File::create(&target).map_err(|e| ArchiveError::io(&target, e))?;
            file.write_all(bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| ArchiveError::io(&target, e))?;
        }
        folders.insert(dir.to_path_buf());
        for folder in folders {
            sync_dir(&folder)?;
        }
        Ok(())
    }

    /// The bag as a ZIP file: entries stored (not compressed), under `<name>/`, dated `date`.
    pub fn to_zip(&self, date: NaiveDate) -> Result<Vec<u8>, ArchiveError> {
        use zip::write::SimpleFileOptions;
        use zip::{CompressionMethod, DateTime, System, ZipWriter};
        let zip_err = |e: zip::result::ZipError| ArchiveError::Pack(e.to_string());
        let when = DateTime::from_date_and_time(
            u16::try_from(date.year()).unwrap_or(1980).clamp(1980, 2107),
            date.month() as u8,
            date.day() as u8,
            0,
            0,
            0,
        )
        .unwrap_or_default();
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let folder = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(when)
            .system(System::Unix)
            .unix_permissions(0o755);
        let mut made = std::collections::BTreeSet::new();
        for (path, bytes) in &self.files {
            let full = format!("{}/{path}", self.name);
            // Folder entries first, so that unpacking gives them ordinary permissions.
            let mut at = 0;
            while let Some(i) = full[at..].find('/') {
                let dir = &full[..at + i + 1];
                if made.insert(dir.to_owned()) {
                    zip.add_directory(dir, folder).map_err(zip_err)?;
                }
                at += i + 1;
            }
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .last_modified_time(when)
                .system(System::Unix)
                .unix_permissions(0o644)
                .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
            zip.start_file(full, options).map_err(zip_err)?;
            zip.write_all(bytes)
                .map_err(|e| ArchiveError::Pack(e.to_string()))?;
        }
        Ok(zip.finish().map_err(zip_err)?.into_inner())
    }

    /// The bag as a POSIX tar file (ustar, with pax records for long names), under `<name>/`,
    /// dated `date` (midnight UTC).
    pub fn to_tar(&self, date: NaiveDate) -> Vec<u8> {
        let mtime = date
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp().max(0) as u64);
        let entries: Vec<(String, &[u8])> = self
            .files
            .iter()
            .map(|(p, b)| (format!("{}/{p}", self.name), b.as_slice()))
            .collect();
        crate::tar::write(&entries, mtime)
    }
}

/// Syncs a folder's entry list to disk (so a rename or a new file in it survives a crash).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| ArchiveError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_encode_percent_cr_and_lf_only() {
        let path = "data/Tờ trình 50%\r\nbản.md";
        let encoded = encode_manifest_path(path);
        assert_eq!(encoded, "data/Tờ trình 50%25%0D%0Abản.md");
        assert_eq!(decode_manifest_path(&encoded), path);
        assert_eq!(decode_manifest_path("a%0a%0d%2"), "a\n\r%2");
        assert_eq!(decode_manifest_path("100%"), "100%");
    }

    #[test]
    fn unsafe_payload_paths_are_refused() {
        let mut bag = Bag::new("b");
        for bad in ["", "/etc/passwd", "a/../b", "./a", "a//b", "a\\b", "a\0"] {
            assert!(bag.add_payload(bad, Vec::new()).is_err(), "{bad:?}");
        }
        bag.add_payload("văn bản/a.md", b"x".to_vec()).expect("ok");
        assert!(bag.add_payload("văn bản/a.md", Vec::new()).is_err());
        assert!(bag.add_payload("văn bản/a.md/b", Vec::new()).is_err());
        assert!(bag.add_payload("văn bản", Vec::new()).is_err());
    }

    #[test]
    fn tag_files_manifests_and_oxum() {
        let mut bag = Bag::new("b");
        bag.add_payload("a.txt", b"abc".to_vec()).expect("a");
        bag.add_payload("Biên bản.md", b"xin chao".to_vec())
            .expect("b");
        bag.add_info("Source-Organization", "HĐND huyện\nTuần Giáo")
            .expect("info");
        assert!(bag.add_info("Bad Label", "x").is_err());
        assert_eq!(bag.payload_oxum(), "11.2");
        let sealed = bag.seal();
        assert_eq!(sealed.payload_oxum(), "11.2");
        let files = sealed.files();
        let text = |p: &str| String::from_utf8(files[p].clone()).expect("utf-8");
        assert_eq!(
            text("bagit.txt"),
            "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
        );
        assert_eq!(
            text("bag-info.txt"),
            "Source-Organization: HĐND huyện Tuần Giáo\nPayload-Oxum: 11.2\n"
        );
        // Sorted by bytes: "B" before "a".
        assert_eq!(
            text("manifest-sha256.txt").lines().nth(1),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  data/a.txt")
        );
        let tags = text("tagmanifest-sha256.txt");
        let listed: Vec<&str> = tags
            .lines()
            .filter_map(|l| l.split_once("  ").map(|(_, p)| p))
            .collect();
        assert_eq!(
            listed,
            [
                "bag-info.txt",
                "bagit.txt",
                "manifest-sha256.txt",
                "manifest-sha512.txt"
            ]
        );
        assert!(files.contains_key("data/Biên bản.md"));
        assert!(files.contains_key("tagmanifest-sha512.txt"));
    }

    #[test]
    fn packed_bags_are_deterministic() {
        let mut bag = Bag::new("hồ-sơ");
        bag.add_payload("a/b.txt", b"abc".to_vec()).expect("a");
        let day = NaiveDate::from_ymd_opt(2025, 6, 1).expect("date");
        let (a, b) = (bag.clone().seal(), bag.seal());
        assert_eq!(a.to_zip(day).expect("zip"), b.to_zip(day).expect("zip"));
        assert_eq!(a.to_tar(day), b.to_tar(day));
        let entries = crate::tar::read(&a.to_tar(day)).expect("tar");
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"hồ-sơ/data/a/b.txt"), "{names:?}");
    }
}
