//! The hash chain: every event's hash covers the previous event's hash and the event's stored bytes,
//! so changing, removing or reordering any stored event breaks every link after it.

use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 digest of one link of the chain. The default is [`GENESIS_HASH`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

/// The `previous hash` of the event at position 1: thirty-two zero bytes.
pub const GENESIS_HASH: Hash = Hash([0u8; 32]);

/// Domain separation for version 1 of the chain format; a future format gets a new tag.
const CHAIN_TAG: &[u8] = b"giamsat-chain-v1\0";

impl Hash {
    /// Builds a hash from stored bytes; `None` when the length is not 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash)
    }

    /// Parses 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Hash> {
        let bytes = hex::decode(text).ok()?;
        Hash::from_slice(&bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Hash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hexadecimal digits"))
    }
}

/// Every stored field of an event that the chain covers, exactly as stored.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    pub position: u64,
    pub stream_id: &'a str,
    pub stream_version: u64,
    pub event_id: &'a uuid::Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub data: &'a str,
    pub metadata: &'a str,
    pub recorded_at_micros: i64,
}

/// `SHA-256(tag || previous || position || stream id || version || event id || type || schema
/// version || data || metadata || recorded time)`, integers big-endian, strings prefixed by their
/// length as a big-endian u64 so that no two field sequences produce the same bytes.
pub fn chain_hash(previous: &Hash, fields: &ChainFields<'_>) -> Hash {
    fn text(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    h.update(CHAIN_TAG);
    h.update(previous.0);
    h.update(fields.position.to_be_bytes());
    text(&mut h, fields.stream_id);
    h.update(fields.stream_version.to_be_bytes());
    h.update(fields.event_id.as_bytes());
    text(&mut h, fields.event_type);
    h.update(fields.schema_version.to_be_bytes());
    text(&mut h, fields.data);
    text(&mut h, fields.metadata);
    h.update(fields.recorded_at_micros.to_be_bytes());
    Hash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(id: &'a uuid::Uuid, data: &'a str) -> ChainFields<'a> {
        ChainFields {
            position: 1,
            stream_id: "case-1",
            stream_version: 1,
            event_id: id,
            event_type: "CaseStarted",
            schema_version: 1,
            data,
            metadata: "{}",
            recorded_at_micros: 1_711_324_800_000_000,
        }
    }

    #[test]
    fn every_covered_field_changes_the_hash() {
        let id = uuid::Uuid::nil();
        let base = chain_hash(&GENESIS_HASH, &fields(&id, "{}"));
        assert_eq!(base, chain_hash(&GENESIS_HASH, &fields(&id, "{}")));
        assert_ne!(base, chain_hash(&GENESIS_HASH, &fields(&id, "{\"a\":1}")));
        let mut moved = fields(&id, "{}");
        moved.position = 2;
        assert_ne!(base, chain_hash(&GENESIS_HASH, &moved));
        let mut later = fields(&id, "{}");
        later.recorded_at_micros += 1;
        assert_ne!(base, chain_hash(&GENESIS_HASH, &later));
        let other_prev = Hash([1u8; 32]);
        assert_ne!(base, chain_hash(&other_prev, &fields(&id, "{}")));
    }

    #[test]
    fn length_prefixes_keep_field_boundaries() {
        let id = uuid::Uuid::nil();
        let mut a = fields(&id, "{}");
        a.stream_id = "ab";
        a.event_type = "c";
        let mut b = fields(&id, "{}");
        b.stream_id = "a";
        b.event_type = "bc";
        assert_ne!(chain_hash(&GENESIS_HASH, &a), chain_hash(&GENESIS_HASH, &b));
    }

    #[test]
    fn hex_round_trip() {
        let h = Hash([0xab; 32]);
        assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(Hash::from_hex("abc"), None);
    }
}
