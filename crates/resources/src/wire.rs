//! Hand assembly of protobuf messages from pre-encoded parts.
//!
//! A protobuf message is the concatenation of its fields, so a resource can be written as its
//! per-instance fields followed by bytes shared with every similar resource (a cluster's policy,
//! a route's retry policy), each encoded once. This is what keeps a full sidecar compile within
//! its budget: prost's encoder recomputes nested lengths at every level and the full structs
//! cost an allocation per field. The ADS server writes the envelope of its responses (gRPC
//! frames around shared resource bytes) with the same helpers.

use bytes::BufMut;
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint},
};

/// Appends a length-delimited field holding `data`.
pub fn bytes_field(buf: &mut impl BufMut, tag: u32, data: &[u8]) {
    open_field(buf, tag, data.len());
    buf.put_slice(data);
}

/// Appends a string field (empty strings are omitted, as proto3 does).
pub fn string_field(buf: &mut impl BufMut, tag: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(buf, tag, s.as_bytes());
    }
}

/// Appends a varint field (zero is omitted).
pub fn varint_field(buf: &mut impl BufMut, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

/// Appends a message field.
pub fn message_field<M: Message>(buf: &mut impl BufMut, tag: u32, m: &M) {
    open_field(buf, tag, m.encoded_len());
    m.encode_raw(buf);
}

/// Appends a `google.protobuf.UInt32Value` field.
pub fn u32_value_field(buf: &mut impl BufMut, tag: u32, v: u32) {
    encode_key(tag, WireType::LengthDelimited, buf);
    if v == 0 {
        encode_varint(0, buf);
    } else {
        encode_varint(1 + encoded_len_varint(u64::from(v)) as u64, buf);
        varint_field(buf, 1, u64::from(v));
    }
}

/// The size of a length-delimited field with `tag` < 16 holding `len` bytes.
pub fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The size of [`string_field`] with `tag` < 16 (nothing for an empty string).
pub fn string_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

/// Writes the key and length of a length-delimited field whose content follows.
pub fn open_field(buf: &mut impl BufMut, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}
