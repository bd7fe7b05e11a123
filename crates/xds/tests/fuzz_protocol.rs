//! Fuzz target for the ADS protocol state machines: arbitrary sequences of
//! DiscoveryRequests (state of the world) and DeltaDiscoveryRequests (incremental), with
//! known and unknown types, names, stale and current nonces, ACKs, NACKs of any length and
//! resource updates in between, each request admitted first as the server does. Properties:
//! nothing panics; a refused request names its bound; responses are only for known types,
//! carry fresh nonces, and hold only resources that exist (or placeholders for subscribed names); what a stream keeps of a NACK stays
//! within its limit.
//!
//! A few hundred cases by default; `PROPTEST_CASES=20000` (or `make fuzz`) for long runs.
//! See docs/FUZZING.md.

use std::{collections::HashSet, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::{cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment},
        service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
    },
    google::rpc::Status,
};
use proptest::prelude::*;
use sextant_resources::{Encoded, EncodedResources, type_url};
use sextant_xds::protocol::{Delta, Interner, Limits, Sotw, SystemClock, is_wildcard_type};

/// `cases` by default; `PROPTEST_CASES` when set.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

const LIMITS: Limits = Limits {
    nack_message_bytes: 64,
    subscription_names: 8,
};

const TYPES: &[&str] = &[
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
    type_url::SECRET,
    "type.googleapis.com/unknown",
    "",
];

const NAMES: &[&str] = &["a", "b", "c", "d", "*", "", "outbound|80||a"];

/// Clusters and load assignments named by `names`.
fn resources(names: &[&str]) -> EncodedResources {
    EncodedResources {
        clusters: names
            .iter()
            .map(|n| {
                Encoded::new(
                    n,
                    &Cluster {
                        name: (*n).into(),
                        ..Default::default()
                    },
                )
            })
            .collect(),
        endpoints: names
            .iter()
            .map(|n| {
                Encoded::new(
                    n,
                    &ClusterLoadAssignment {
                        cluster_name: (*n).into(),
                        ..Default::default()
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

/// What happens next on a stream.
#[derive(Clone, Debug)]
enum Step {
    /// A request of type `ty` for `names` (unsubscribing `gone`, in delta), answering the
    /// last response of its type or not, NACKing with `nack` or not.
    Request {
        ty: usize,
        names: Vec<usize>,
        gone: Vec<usize>,
        answer_last: bool,
        nonce: String,
        nack: Option<usize>,
    },
    /// The resources change to these names.
    Update(Vec<usize>),
    /// The names of the request grow past the limit.
    Flood(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let names = || prop::collection::vec(0..NAMES.len(), 0..5);
    prop_oneof![
        8 => (
            0..TYPES.len(),
            names(),
            names(),
            any::<bool>(),
            "[0-9]{0,3}",
            prop::option::of(0usize..300),
        )
            .prop_map(|(ty, names, gone, answer_last, nonce, nack)| Step::Request {
                ty,
                names,
                gone,
                answer_last,
                nonce,
                nack,
            }),
        2 => names().prop_map(Step::Update),
        1 => (9usize..40).prop_map(Step::Flood),
    ]
}

fn pick(indices: &[usize]) -> Vec<String> {
    indices.iter().map(|&i| NAMES[i].to_owned()).collect()
}

fn nack(len: Option<usize>) -> Option<Status> {
    len.map(|n| Status {
        code: 3,
        message: "é".repeat(n),
        ..Default::default()
    })
}

/// Checks a response's type, nonce and resources.
fn fresh(
    nonces: &mut HashSet<String>,
    nonce: &str,
    ty: &str,
    asked: &str,
) -> Result<(), TestCaseError> {
    prop_assert!(TYPES[..5].contains(&ty), "response for {}", ty);
    prop_assert_eq!(ty, asked);
    prop_assert!(nonces.insert(nonce.to_owned()), "nonce {} reused", nonce);
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_protocol_sotw_request_sequences(steps in prop::collection::vec(step(), 0..30)) {
        let mut all = resources(&["a", "b"]);
        let mut s = Sotw::new(Interner::default(), Arc::new(SystemClock)).with_limits(LIMITS);
        let mut nonces = HashSet::new();
        let mut last: std::collections::HashMap<&str, String> = Default::default();
        for step in steps {
            let req = match step {
                Step::Update(names) => {
                    let names: Vec<&str> = names.iter().map(|&i| NAMES[i]).collect();
                    all = resources(&names);
                    for r in s.on_update(&all) {
                        fresh(&mut nonces, &r.nonce, r.type_url, r.type_url)?;
                        last.insert(r.type_url, r.nonce.clone());
                    }
                    continue;
                }
                Step::Flood(n) => DiscoveryRequest {
                    type_url: type_url::ENDPOINT.into(),
                    resource_names: (0..n).map(|i| format!("n{i}")).collect(),
                    ..Default::default()
                },
                Step::Request { ty, names, answer_last, nonce, nack: n, .. } => DiscoveryRequest {
                    type_url: TYPES[ty].into(),
                    resource_names: pick(&names),
                    response_nonce: if answer_last {
                        last.get(TYPES[ty]).cloned().unwrap_or_default()
                    } else {
                        nonce
                    },
                    error_detail: nack(n),
                    ..Default::default()
                },
            };
            if let Err(refused) = s.admit(&req.clone().into()) {
                prop_assert_eq!(refused.bound(), "subscription_names");
                prop_assert!(refused.to_string().contains("more than 8"));
                // The stream ends here.
                break;
            }
            let asked = req.type_url.clone();
            if let Some(r) = s.on_request(req, &all) {
                fresh(&mut nonces, &r.nonce, r.type_url, &asked)?;
                last.insert(r.type_url, r.nonce.clone());
            }
        }
        for status in s.status().values() {
            if let Some((_, text)) = &status.nack {
                prop_assert!(text.len() <= LIMITS.nack_message_bytes + 40, "{}", text.len());
            }
        }
        s.events.clear();
    }

    #[test]
    fn fuzz_protocol_delta_request_sequences(steps in prop::collection::vec(step(), 0..30)) {
        let mut all = resources(&["a", "b"]);
        let mut d = Delta::new(Arc::new(SystemClock)).with_limits(LIMITS);
        let mut nonces = HashSet::new();
        let mut last: std::collections::HashMap<&str, String> = Default::default();
        for step in steps {
            let req = match step {
                Step::Update(names) => {
                    let names: Vec<&str> = names.iter().map(|&i| NAMES[i]).collect();
                    all = resources(&names);
                    for r in d.on_update(&all) {
                        fresh(&mut nonces, &r.nonce, r.type_url, r.type_url)?;
                        last.insert(r.type_url, r.nonce.clone());
                    }
                    continue;
                }
                Step::Flood(n) => DeltaDiscoveryRequest {
                    type_url: type_url::ENDPOINT.into(),
                    resource_names_subscribe: (0..n).map(|i| format!("n{i}")).collect(),
                    ..Default::default()
                },
                Step::Request { ty, names, gone, answer_last, nonce, nack: n } => {
                    DeltaDiscoveryRequest {
                        type_url: TYPES[ty].into(),
                        resource_names_subscribe: pick(&names),
                        resource_names_unsubscribe: pick(&gone),
                        initial_resource_versions: pick(&gone)
                            .into_iter()
                            .map(|n| (n, nonce.clone()))
                            .collect(),
                        response_nonce: if answer_last {
                            last.get(TYPES[ty]).cloned().unwrap_or_default()
                        } else {
                            nonce
                        },
                        error_detail: nack(n),
                        ..Default::default()
                    }
                }
            };
            if let Err(refused) = d.admit(&req) {
                prop_assert_eq!(refused.bound(), "subscription_names");
                break;
            }
            let asked = req.type_url.clone();
            if let Some(r) = d.on_request(req, &all) {
                fresh(&mut nonces, &r.nonce, r.type_url, &asked)?;
                // Load assignments and routes may be empty placeholders for subscribed names
                // that do not exist (yet); clusters and listeners must exist.
                for sent in r.resources.iter().filter(|_| is_wildcard_type(r.type_url)) {
                    prop_assert!(
                        all.clusters.iter().chain(all.endpoints.iter()).any(|e| e.name == sent.name),
                        "{} does not exist", sent.name
                    );
                }
                last.insert(r.type_url, r.nonce.clone());
            }
        }
        for status in d.status().values() {
            if let Some((_, text)) = &status.nack {
                prop_assert!(text.len() <= LIMITS.nack_message_bytes + 40, "{}", text.len());
            }
        }
    }
}
