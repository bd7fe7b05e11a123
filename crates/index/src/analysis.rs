//! Istio's analysis across objects: references that name nothing (IST0101), VirtualService
//! hosts a Gateway does not offer (IST0132), and Sidecars that overlap (IST0110, IST0111).
//!
//! One implementation serves `sextant validate` (manifests), `sextant analyze` (a live
//! cluster) and the status the Lease holder writes (`validationMessages` of each published
//! snapshot), so the three cannot disagree. The checks run over model objects: each map they
//! need (subsets by host, Gateways by name, Pods by namespace) is built once per call, so one
//! call costs O(objects + routes + Pods), never objects times objects.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use sextant_model::{
    DestinationRule, Gateway, HttpAction, Kind, ObjectRef, Service, Sidecar, Snapshot,
    VirtualService,
};

mod gateways;
mod sidecars;
#[cfg(test)]
mod tests;

/// How serious a message is, as Istio ranks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The configuration does not do what it says.
    Error,
    /// It probably does not.
    Warning,
    /// Worth knowing.
    Info,
}

impl Level {
    /// Istio's spelling in `validationMessages` (`ERROR`).
    pub fn as_upper(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warning => "WARNING",
            Level::Info => "INFO",
        }
    }

    /// istioctl's spelling in its output (`Error`).
    pub fn as_title(self) -> &'static str {
        match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        }
    }
}

/// One of Istio's analysis message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code {
    /// `IST0101`.
    pub code: &'static str,
    /// `ReferencedResourceNotFound`.
    pub name: &'static str,
    /// Its level in Istio.
    pub level: Level,
}

impl Code {
    /// Istio's page about it.
    pub fn documentation_url(&self) -> String {
        format!(
            "https://istio.io/latest/docs/reference/config/analysis/{}/",
            self.code.to_ascii_lowercase()
        )
    }
}

/// IST0101: a reference names nothing.
pub const REFERENCED_RESOURCE_NOT_FOUND: Code = Code {
    code: "IST0101",
    name: "ReferencedResourceNotFound",
    level: Level::Error,
};
/// IST0106: the object is invalid.
pub const SCHEMA_VALIDATION_ERROR: Code = Code {
    code: "IST0106",
    name: "SchemaValidationError",
    level: Level::Error,
};
/// IST0110: two Sidecars select one Pod.
pub const CONFLICTING_SIDECAR_WORKLOAD_SELECTORS: Code = Code {
    code: "IST0110",
    name: "ConflictingSidecarWorkloadSelectors",
    level: Level::Error,
};
/// IST0111: two Sidecars of a namespace have no selector.
pub const MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS: Code = Code {
    code: "IST0111",
    name: "MultipleSidecarsWithoutWorkloadSelectors",
    level: Level::Error,
};
/// IST0132: a Gateway a VirtualService binds to offers none of some of its hosts.
pub const VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY: Code = Code {
    code: "IST0132",
    name: "VirtualServiceHostNotFoundInGateway",
    level: Level::Warning,
};
/// IST0133: the object is accepted with a warning.
pub const SCHEMA_WARNING: Code = Code {
    code: "IST0133",
    name: "SchemaWarning",
    level: Level::Warning,
};
/// IST0134: a TCP ServiceEntry port without addresses.
pub const SERVICE_ENTRY_ADDRESSES_REQUIRED: Code = Code {
    code: "IST0134",
    name: "ServiceEntryAddressesRequired",
    level: Level::Warning,
};
/// IST0177: ServiceEntries give one host and port different protocols.
pub const CONFLICTING_SERVICE_ENTRY_PROTOCOL: Code = Code {
    code: "IST0177",
    name: "ConflictingServiceEntryProtocol",
    level: Level::Warning,
};

const CODES: [Code; 8] = [
    REFERENCED_RESOURCE_NOT_FOUND,
    SCHEMA_VALIDATION_ERROR,
    CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
    MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
    VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
    SCHEMA_WARNING,
    SERVICE_ENTRY_ADDRESSES_REQUIRED,
    CONFLICTING_SERVICE_ENTRY_PROTOCOL,
];

/// The message type of a code Sextant raises (`IST0101`).
pub fn code(code: &str) -> Option<Code> {
    CODES.into_iter().find(|c| c.code == code)
}

/// One finding about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The object it is about.
    pub object: ObjectRef,
    /// Where that object is in the [`Input`] list of its kind.
    pub at: usize,
    /// The field at fault (`spec.http[0].route[1].destination.subset`); empty for the object.
    pub field: String,
    /// Which message.
    pub code: Code,
    /// For people, as istioctl words it.
    pub description: String,
}

/// A Pod as the selector checks see it.
#[derive(Clone, Copy, Debug)]
pub struct Pod<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// The service host names there are.
#[derive(Debug)]
pub enum Hosts<'a> {
    /// As a set the caller built.
    Set(HashSet<&'a str>),
    /// A snapshot's services, looked up where they are (no copy per snapshot).
    Services(&'a BTreeMap<String, Arc<Service>>),
}

impl Hosts<'_> {
    /// Whether `host` is one of them.
    pub fn contains(&self, host: &str) -> bool {
        match self {
            Hosts::Set(set) => set.contains(host),
            Hosts::Services(map) => map.contains_key(host),
        }
    }
}

/// What the analysis looks at. What the caller does not know is `None` and not judged:
/// manifests without Services say nothing about which hosts exist.
#[derive(Debug, Default)]
pub struct Input<'a> {
    /// Valid VirtualServices.
    pub virtual_services: Vec<&'a VirtualService>,
    /// Valid DestinationRules.
    pub destination_rules: Vec<&'a DestinationRule>,
    /// Valid Gateways.
    pub gateways: Vec<&'a Gateway>,
    /// Every Gateway present as `namespace/name`, valid or not: an invalid one is reported
    /// for its own errors, not as missing.
    pub gateway_names: HashSet<String>,
    /// Valid Sidecars.
    pub sidecars: Vec<&'a Sidecar>,
    /// Service host names (Kubernetes Services and ServiceEntry hosts), when known.
    pub services: Option<Hosts<'a>>,
    /// Whether a subset no DestinationRule defines is reported (the caller knows every
    /// DestinationRule).
    pub judge_subsets: bool,
    /// The Pods, when known.
    pub pods: Option<Vec<Pod<'a>>>,
    /// DNS suffix short names resolve under (`cluster.local`).
    pub domain_suffix: &'a str,
}

impl<'a> Input<'a> {
    /// Everything a published snapshot holds, all of it judged.
    pub fn of_snapshot(snapshot: &'a Snapshot) -> Input<'a> {
        let selects_pods = snapshot.gateways.iter().any(|g| !g.selector.is_empty())
            || snapshot.sidecars.iter().any(|s| s.selector.is_some());
        let gateway_names = snapshot
            .gateways
            .iter()
            .map(|g| g.key())
            .chain(
                snapshot
                    .invalid
                    .keys()
                    .filter(|id| id.kind == Kind::Gateway)
                    .map(|id| format!("{}/{}", id.namespace, id.name)),
            )
            .collect();
        Input {
            virtual_services: snapshot.virtual_services.iter().map(|v| &**v).collect(),
            destination_rules: snapshot.destination_rules.iter().map(|d| &**d).collect(),
            gateways: snapshot.gateways.iter().map(|g| &**g).collect(),
            gateway_names,
            sidecars: snapshot.sidecars.iter().map(|s| &**s).collect(),
            services: Some(Hosts::Services(&snapshot.services)),
            judge_subsets: true,
            // Only selectors read Pods: without one, a mesh's Pods are not even listed (at
            // W-L, 100,000 of them would be most of the cost).
            pods: Some(if selects_pods {
                snapshot
                    .workloads
                    .values()
                    .map(|w| Pod {
                        namespace: &w.namespace,
                        name: &w.name,
                        labels: &w.labels,
                    })
                    .collect()
            } else {
                Vec::new()
            }),
            domain_suffix: if snapshot.domain_suffix.is_empty() {
                "cluster.local"
            } else {
                &snapshot.domain_suffix
            },
        }
    }
}

/// Every message, in a fixed order: references of VirtualServices and DestinationRules in
/// input order, then Gateways, then Sidecars.
pub fn analyze(input: &Input<'_>) -> Vec<Message> {
    let mut out = Vec::new();
    references(input, &mut out);
    gateways::references(input, &mut out);
    sidecars::references(input, &mut out);
    out
}

/// [`analyze`] of a snapshot, by object.
pub fn by_object(snapshot: &Snapshot) -> HashMap<ObjectRef, Vec<Message>> {
    let mut out: HashMap<ObjectRef, Vec<Message>> = HashMap::new();
    for m in analyze(&Input::of_snapshot(snapshot)) {
        out.entry(m.object.clone()).or_default().push(m);
    }
    out
}

fn message(object: &ObjectRef, at: usize, field: String, code: Code, text: String) -> Message {
    Message {
        object: object.clone(),
        at,
        field,
        code,
        description: text,
    }
}

/// Istio's short-name resolution: a host without dots is a Service in the config's namespace.
fn resolve(host: &str, namespace: &str, suffix: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{suffix}")
    }
}

fn is_cluster_local(host: &str, suffix: &str) -> bool {
    host.strip_suffix(suffix)
        .is_some_and(|h| h.ends_with(".svc."))
        && !host.contains('*')
}

/// IST0101 for VirtualService hosts and destinations (host, subset) and DestinationRule hosts.
fn references(input: &Input<'_>, out: &mut Vec<Message>) {
    let suffix = input.domain_suffix;
    let mut subsets: HashMap<String, HashSet<&str>> = HashMap::new();
    for dr in &input.destination_rules {
        let names = subsets
            .entry(resolve(&dr.host, &dr.id.namespace, suffix))
            .or_default();
        names.extend(dr.subsets.iter().map(|s| s.name.as_str()));
    }
    let missing = |fqdn: &str| {
        input
            .services
            .as_ref()
            .is_some_and(|s| is_cluster_local(fqdn, suffix) && !s.contains(fqdn))
    };
    let code = REFERENCED_RESOURCE_NOT_FOUND;
    for (at, vs) in input.virtual_services.iter().enumerate() {
        let ns = &vs.id.namespace;
        for (i, host) in vs.hosts.iter().enumerate() {
            let fqdn = resolve(host, ns, suffix);
            if missing(&fqdn) {
                out.push(message(
                    &vs.id,
                    at,
                    format!("spec.hosts[{i}]"),
                    code,
                    format!("Referenced host not found: {host:?} ({fqdn} matches no Service)"),
                ));
            }
        }
        for (i, route) in vs.http.iter().enumerate() {
            let HttpAction::Route(dests) = &route.action else {
                continue;
            };
            for (j, d) in dests.iter().enumerate() {
                let field = format!("spec.http[{i}].route[{j}].destination");
                let host = &d.destination.host;
                let fqdn = resolve(host, ns, suffix);
                if missing(&fqdn) {
                    out.push(message(
                        &vs.id,
                        at,
                        format!("{field}.host"),
                        code,
                        format!("Referenced host not found: {host:?}"),
                    ));
                }
                if let Some(subset) = &d.destination.subset
                    && input.judge_subsets
                    && !subsets
                        .get(&fqdn)
                        .is_some_and(|s| s.contains(subset.as_str()))
                {
                    out.push(message(
                        &vs.id,
                        at,
                        format!("{field}.subset"),
                        code,
                        format!(
                            "Referenced host+subset in destinationrule not found: \"{host}+{subset}\""
                        ),
                    ));
                }
            }
        }
    }
    for (at, dr) in input.destination_rules.iter().enumerate() {
        let fqdn = resolve(&dr.host, &dr.id.namespace, suffix);
        if missing(&fqdn) {
            out.push(message(
                &dr.id,
                at,
                "spec.host".into(),
                code,
                format!(
                    "Referenced host not found: {:?} ({fqdn} matches no Service)",
                    dr.host
                ),
            ));
        }
    }
}
