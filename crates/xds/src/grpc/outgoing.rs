//! A response on its way to the wire, and its gRPC encoding: the message's envelope (frame
//! prefix, scalar fields, each resource's `Any` or `Resource` head) is written here, and the
//! resource bytes follow it as they are, shared.

use bytes::{BufMut, BytesMut};
use sextant_resources::{Body, wire};

use crate::protocol::{DeltaResponse, SotwResponse};

/// A response on its way to the wire.
#[derive(Debug)]
pub enum Outgoing {
    /// State of the world.
    Sotw(SotwResponse),
    /// Incremental.
    Delta(DeltaResponse),
}

impl Outgoing {
    pub(super) fn count(&self) -> usize {
        match self {
            Outgoing::Sotw(r) => r.resources.len(),
            Outgoing::Delta(r) => r.resources.len() + r.unresolved.len(),
        }
    }

    /// The i-th resource's bytes (none for an unresolved name).
    pub(super) fn value(&self, i: usize) -> &Body {
        static NONE: Body = Body::One(bytes::Bytes::new());
        match self {
            Outgoing::Sotw(r) => &r.resources[i],
            Outgoing::Delta(r) => r.resources.get(i).map_or(&NONE, |e| &e.body),
        }
    }

    /// The response's type URL.
    pub fn type_url(&self) -> &'static str {
        match self {
            Outgoing::Sotw(r) => r.type_url,
            Outgoing::Delta(r) => r.type_url,
        }
    }

    /// `google.protobuf.Any { type_url = 1, value = 2 }` of the i-th resource.
    fn any_len(&self, i: usize) -> usize {
        wire::field_len(self.type_url().len()) + wire::field_len(self.value(i).len())
    }

    /// Length of the i-th entry of `resources` (field 2), without its own tag and length.
    fn entry_len(&self, i: usize) -> usize {
        match self {
            Outgoing::Sotw(_) => self.any_len(i),
            Outgoing::Delta(r) => match r.resources.get(i) {
                // Resource { version = 1, resource = 2, name = 3, aliases = 4 }
                Some(e) => {
                    wire::field_len(16)
                        + wire::field_len(self.any_len(i))
                        + wire::string_field_len(&e.name)
                        + aliases_len(r.aliases.get(i))
                }
                // An unresolved name: its name and alias, no body.
                None => 2 * wire::string_field_len(&r.unresolved[i - r.resources.len()]),
            },
        }
    }

    /// Everything but the resources: the gRPC frame prefix and the scalar fields.
    pub(super) fn head(&self) -> BytesMut {
        let mut head = BytesMut::with_capacity(128);
        head.put_u8(0); // not compressed
        head.put_u32(0); // length, set below
        match self {
            Outgoing::Sotw(r) => {
                wire::string_field(&mut head, 1, &r.version_info);
                wire::string_field(&mut head, 4, r.type_url);
                wire::string_field(&mut head, 5, &r.nonce);
            }
            Outgoing::Delta(r) => {
                wire::string_field(&mut head, 1, &r.system_version_info);
                wire::string_field(&mut head, 4, r.type_url);
                wire::string_field(&mut head, 5, &r.nonce);
                for name in &r.removed_resources {
                    wire::bytes_field(&mut head, 6, name.as_bytes());
                }
            }
        }
        let resources: usize = (0..self.count())
            .map(|i| wire::field_len(self.entry_len(i)))
            .sum();
        let total = head.len() - 5 + resources;
        head[1..5].copy_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
        head
    }

    /// The i-th entry up to the resource bytes (which follow it directly).
    pub(super) fn entry_head(&self, i: usize, buf: &mut BytesMut) {
        let url = self.type_url();
        let value = self.value(i).len();
        wire::open_field(buf, 2, self.entry_len(i));
        if let Outgoing::Delta(r) = self {
            let Some(e) = r.resources.get(i) else {
                let name = &r.unresolved[i - r.resources.len()];
                wire::string_field(buf, 3, name);
                wire::string_field(buf, 4, name);
                return;
            };
            wire::string_field(buf, 3, &e.name);
            for alias in r.aliases.get(i).into_iter().flatten() {
                wire::string_field(buf, 4, alias);
            }
            wire::bytes_field(buf, 1, e.version().as_bytes());
            wire::open_field(buf, 2, self.any_len(i));
        }
        wire::string_field(buf, 1, url);
        wire::open_field(buf, 2, value);
    }
}

/// The size of a resource's `aliases` fields.
fn aliases_len(aliases: Option<&Vec<String>>) -> usize {
    aliases
        .into_iter()
        .flatten()
        .map(|a| wire::string_field_len(a))
        .sum()
}
