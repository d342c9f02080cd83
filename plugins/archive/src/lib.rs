//! The archive exporter: a case file (hồ sơ) as a BagIt 1.0 package (RFC 8493), for transfer to
//! the archive when a case is archived, or on demand (`giamsat archive build`).
//!
//! A package is a folder `<case>-<file code>` (or that folder in a `.zip` or `.tar` file) with:
//! - `data/documents/`: every file the documents exporter recorded for the case (all formats, all
//!   versions, drafts too), each checked against the SHA-256 of its `DocumentGenerated` record;
//! - `data/events.jsonl`: the case's events (`case/<id>`), one per line as the log stores them,
//!   hashes included; `data/document-events.jsonl`: the events of `documents/<id>`, whose
//!   records carry each document file's SHA-256;
//! - `data/metadata.json` and `data/metadata.xml`: the record metadata of the case file and of
//!   each document (Nghị định 30/2020 Phụ lục VI, see [`metadata`]);
//! - `bagit.txt`, `bag-info.txt` (source organization, bagging date, Payload-Oxum, identifiers and
//!   the hash-chain heads of both streams), `manifest-sha256.txt`, `manifest-sha512.txt`,
//!   `tagmanifest-sha256.txt`, `tagmanifest-sha512.txt`.
//!
//! A package is built in a hidden temporary folder (or file) next to its final place and renamed
//! into place at the end, so a crash never leaves a half-written package under the final name;
//! an existing package is never overwritten. [`verify_bag`] checks a package (folder, `.zip` or
//! `.tar`): `bagit.txt`, every manifest entry, files missing from the manifests, Payload-Oxum,
//! the tag manifests, each event's hash (recomputed with the log's own function) and the links
//! between adjacent positions, and every document file against its record.

pub mod bag;
mod build;
mod exporter;
pub mod metadata;
pub mod tar;
mod verify;

use std::path::{Path, PathBuf};

pub use bag::{Bag, Packing, SealedBag, decode_manifest_path, encode_manifest_path};
pub use build::{
    ARCHIVED_EVENT, ArchiveConfig, Assembled, BuildRequest, Package, assemble, build_package,
    package_name, write_package,
};
pub use exporter::{ArchiveExporter, PACKAGE_BUILT_EVENT, archive_stream};
pub use verify::{Problem, Report, verify_bag};

/// Why a package could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Config(String),
    #[error("case {0:?} does not exist")]
    CaseNotFound(String),
    #[error("case {case}: {message}")]
    Case {
        case: String,
        message: String,
        /// A store failure, worth trying again.
        retryable: bool,
    },
    #[error("reading the document records of case {case}: {message}")]
    Records {
        case: String,
        message: String,
        retryable: bool,
    },
    #[error(
        "document file {} ({document} v{version}) is missing from the documents output: {reason}",
        path.display()
    )]
    DocumentMissing {
        path: PathBuf,
        document: String,
        version: u32,
        reason: String,
    },
    #[error(
        "document file {} ({document} v{version}) differs from its DocumentGenerated record: \
         sha256 expected {expected}, actual {actual}",
        path.display()
    )]
    DocumentChanged {
        path: PathBuf,
        document: String,
        version: u32,
        expected: String,
        actual: String,
    },
    #[error("unsafe path {path:?} in the package: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("two payload files at {path}")]
    DuplicatePayload { path: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("packing the bag: {0}")]
    Pack(String),
    #[error(
        "{} already exists; an archive package is never overwritten (check it with `giamsat \
         archive verify`, or move it away to build it again)",
        path.display()
    )]
    Exists { path: PathBuf },
}

impl ArchiveError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ArchiveError {
        ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether trying again later can help (the store or the disk failed), as opposed to
    /// something a person has to fix (a changed document, a bad configuration).
    pub fn is_retryable(&self) -> bool {
        match self {
            ArchiveError::Case { retryable, .. } | ArchiveError::Records { retryable, .. } => {
                *retryable
            }
            ArchiveError::Io { .. } => true,
            _ => false,
        }
    }
}
