//! The bounds every reader of untrusted configuration applies: manifest files, admission
//! reviews and watched objects are all held to the same [`Limits`], so none of them can make
//! Sextant spend more than a bounded amount of memory and time on one input.
//!
//! What a document costs downstream is not only its text: every field is later named by its
//! path (`spec.http[0].route`) in errors and line lookups, and aliases repeat what they point
//! at. The *expanded size* counts both: it is the size the document would have written out
//! with aliases expanded and every field on a line of its own under its full path. Deep
//! nesting under long keys makes it grow with the square of the text, which is what
//! [`Limits::expanded_bytes`] refuses.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use serde_json::Value;

/// The largest input text accepted by default, in bytes.
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;
/// The deepest nesting of mappings and sequences accepted by default.
pub const MAX_DEPTH: usize = 128;
/// The most nodes one input may expand to by default (aliases count every time they are used).
pub const MAX_NODES: usize = 2_000_000;
/// The largest expanded size (see the module documentation) accepted by default. A
/// 16 MiB file of ordinary objects (10,000 Services, their EndpointSlices) stays far below.
pub const MAX_EXPANDED_BYTES: usize = 256 * 1024 * 1024;

/// How much one input (a file, an admission review, a watched object) may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of text.
    pub input_bytes: usize,
    /// Nesting of mappings and sequences.
    pub depth: usize,
    /// Nodes (scalars, mappings, sequences), aliases counted expanded.
    pub nodes: usize,
    /// Expanded size: every field's full path plus its string, aliases expanded.
    pub expanded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            input_bytes: MAX_INPUT_BYTES,
            depth: MAX_DEPTH,
            nodes: MAX_NODES,
            expanded_bytes: MAX_EXPANDED_BYTES,
        }
    }
}

static CONFIGURED: OnceLock<Limits> = OnceLock::new();

impl Limits {
    /// Makes these the limits of every reader in this process (`sextant serve` sets them
    /// from its flags once at start). False if limits were already configured.
    pub fn configure(self) -> bool {
        CONFIGURED.set(self).is_ok()
    }

    /// The limits configured for this process, or the defaults.
    pub fn current() -> Limits {
        CONFIGURED.get().copied().unwrap_or_default()
    }

    /// The limit of `bound`.
    pub fn of(&self, bound: Bound) -> usize {
        match bound {
            Bound::InputBytes => self.input_bytes,
            Bound::Depth => self.depth,
            Bound::Nodes => self.nodes,
            Bound::ExpandedBytes => self.expanded_bytes,
        }
    }

    /// Refuses text longer than [`Limits::input_bytes`].
    pub fn check_len(&self, len: u64) -> Result<(), Exceeded> {
        if len > self.input_bytes as u64 {
            return Err(Exceeded::new(Bound::InputBytes, self.input_bytes));
        }
        Ok(())
    }
}

/// One of the bounds of [`Limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bound {
    /// [`Limits::input_bytes`].
    InputBytes,
    /// [`Limits::depth`].
    Depth,
    /// [`Limits::nodes`].
    Nodes,
    /// [`Limits::expanded_bytes`].
    ExpandedBytes,
}

static REFUSALS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

impl Bound {
    /// Every bound.
    pub const ALL: [Bound; 4] = [
        Bound::InputBytes,
        Bound::Depth,
        Bound::Nodes,
        Bound::ExpandedBytes,
    ];

    /// Its label in `sextant_xds_bounded_total{bound="..."}`.
    pub fn label(self) -> &'static str {
        match self {
            Bound::InputBytes => "input_bytes",
            Bound::Depth => "input_depth",
            Bound::Nodes => "input_nodes",
            Bound::ExpandedBytes => "input_expanded_bytes",
        }
    }

    /// The `sextant serve` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Bound::InputBytes => "--max-input-bytes",
            Bound::Depth => "--max-input-depth",
            Bound::Nodes => "--max-input-nodes",
            Bound::ExpandedBytes => "--max-input-expanded-bytes",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Bound::InputBytes => "input is larger than",
            Bound::Depth => "nesting is deeper than",
            Bound::Nodes => "input expands to more nodes than",
            Bound::ExpandedBytes => {
                "input expands (every field under its full path, aliases expanded) to more bytes than"
            }
        }
    }

    /// Inputs refused by this bound in this process so far.
    pub fn refusals(self) -> u64 {
        REFUSALS[self as usize].load(Ordering::Relaxed)
    }
}

/// An input refused because it passed one of its [`Limits`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {limit} (bound {}, set by {})", bound.what(), bound.label(), bound.flag())]
pub struct Exceeded {
    /// Which bound.
    pub bound: Bound,
    /// Its value.
    pub limit: usize,
}

impl Exceeded {
    /// A refusal by `bound`, counted in [`Bound::refusals`].
    pub fn new(bound: Bound, limit: usize) -> Exceeded {
        REFUSALS[bound as usize].fetch_add(1, Ordering::Relaxed);
        Exceeded { bound, limit }
    }
}

/// What an input has spent of its limits so far.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    limits: Limits,
    nodes: usize,
    expanded: usize,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            nodes: 0,
            expanded: 0,
        }
    }

    /// Spends `nodes` nodes and `expanded` bytes of expanded size.
    pub(crate) fn spend(&mut self, nodes: usize, expanded: usize) -> Result<(), Exceeded> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.expanded = self.expanded.saturating_add(expanded);
        if self.nodes > self.limits.nodes {
            return Err(Exceeded::new(Bound::Nodes, self.limits.nodes));
        }
        if self.expanded > self.limits.expanded_bytes {
            return Err(Exceeded::new(
                Bound::ExpandedBytes,
                self.limits.expanded_bytes,
            ));
        }
        Ok(())
    }

    /// Refuses opening a mapping or sequence inside `open` others.
    pub(crate) fn open(&self, open: usize) -> Result<(), Exceeded> {
        if open >= self.limits.depth {
            return Err(Exceeded::new(Bound::Depth, self.limits.depth));
        }
        Ok(())
    }
}

/// Bytes a path segment adds: `.key` or `[index]`.
pub(crate) fn key_segment_bytes(key: &str) -> usize {
    key.len() + 1
}

/// Bytes a path segment adds: `[index]`.
pub(crate) fn index_segment_bytes(index: usize) -> usize {
    index.checked_ilog10().unwrap_or(0) as usize + 3
}

/// Checks a JSON value (an admission review, a watched object) against `limits`: the same
/// depth, node and expanded-size bounds as a manifest file. Linear in the value's size; stops
/// at the first bound passed.
pub fn check_value(value: &Value, limits: &Limits) -> Result<(), Exceeded> {
    let mut budget = Budget::new(*limits);
    walk(value, 0, 0, &mut budget)
}

fn walk(value: &Value, open: usize, path: usize, budget: &mut Budget) -> Result<(), Exceeded> {
    match value {
        Value::String(s) => budget.spend(1, path.saturating_add(s.len())),
        Value::Array(items) => {
            budget.open(open)?;
            budget.spend(1, path)?;
            for (i, item) in items.iter().enumerate() {
                walk(item, open + 1, path + index_segment_bytes(i), budget)?;
            }
            Ok(())
        }
        Value::Object(fields) => {
            budget.open(open)?;
            budget.spend(1, path)?;
            for (key, item) in fields {
                walk(item, open + 1, path + key_segment_bytes(key), budget)?;
            }
            Ok(())
        }
        _ => budget.spend(1, path),
    }
}

/// Nodes and expanded size of `value` measured from its own place (its path counted as
/// empty), for charging what an alias to it repeats.
pub(crate) fn measure(value: &Value) -> (usize, usize) {
    fn go(value: &Value, path: usize, out: &mut (usize, usize)) {
        out.0 = out.0.saturating_add(1);
        out.1 = out.1.saturating_add(path);
        match value {
            Value::String(s) => out.1 = out.1.saturating_add(s.len()),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    go(item, path.saturating_add(index_segment_bytes(i)), out);
                }
            }
            Value::Object(fields) => {
                for (key, item) in fields {
                    go(item, path.saturating_add(key_segment_bytes(key)), out);
                }
            }
            _ => {}
        }
    }
    let mut out = (0, 0);
    go(value, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(depth: usize, nodes: usize, expanded_bytes: usize) -> Limits {
        Limits {
            input_bytes: 1 << 20,
            depth,
            nodes,
            expanded_bytes,
        }
    }

    #[test]
    fn values_within_every_bound_pass() {
        let v = json!({"spec": {"http": [{"route": [{"weight": 5}]}]}});
        assert_eq!(check_value(&v, &limits(6, 7, 1000)), Ok(()));
    }

    #[test]
    fn each_bound_refuses_what_passes_it_and_names_its_flag() {
        let v = json!({"spec": {"http": [{"route": [{"weight": 5}]}]}});
        let depth = check_value(&v, &limits(4, 100, 1000)).expect_err("too deep");
        assert_eq!(depth.bound, Bound::Depth);
        assert!(depth.to_string().contains("--max-input-depth"), "{depth}");
        let nodes = check_value(&v, &limits(10, 6, 1000)).expect_err("too many nodes");
        assert_eq!(nodes.bound, Bound::Nodes);
        // Paths: "" + ".spec" + ".spec.http" + "...[0]" + ".route" + "[0]" + ".weight".
        let expanded = check_value(&v, &limits(10, 100, 60)).expect_err("too big");
        assert_eq!(expanded.bound, Bound::ExpandedBytes);
    }

    #[test]
    fn long_keys_deep_down_cost_their_path_for_every_field_below() {
        let key = "k".repeat(1000);
        let mut v = json!({"a": 1, "b": 2, "c": 3});
        for _ in 0..10 {
            v = json!({ key.clone(): v });
        }
        let (nodes, expanded) = measure(&v);
        assert_eq!(nodes, 14);
        assert!(expanded > 3 * 10 * 1000, "{expanded}");
    }

    #[test]
    fn refusals_are_counted_per_bound() {
        let before = Bound::Nodes.refusals();
        let _ = check_value(&json!([1, 2, 3]), &limits(5, 2, 1000));
        assert!(Bound::Nodes.refusals() > before);
    }
}
