//! What a stream serves from: a proxy's resources by type, and the types Sextant serves.

use std::{collections::BTreeSet, sync::Arc};

use sextant_resources::{Encoded, EncodedResources, List, type_url};

use super::vhds::{VIRTUAL_HOST, VirtualHosts};

/// The xDS types Sextant serves, in push order (make before break: secrets before the
/// clusters and listeners whose TLS contexts name them).
pub const PUSH_ORDER: [&str; 5] = [
    type_url::SECRET,
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// CDS and LDS are wildcard types: an empty subscription means "everything".
pub fn is_wildcard_type(url: &str) -> bool {
    url == type_url::CLUSTER || url == type_url::LISTENER
}

/// The static spelling of a type URL Sextant serves.
pub(super) fn known_type(url: &str) -> Option<&'static str> {
    PUSH_ORDER.into_iter().find(|u| *u == url)
}

/// The resources of one type in one encoded set (sorted by name).
pub fn resources_of<'a>(all: &'a EncodedResources, url: &str) -> &'a [Encoded] {
    match url {
        type_url::CLUSTER => &all.clusters,
        type_url::ENDPOINT => &all.endpoints,
        type_url::LISTENER => &all.listeners,
        type_url::ROUTE => &all.routes,
        _ => &[],
    }
}

/// What a stream serves from: for each type, up to two lists sorted by name with no name in
/// both (a proxy's shared and own parts).
pub trait ResourceSet {
    /// The lists of `url`.
    fn lists(&self, url: &str) -> [&[Encoded]; 2];
    /// This set, kept to compare the next one with (its lists are shared, not copied).
    fn keep(&self) -> Arc<dyn ResourceSet + Send + Sync>;
    /// The virtual hosts served on demand (VHDS), when the set is served so.
    fn virtual_hosts(&self) -> Option<&VirtualHosts> {
        None
    }
}

impl ResourceSet for EncodedResources {
    fn lists(&self, url: &str) -> [&[Encoded]; 2] {
        [resources_of(self, url), &[]]
    }
    fn keep(&self) -> Arc<dyn ResourceSet + Send + Sync> {
        Arc::new(self.clone())
    }
}

/// Every resource of `url`.
pub(super) fn all_of<'a, R: ResourceSet + ?Sized>(all: &'a R, url: &str) -> Vec<&'a Encoded> {
    all.lists(url).into_iter().flatten().collect()
}

/// The resources of `url` named in `names` (in name order), then placeholders for the names
/// without one. One pass over the sorted lists: a subscription is usually every resource of
/// the type, and walking both sorted sequences beats a lookup per name.
pub(super) fn select<'a, R: ResourceSet + ?Sized>(
    all: &'a R,
    url: &'static str,
    names: &BTreeSet<String>,
    placeholders: &'a mut Vec<Encoded>,
) -> Vec<&'a Encoded> {
    let lists = all.lists(url);
    let mut cursors = [0usize; 2];
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        let mut hit = None;
        for (list, at) in lists.iter().zip(cursors.iter_mut()) {
            while *at < list.len() && list[*at].name.as_str() < name.as_str() {
                *at += 1;
            }
            if *at < list.len() && list[*at].name == *name {
                hit = Some(&list[*at]);
                break;
            }
        }
        match hit {
            Some(e) => found.push(e),
            None => placeholders.extend(placeholder(url, name)),
        }
    }
    let placeholders: &'a Vec<Encoded> = placeholders;
    found.extend(placeholders.iter());
    found
}

/// A proxy's resources without copying shared ones: the part its scope shares with other
/// proxies, its own part (inbound listeners and clusters) and the secrets of its identity.
/// Each list is sorted by name and no name is in both parts.
#[derive(Clone, Debug, Default)]
pub struct ProxyResources {
    /// Shared by every proxy of the scope.
    pub shared: Arc<EncodedResources>,
    /// This proxy's own.
    pub own: Arc<EncodedResources>,
    /// SDS secrets (`ROOTCA`, and `default` for a proxy that proved its identity), sorted by
    /// name.
    pub secrets: List,
    /// With on-demand virtual hosts (VHDS): the scope's virtual hosts, which `shared`'s route
    /// configurations leave out.
    pub virtual_hosts: Option<Arc<VirtualHosts>>,
}

impl ProxyResources {
    /// Both parts in one set, sorted by name (for display).
    pub fn merged(&self) -> EncodedResources {
        self.shared.merge(&self.own)
    }
}

impl ResourceSet for ProxyResources {
    fn lists(&self, url: &str) -> [&[Encoded]; 2] {
        if url == type_url::SECRET {
            return [&self.secrets, &[]];
        }
        if url == VIRTUAL_HOST {
            return [self.virtual_hosts.as_ref().map_or(&[], |v| &v.hosts), &[]];
        }
        [
            resources_of(&self.shared, url),
            resources_of(&self.own, url),
        ]
    }
    fn keep(&self) -> Arc<dyn ResourceSet + Send + Sync> {
        Arc::new(self.clone())
    }
    fn virtual_hosts(&self) -> Option<&VirtualHosts> {
        self.virtual_hosts.as_deref()
    }
}

/// A resource a proxy asked for by name that does not exist: an empty route configuration
/// (istiod answers so, letting listeners warm) or an empty load assignment.
fn placeholder(url: &str, name: &str) -> Option<Encoded> {
    use envoy_types::pb::envoy::config::{
        endpoint::v3::ClusterLoadAssignment, route::v3::RouteConfiguration,
    };
    match url {
        type_url::ROUTE => Some(Encoded::new(
            name,
            &RouteConfiguration {
                name: name.to_owned(),
                validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue {
                    value: false,
                }),
                ..Default::default()
            },
        )),
        type_url::ENDPOINT => Some(Encoded::new(
            name,
            &ClusterLoadAssignment {
                cluster_name: name.to_owned(),
                ..Default::default()
            },
        )),
        _ => None,
    }
}
