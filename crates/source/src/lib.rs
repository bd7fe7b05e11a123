//! Where objects come from: a directory of manifests, or a cluster's watches (`sextant-kube`).
//! Either feeds the index with apply, delete and reset.

pub mod files;
