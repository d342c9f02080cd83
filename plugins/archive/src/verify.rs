//! Checking a package: a folder, or a `.zip` / `.tar` file holding one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use giamsat_documents::exporter::{GENERATED_EVENT, Generated};
use giamsat_types::{Hash, RecordedEvent};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256, Sha512};

use crate::ArchiveError;
use crate::bag::{Algorithm, Packing, decode_manifest_path, unsafe_path_reason};
use crate::build::payload_path_of;

/// `bag-info.txt` labels of a giamsat package.
pub(crate) const INFO_CASE_ID: &str = "Giamsat-Case-Id";
pub(crate) const INFO_CASE_VERSION: &str = "Giamsat-Case-Stream-Version";
pub(crate) const INFO_CASE_HEAD: &str = "Giamsat-Case-Chain-Head";
pub(crate) const INFO_CASE_HEAD_POSITION: &str = "Giamsat-Case-Chain-Head-Position";
pub(crate) const INFO_DOCUMENTS_HEAD: &str = "Giamsat-Documents-Chain-Head";
pub(crate) const INFO_DOCUMENTS_HEAD_POSITION: &str = "Giamsat-Documents-Chain-Head-Position";

const EVENTS_FILE: &str = "data/events.jsonl";
const DOCUMENT_EVENTS_FILE: &str = "data/document-events.jsonl";

/// One thing wrong with a bag: the file (relative to the bag's folder) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    pub file: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// The result of checking a bag.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub path: PathBuf,
    /// The bag's folder name (inside a packed file: its top-level folder).
    pub name: String,
    pub packing: Packing,
    /// Everything wrong, in the order found; empty when the bag is valid.
    pub problems: Vec<Problem>,
    pub payload_files: u64,
    pub payload_bytes: u64,
    /// Events whose hashes were recomputed.
    pub events_checked: usize,
    /// Document files checked against their `DocumentGenerated` records.
    pub documents_checked: usize,
    /// `bag-info.txt`, in order.
    pub info: Vec<(String, String)>,
    /// SHA-256 of the packed file, or of `tagmanifest-sha256.txt` for a folder.
    pub sha256: Option<String>,
    /// `package` or `tagmanifest-sha256.txt`.
    pub checksum_of: String,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first `bag-info.txt` value of a label.
    pub fn info(&self, label: &str) -> Option<&str> {
        self.info
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(label))
            .map(|(_, v)| v.as_str())
    }

    /// `Payload-Oxum` as the bag states it.
    pub fn payload_oxum(&self) -> Option<&str> {
        self.info("Payload-Oxum")
    }
}

#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    seen: BTreeSet<Problem>,
}

impl Problems {
    fn add(&mut self, file: impl Into<String>, message: impl Into<String>) {
        let p = Problem {
            file: file.into(),
            message: message.into(),
        };
        if self.seen.insert(p.clone()) {
            self.list.push(p);
        }
    }
}

enum Location {
    Disk(PathBuf),
    Memory(Vec<u8>),
}

struct Digests {
    sha256: String,
    sha512: String,
    bytes: u64,
}

impl Digests {
    fn of(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Sha256 => &self.sha256,
            Algorithm::Sha512 => &self.sha512,
        }
    }
}

/// The files of a bag, by path relative to its folder.
struct Source {
    files: BTreeMap<String, Location>,
    /// Entries of a packed file that could not be read (a damaged entry), with the reason.
    unreadable: BTreeMap<String, String>,
    digests: BTreeMap<String, Result<Digests, String>>,
}

impl Source {
    fn read(&self, path: &str) -> Option<Result<Vec<u8>, String>> {
        if let Some(reason) = self.unreadable.get(path) {
            return Some(Err(reason.clone()));
        }
        Some(match self.files.get(path)? {
            Location::Disk(p) => std::fs::read(p).map_err(|e| e.to_string()),
            Location::Memory(b) => Ok(b.clone()),
        })
    }

    fn exists(&self, path: &str) -> bool {
        self.files.contains_key(path) || self.unreadable.contains_key(path)
    }

    /// Both digests and the size of a file, computed once; `None` when there is no such file.
    fn digests(&mut self, path: &str) -> Option<&Result<Digests, String>> {
        if !self.digests.contains_key(path) {
            let computed = self.read(path)?.map(|bytes| Digests {
                sha256: hex::encode(Sha256::digest(&bytes)),
                sha512: hex::encode(Sha512::digest(&bytes)),
                bytes: bytes.len() as u64,
            });
            self.digests.insert(path.to_owned(), computed);
        }
        self.digests.get(path)
    }

    fn payload(&self) -> Vec<String> {
        self.files
            .keys()
            .chain(self.unreadable.keys())
            .filter(|p| p.starts_with("data/"))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Files at the bag's top level (tag files and manifests).
    fn root_files(&self) -> Vec<String> {
        self.files
            .keys()
            .chain(self.unreadable.keys())
            .filter(|p| !p.contains('/'))
            .cloned()
            .collect()
    }

    fn from_dir(root: &Path, problems: &mut Problems) -> Result<Source, ArchiveError> {
        let mut files = BTreeMap::new();
        let mut pending = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, prefix)) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| ArchiveError::io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ArchiveError::io(&dir, e))?;
                let path = entry.path();
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    problems.add(
                        format!("{prefix}{}", entry.file_name().to_string_lossy()),
                        "the file name is not UTF-8",
                    );
                    continue;
                };
                let relative = format!("{prefix}{name}");
                let kind = entry.file_type().map_err(|e| ArchiveError::io(&path, e))?;
                if kind.is_dir() {
                    pending.push((path, format!("{relative}/")));
                } else if kind.is_file() {
                    files.insert(relative, Location::Disk(path));
                } else {
                    problems.add(
                        relative,
                        "not a regular file (a link or a device); a bag holds regular files only",
                    );
                }
            }
        }
        Ok(Source {
            files,
            unreadable: BTreeMap::new(),
            digests: BTreeMap::new(),
        })
    }
}

/// An entry of a packed file: its content, or why it cannot be read.
type Entry = Result<Vec<u8>, String>;

/// Reads a packed bag's entries: `(path, content or why it cannot be read)`.
fn unpack(bytes: &[u8], packing: Packing) -> Result<Vec<(String, Entry)>, String> {
    match packing {
        Packing::Tar => Ok(crate::tar::read(bytes)?
            .into_iter()
            .map(|(p, b)| (p, Ok(b)))
            .collect()),
        _ => {
            let mut zip =
                zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for i in 0..zip.len() {
                let mut file = zip.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
                if file.is_dir() {
                    continue;
                }
                let name = file.name().to_owned();
                let mut content = Vec::new();
                let read = file
                    .read_to_end(&mut content)
                    .map(|_| content)
                    .map_err(|e| format!("cannot be read from the zip file: {e}"));
                out.push((name, read));
            }
            Ok(out)
        }
    }
}

/// Finds the bag's folder inside a packed file: the one top-level folder holding `bagit.txt`
/// (or the root itself when `bagit.txt` is there).
fn bag_root(names: &[&str]) -> Option<String> {
    if names.contains(&"bagit.txt") {
        return Some(String::new());
    }
    let roots: BTreeSet<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix("/bagit.txt"))
        .filter(|r| !r.contains('/'))
        .collect();
    match roots.len() {
        1 => roots.into_iter().next().map(|r| format!("{r}/")),
        _ => None,
    }
}

/// A tag file's `label: value` lines, with continuation lines (starting with whitespace)
/// joined to the value before them.
fn parse_tags(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match tags.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => return Err(format!("line {}: a continuation line comes first", i + 1)),
            }
            continue;
        }
        let (label, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: {line:?} is not \"Label: value\"", i + 1))?;
        tags.push((label.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(tags)
}

/// An event line as `RecordedEvent` serializes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent<'a> {
    position: u64,
    stream_id: String,
    stream_version: u64,
    event_id: uuid::Uuid,
    event_type: String,
    schema_version: u32,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    metadata: &'a RawValue,
    recorded_at: String,
    prev_hash: Hash,
    hash: Hash,
}

/// The events of a JSON Lines file, each with its line number; lines that are not events and
/// events whose hash does not match their content are problems.
fn parse_events(file: &str, bytes: &[u8], problems: &mut Problems) -> Vec<(usize, RecordedEvent)> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        problems.add(file, "not UTF-8 text");
        return Vec::new();
    };
    let mut events = Vec::new();
    for (i, line) in text.split_terminator('\n').enumerate() {
        let n = i + 1;
        let wire: WireEvent<'_> = match serde_json::from_str(line) {
            Ok(w) => w,
            Err(e) => {
                problems.add(file, format!("line {n}: not an event: {e}"));
                continue;
            }
        };
        let Ok(recorded_at) = chrono::DateTime::parse_from_rfc3339(&wire.recorded_at) else {
            problems.add(
                file,
                format!(
                    "line {n}: recorded_at {:?} is not an RFC 3339 time",
                    wire.recorded_at
                ),
            );
            continue;
        };
        let event = RecordedEvent {
            position: wire.position,
            stream_id: wire.stream_id,
            stream_version: wire.stream_version,
            event_id: wire.event_id,
            event_type: wire.event_type,
            schema_version: wire.schema_version,
            data: wire.data.get().to_owned(),
            metadata: wire.metadata.get().to_owned(),
            recorded_at_micros: recorded_at.timestamp_micros(),
            prev_hash: wire.prev_hash,
            hash: wire.hash,
        };
        // The log's own hash function (giamsat_types::chain_hash over the stored fields).
        let computed = event.computed_hash();
        if computed != event.hash {
            problems.add(
                file,
                format!(
                    "line {n} (position {}): hash mismatch: the line says {}, its content hashes \
                     to {computed}",
                    event.position, event.hash
                ),
            );
        }
        events.push((n, event));
    }
    events
}

/// One stream's events: one stream id, versions 1, 2, 3... and rising positions.
fn check_stream(
    file: &str,
    events: &[(usize, RecordedEvent)],
    stream: Option<&str>,
    problems: &mut Problems,
) {
    let expected = stream
        .map(str::to_owned)
        .or_else(|| events.first().map(|(_, e)| e.stream_id.clone()));
    let mut last_position = 0;
    for (i, (n, e)) in events.iter().enumerate() {
        if Some(&e.stream_id) != expected.as_ref() {
            problems.add(
                file,
                format!(
                    "line {n}: event of stream {:?}, expected {:?}",
                    e.stream_id,
                    expected.as_deref().unwrap_or_default()
                ),
            );
        }
        if e.stream_version != i as u64 + 1 {
            problems.add(
                file,
                format!(
                    "line {n}: stream version {}, expected {} (an event is missing, added or \
                     out of order)",
                    e.stream_version,
                    i + 1
                ),
            );
        }
        if e.position <= last_position {
            problems.add(
                file,
                format!(
                    "line {n}: position {} does not follow position {last_position}",
                    e.position
                ),
            );
        }
        last_position = e.position;
    }
}

/// Compares a stream's last event with the head `bag-info.txt` states.
fn check_head(
    file: &str,
    events: &[(usize, RecordedEvent)],
    head: Option<&str>,
    position: Option<&str>,
    problems: &mut Problems,
) {
    let Some(head) = head else {
        return;
    };
    let Some((_, last)) = events.last() else {
        problems.add(
            file,
            format!("no events, but bag-info.txt states a chain head {head}"),
        );
        return;
    };
    if !last.hash.to_hex().eq_ignore_ascii_case(head) {
        problems.add(
            "bag-info.txt",
            format!(
                "chain head expected {head}, but the last event of {file} has hash {}",
                last.hash
            ),
        );
    }
    if let Some(p) = position
        && p != last.position.to_string()
    {
        problems.add(
            "bag-info.txt",
            format!(
                "chain head position expected {p}, but the last event of {file} is at position {}",
                last.position
            ),
        );
    }
}

/// Checks a bag: a folder, or a `.zip` / `.tar` file holding one. An `Err` means the path could
/// not be read at all; anything wrong with the bag itself is a [`Problem`] in the report.
pub fn verify_bag(path: &Path) -> Result<Report, ArchiveError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut report = Report {
        path: path.to_path_buf(),
        name: file_name,
        packing: Packing::Folder,
        problems: Vec::new(),
        payload_files: 0,
        payload_bytes: 0,
        events_checked: 0,
        documents_checked: 0,
        info: Vec::new(),
        sha256: None,
        checksum_of: "tagmanifest-sha256.txt".to_owned(),
    };
    let mut problems = Problems::default();
    if let Some(mut source) = open(path, &mut report, &mut problems)? {
        check_bagit_txt(&source, &mut problems);
        report.info = read_bag_info(&source, &mut problems);
        let tagged = check_manifests(&mut source, &mut problems);
        check_oxum(&mut source, &mut report, &mut problems);
        check_tag_files(&source, &report, &tagged, &mut problems);
        let documents = check_events(&source, &mut report, &mut problems);
        check_documents(&mut source, &documents, &mut report, &mut problems);
        if report.sha256.is_none()
            && let Some(Ok(bytes)) = source.read("tagmanifest-sha256.txt")
        {
            report.sha256 = Some(hex::encode(Sha256::digest(&bytes)));
        }
    }
    report.problems = problems.list;
    Ok(report)
}

/// The bag's files: a folder's, or a packed file's below its top-level folder. `None` when a
/// packed file cannot be read as a bag at all (the problem is recorded).
fn open(
    path: &Path,
    report: &mut Report,
    problems: &mut Problems,
) -> Result<Option<Source>, ArchiveError> {
    let meta = std::fs::metadata(path).map_err(|e| ArchiveError::io(path, e))?;
    let file_name = report.name.clone();
    let source = if meta.is_dir() {
        Source::from_dir(path, problems)?
    } else {
        let bytes = std::fs::read(path).map_err(|e| ArchiveError::io(path, e))?;
        report.sha256 = Some(hex::encode(Sha256::digest(&bytes)));
        report.checksum_of = "package".to_owned();
        let lower = file_name.to_lowercase();
        report.packing = if bytes.starts_with(b"PK") || lower.ends_with(".zip") {
            Packing::Zip
        } else if bytes.get(257..262) == Some(b"ustar") || lower.ends_with(".tar") {
            Packing::Tar
        } else {
            problems.add(&file_name, "neither a folder, a ZIP file nor a tar file");
            return Ok(None);
        };
        let entries = match unpack(&bytes, report.packing) {
            Ok(entries) => entries,
            Err(e) => {
                problems.add(
                    &file_name,
                    format!("cannot read the {} file: {e}", report.packing.name()),
                );
                return Ok(None);
            }
        };
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        let Some(root) = bag_root(&names) else {
            problems.add(
                "bagit.txt",
                format!(
                    "missing: {file_name} has no bagit.txt at its root or in one top-level folder"
                ),
            );
            return Ok(None);
        };
        if !root.is_empty() {
            report.name = root.trim_end_matches('/').to_owned();
        }
        let mut source = Source {
            files: BTreeMap::new(),
            unreadable: BTreeMap::new(),
            digests: BTreeMap::new(),
        };
        for (name, content) in entries {
            let Some(relative) = name.strip_prefix(&root) else {
                problems.add(name, format!("outside the bag's folder {root}"));
                continue;
            };
            if let Some(reason) = unsafe_path_reason(relative) {
                problems.add(relative, format!("unsafe entry name: {reason}"));
                continue;
            }
            if source.exists(relative) {
                problems.add(relative, "appears twice in the packed file");
                continue;
            }
            match content {
                Ok(b) => {
                    source
                        .files
                        .insert(relative.to_owned(), Location::Memory(b));
                }
                Err(e) => {
                    source.unreadable.insert(relative.to_owned(), e);
                }
            }
        }
        source
    };
    Ok(Some(source))
}

/// `bagit.txt`: version 1.0 (0.97 accepted), UTF-8 tag files, no byte-order mark.
fn check_bagit_txt(source: &Source, problems: &mut Problems) {
    match source.read("bagit.txt") {
        None => problems.add("bagit.txt", "missing: not a BagIt bag"),
        Some(Err(e)) => problems.add("bagit.txt", format!("cannot be read: {e}")),
        Some(Ok(bytes)) => {
            if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
                problems.add("bagit.txt", "starts with a byte-order mark");
            }
            match String::from_utf8(bytes)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_tags(t.trim_start_matches('\u{FEFF}')))
            {
                Err(e) => problems.add("bagit.txt", e),
                Ok(tags) => {
                    let get = |l: &str| tags.iter().find(|(k, _)| k == l).map(|(_, v)| v.as_str());
                    match get("BagIt-Version") {
                        Some("1.0") | Some("0.97") => {}
                        Some(other) => problems.add(
                            "bagit.txt",
                            format!("BagIt-Version is {other:?}, expected \"1.0\""),
                        ),
                        None => problems.add("bagit.txt", "no BagIt-Version line"),
                    }
                    match get("Tag-File-Character-Encoding") {
                        Some(e) if e.eq_ignore_ascii_case("UTF-8") => {}
                        Some(other) => problems.add(
                            "bagit.txt",
                            format!(
                                "Tag-File-Character-Encoding is {other:?}; this verifier reads \
                                 UTF-8 only"
                            ),
                        ),
                        None => problems.add("bagit.txt", "no Tag-File-Character-Encoding line"),
                    }
                }
            }
        }
    }
}

/// `bag-info.txt`, in order.
fn read_bag_info(source: &Source, problems: &mut Problems) -> Vec<(String, String)> {
    match source.read("bag-info.txt") {
        None => problems.add("bag-info.txt", "missing (it states the Payload-Oxum)"),
        Some(Err(e)) => problems.add("bag-info.txt", format!("cannot be read: {e}")),
        Some(Ok(bytes)) => match String::from_utf8(bytes)
            .map_err(|_| "not UTF-8 text".to_owned())
            .and_then(|t| parse_tags(&t))
        {
            Ok(tags) => return tags,
            Err(e) => problems.add("bag-info.txt", e),
        },
    }
    Vec::new()
}

/// The manifests: every entry present with its checksum, every payload file in each payload
/// manifest. Returns the files the tag manifests list.
fn check_manifests(source: &mut Source, problems: &mut Problems) -> BTreeSet<String> {
    let payload = source.payload();
    let root_files = source.root_files();
    let manifest_of = |prefix: &str, f: &String| -> Option<String> {
        Some(f.strip_prefix(prefix)?.strip_suffix(".txt")?.to_owned())
    };
    let mut manifests: Vec<(String, String, bool)> = root_files
        .iter()
        .filter_map(|f| manifest_of("manifest-", f).map(|a| (f.clone(), a, false)))
        .collect();
    if manifests.is_empty() {
        problems.add(
            "manifest-sha256.txt",
            "missing: the bag has no payload manifest",
        );
    }
    manifests.extend(
        root_files
            .iter()
            .filter_map(|f| manifest_of("tagmanifest-", f).map(|a| (f.clone(), a, true))),
    );
    let mut tagged: BTreeSet<String> = BTreeSet::new();
    for (manifest, alg_name, is_tag) in &manifests {
        let (manifest, is_tag) = (manifest.as_str(), *is_tag);
        let Some(algorithm) = Algorithm::from_name(alg_name) else {
            problems.add(
                manifest,
                format!("checksum algorithm {alg_name:?} is not supported (sha256, sha512)"),
            );
            continue;
        };
        let text = match source.read(manifest) {
            Some(Ok(bytes)) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    problems.add(manifest, "not UTF-8 text");
                    continue;
                }
            },
            Some(Err(e)) => {
                problems.add(manifest, format!("cannot be read: {e}"));
                continue;
            }
            None => continue,
        };
        let mut listed = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let Some((checksum, rest)) = line.split_once([' ', '\t']) else {
                problems.add(
                    manifest,
                    format!("line {}: {line:?} is not \"checksum path\"", i + 1),
                );
                continue;
            };
            let entry = decode_manifest_path(rest.trim_start_matches([' ', '\t']));
            if let Some(reason) = unsafe_path_reason(&entry) {
                problems.add(
                    manifest,
                    format!("line {}: unsafe path {entry:?}: {reason}", i + 1),
                );
                continue;
            }
            if is_tag == entry.starts_with("data/") {
                problems.add(
                    manifest,
                    format!(
                        "line {}: {entry} {}",
                        i + 1,
                        if is_tag {
                            "is a payload file; a tag manifest lists tag files only"
                        } else {
                            "is not under data/; a payload manifest lists payload files only"
                        }
                    ),
                );
                continue;
            }
            if !listed.insert(entry.clone()) {
                problems.add(manifest, format!("line {}: {entry} is listed twice", i + 1));
                continue;
            }
            match source.digests(&entry) {
                None => problems.add(&entry, format!("missing (listed in {manifest})")),
                Some(Err(e)) => problems.add(&entry, e.clone()),
                Some(Ok(d)) => {
                    let actual = d.of(algorithm);
                    if !actual.eq_ignore_ascii_case(checksum) {
                        problems.add(
                            &entry,
                            format!(
                                "{} checksum mismatch: expected {} ({manifest}), actual {actual}",
                                algorithm.name(),
                                checksum.to_ascii_lowercase()
                            ),
                        );
                    }
                }
            }
        }
        if is_tag {
            tagged.extend(listed);
        } else {
            for file in &payload {
                if !listed.contains(file) {
                    problems.add(file, format!("in data/ but not listed in {manifest}"));
                }
            }
        }
    }

    tagged
}

/// `Payload-Oxum` against the payload's size and file count.
fn check_oxum(source: &mut Source, report: &mut Report, problems: &mut Problems) {
    let payload = source.payload();
    let mut bytes_total = 0;
    for file in &payload {
        if let Some(Ok(d)) = source.digests(file) {
            bytes_total += d.bytes;
        }
    }
    report.payload_files = payload.len() as u64;
    report.payload_bytes = bytes_total;
    match report.payload_oxum() {
        None => problems.add("bag-info.txt", "no Payload-Oxum"),
        Some(oxum) => match oxum
            .split_once('.')
            .and_then(|(b, n)| Some((b.parse::<u64>().ok()?, n.parse::<u64>().ok()?)))
        {
            None => problems.add(
                "bag-info.txt",
                format!("Payload-Oxum {oxum:?} is not OCTETS.COUNT"),
            ),
            Some((b, n)) if (b, n) != (bytes_total, payload.len() as u64) => problems.add(
                "bag-info.txt",
                format!(
                    "Payload-Oxum expected {b}.{n} ({b} bytes in {n} files), actual \
                     {bytes_total}.{} \
                     ({bytes_total} bytes in {} files)",
                    payload.len(),
                    payload.len()
                ),
            ),
            Some(_) => {}
        },
    }
}

/// Tag files outside the tag manifests; a giamsat package must have its tag manifests.
fn check_tag_files(
    source: &Source,
    report: &Report,
    tagged: &BTreeSet<String>,
    problems: &mut Problems,
) {
    let root_files = source.root_files();
    let giamsat = is_giamsat(source, report);
    let has_tag_manifest = root_files.iter().any(|f| f.starts_with("tagmanifest-"));
    if giamsat && !root_files.iter().any(|f| f == "tagmanifest-sha256.txt") {
        problems.add(
            "tagmanifest-sha256.txt",
            "missing: a giamsat package has tag manifests",
        );
    }
    if has_tag_manifest {
        for file in source.files.keys().chain(source.unreadable.keys()) {
            if !file.starts_with("data/")
                && !file.starts_with("tagmanifest-")
                && !tagged.contains(file)
            {
                problems.add(file, "a tag file not listed in the tag manifests");
            }
        }
    }
}

/// Whether the bag is a giamsat case package (which must hold its events and tag manifests).
fn is_giamsat(source: &Source, report: &Report) -> bool {
    report.info(INFO_CASE_ID).is_some() || source.exists(EVENTS_FILE)
}

/// The events: each hash recomputed, streams complete, links between adjacent positions, heads
/// as `bag-info.txt` states them. Returns the document events, with their line numbers.
fn check_events(
    source: &Source,
    report: &mut Report,
    problems: &mut Problems,
) -> Vec<(usize, RecordedEvent)> {
    let giamsat = is_giamsat(source, report);
    let case_id = report.info(INFO_CASE_ID).map(str::to_owned);
    let case_head = report.info(INFO_CASE_HEAD).map(str::to_owned);
    let mut all: Vec<(&str, usize, RecordedEvent)> = Vec::new();
    let mut documents: Vec<(usize, RecordedEvent)> = Vec::new();
    match source.read(EVENTS_FILE) {
        Some(Ok(bytes)) => {
            let events = parse_events(EVENTS_FILE, &bytes, problems);
            let stream = case_id.as_ref().map(|c| format!("case/{c}"));
            check_stream(EVENTS_FILE, &events, stream.as_deref(), problems);
            check_head(
                EVENTS_FILE,
                &events,
                case_head.as_deref(),
                report.info(INFO_CASE_HEAD_POSITION),
                problems,
            );
            if let Some(v) = report.info(INFO_CASE_VERSION)
                && events
                    .last()
                    .map(|(_, e)| e.stream_version.to_string())
                    .as_deref()
                    != Some(v)
            {
                problems.add(
                    "bag-info.txt",
                    format!(
                        "{INFO_CASE_VERSION} is {v}, but {EVENTS_FILE} ends at another version"
                    ),
                );
            }
            all.extend(events.into_iter().map(|(n, e)| (EVENTS_FILE, n, e)));
        }
        Some(Err(e)) => problems.add(EVENTS_FILE, format!("cannot be read: {e}")),
        None if giamsat => problems.add(
            EVENTS_FILE,
            "missing: a giamsat package holds the case's events",
        ),
        None => {}
    }
    match source.read(DOCUMENT_EVENTS_FILE) {
        Some(Ok(bytes)) => {
            let events = parse_events(DOCUMENT_EVENTS_FILE, &bytes, problems);
            let stream = case_id.as_ref().map(|c| format!("documents/{c}"));
            check_stream(DOCUMENT_EVENTS_FILE, &events, stream.as_deref(), problems);
            check_head(
                DOCUMENT_EVENTS_FILE,
                &events,
                report.info(INFO_DOCUMENTS_HEAD),
                report.info(INFO_DOCUMENTS_HEAD_POSITION),
                problems,
            );
            documents = events.clone();
            all.extend(
                events
                    .into_iter()
                    .map(|(n, e)| (DOCUMENT_EVENTS_FILE, n, e)),
            );
        }
        Some(Err(e)) => problems.add(DOCUMENT_EVENTS_FILE, format!("cannot be read: {e}")),
        None if report.info(INFO_DOCUMENTS_HEAD).is_some() => problems.add(
            DOCUMENT_EVENTS_FILE,
            "missing, but bag-info.txt states a documents chain head",
        ),
        None => {}
    }
    report.events_checked = all.len();
    all.sort_by_key(|(_, _, e)| e.position);
    for pair in all.windows(2) {
        let ((a_file, a_n, a), (file, n, b)) = (&pair[0], &pair[1]);
        if b.position == a.position {
            problems.add(
                *file,
                format!(
                    "line {n}: position {} is also the position of {a_file} line {a_n}",
                    b.position
                ),
            );
        }
        if b.position == a.position + 1 && b.prev_hash != a.hash {
            problems.add(
                *file,
                format!(
                    "line {n} (position {}): prev_hash {} is not the hash {} of position {}",
                    b.position, b.prev_hash, a.hash, a.position
                ),
            );
        }
    }

    documents
}

/// Every document file as its latest `DocumentGenerated` record has it, and no other.
fn check_documents(
    source: &mut Source,
    documents: &[(usize, RecordedEvent)],
    report: &mut Report,
    problems: &mut Problems,
) {
    let payload = source.payload();
    let mut recorded: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for (n, e) in documents {
        if e.event_type != GENERATED_EVENT {
            continue;
        }
        match serde_json::from_str::<Generated>(&e.data) {
            Ok(g) => {
                for f in &g.files {
                    recorded.insert(
                        format!("data/{}", payload_path_of(&g.case, &f.path)),
                        (f.sha256.to_ascii_lowercase(), e.position),
                    );
                }
            }
            Err(err) => problems.add(
                DOCUMENT_EVENTS_FILE,
                format!("line {n}: not a {GENERATED_EVENT} record: {err}"),
            ),
        }
    }
    if source.exists(DOCUMENT_EVENTS_FILE) {
        for (file, (expected, position)) in &recorded {
            report.documents_checked += 1;
            match source.digests(file) {
                None => problems.add(
                    file,
                    format!("missing (recorded by {GENERATED_EVENT} at position {position})"),
                ),
                Some(Err(e)) => problems.add(file, e.clone()),
                Some(Ok(d)) if d.sha256 != *expected => problems.add(
                    file,
                    format!(
                        "sha256 expected {expected} ({GENERATED_EVENT} at position {position}), \
                         actual {}",
                        d.sha256
                    ),
                ),
                Some(Ok(_)) => {}
            }
        }
        for file in payload.iter().filter(|p| p.starts_with("data/documents/")) {
            if !recorded.contains_key(file) {
                problems.add(file, format!("not recorded by any {GENERATED_EVENT} event"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_files_with_continuations() {
        let tags = parse_tags("A: 1\nB:  two\n  lines\r\n\nC:x\n").expect("tags");
        assert_eq!(
            tags,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two lines".to_owned()),
                ("C".to_owned(), "x".to_owned())
            ]
        );
        assert!(parse_tags(" x\n").is_err());
        assert!(parse_tags("no colon\n").is_err());
    }

    #[test]
    fn the_bag_root_inside_a_packed_file() {
        assert_eq!(bag_root(&["bagit.txt", "data/a"]), Some(String::new()));
        assert_eq!(
            bag_root(&["b/bagit.txt", "b/data/a"]),
            Some("b/".to_owned())
        );
        assert_eq!(bag_root(&["a/bagit.txt", "b/bagit.txt"]), None);
        assert_eq!(bag_root(&["a/b/bagit.txt"]), None);
    }
}
