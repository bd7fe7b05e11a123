//! Sextant's end-to-end tests (one file per test binary beside this one): `sextant serve`
//! driven the way users drive it, with real Envoy 1.40, real kubectl and helm against the
//! test API server, and Istio's own manifests from `fixtures/istio`. What they share is the
//! `sextant-testing` crate. The `sextant` binary they run is the one building the workspace's
//! tests produces; run them through `make test` (or `cargo nextest run --workspace`).
