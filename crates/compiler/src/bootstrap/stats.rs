//! The sidecar's `stats_config`: Istio's standard labels on Envoy's own stats, as far as stock
//! Envoy can make them cheaply. `/stats/prometheus` keeps Envoy's metric names
//! (`envoy_cluster_upstream_rq_total`, ...), with labels from tag extractors:
//!
//! - from the cluster in a cluster stat's name: `cluster_name`, and for
//!   `outbound|PORT|SUBSET|HOST` `destination_service` (HOST), `destination_service_name` and
//!   `destination_service_namespace` (from `NAME.NAMESPACE.svc.DOMAIN`), `destination_port`,
//!   `destination_subset`; for `inbound|PORT||` `destination_port`;
//! - Envoy's own tags but its cluster name (`envoy_response_code`, `envoy_response_code_class`,
//!   the connection manager, listener and TCP proxy prefixes, ...);
//! - the proxy's own identity, which no stat name holds, as fixed values on every stat:
//!   `source_workload`, `source_workload_namespace`, `source_app`, `source_version`,
//!   `source_cluster`. They are right for outbound traffic, where the proxy is the source; on
//!   an inbound cluster's stats (`cluster_name="inbound|PORT||"`) they name the proxy that
//!   reports, the destination. Envoy cannot drop a fixed tag from some stats but by an
//!   extractor of the same name that runs ahead of it on every stat, and such a regex fails,
//!   at every position of the name, on each stat it leaves alone: 1.5 s of startup per label
//!   for a W-M sidecar (see [`stats_config`]).
//!
//! Envoy's tag regexes are ECMAScript (`std::regex`), and every one is tried on the original
//! name: the removed parts of several tags may overlap. A tag name is taken once per stat, from
//! the first extractor that matches (`TagProducerImpl::produceTags`), so alternatives of one
//! name go most specific first.

use envoy_types::pb::envoy::config::{
    bootstrap::v3::Bootstrap,
    metrics::v3::{StatsConfig, TagSpecifier, tag_specifier},
};

use crate::proto::boolv;

/// What a cluster stat may continue with after its cluster's name: a single token
/// (`upstream_rq_200`), or one of Envoy's stat groups under a cluster. Service clusters have
/// Istio's `alt_stat_name`, their name and `;`, which ends the name in their stats; the clusters
/// of DNS ServiceEntries do not, and a host name cannot be told from the stat after it by its
/// characters (both have dots), so their host ends at the first dot after which one of these
/// follows.
const CLUSTER_STAT: &str = concat!(
    "(?=[a-z0-9_]+$",
    "|circuit_breakers[.](?:default|high)[.]",
    "|outlier_detection[.][a-z0-9_]+$",
    "|health_check[.][a-z0-9_]+$",
    "|(?:internal|external|canary)[.]upstream_[a-z0-9_]+$",
    "|zone[.][^.]*[.][^.]*[.]upstream_[a-z0-9_]+$",
    "|ssl[.]",
    "|http[123][.][a-z0-9_]+$",
    "|[^.]+[.]total_match_count$",
    ")",
);

/// Who the proxy is, as its stats label it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsIdentity {
    /// The workload (Deployment) name, else the Pod's.
    pub workload: String,
    /// The workload's namespace.
    pub namespace: String,
    /// Label `app.kubernetes.io/name`, else `app`; `unknown` without either.
    pub app: String,
    /// Label `app.kubernetes.io/version`, else `version`; `unknown` without either.
    pub version: String,
    /// The cluster the proxy runs in (`CLUSTER_ID`, Istio's default `Kubernetes`).
    pub cluster: String,
}

impl StatsIdentity {
    /// The identity a bootstrap's node gives: its id (`TYPE~IP~POD.NAMESPACE~...`) and the
    /// metadata `NAMESPACE`, `WORKLOAD_NAME`, `LABELS` (`KEY=VALUE,...`) and `CLUSTER_ID`.
    pub fn of_node(b: &Bootstrap) -> StatsIdentity {
        let Some(node) = &b.node else {
            return StatsIdentity::default();
        };
        let meta = |key: &str| -> Option<String> {
            use envoy_types::pb::google::protobuf::value::Kind;
            let fields = &node.metadata.as_ref()?.fields;
            match fields.get(key)?.kind.as_ref()? {
                Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
                _ => None,
            }
        };
        let mut parts = node.id.split('~');
        let pod_and_namespace = parts.nth(2).unwrap_or_default();
        let domain = parts.next().unwrap_or_default();
        let namespace = meta("NAMESPACE").unwrap_or_else(|| {
            domain
                .split_once(".svc")
                .map_or(domain, |(ns, _)| ns)
                .to_owned()
        });
        let pod = pod_and_namespace
            .strip_suffix(&format!(".{namespace}"))
            .unwrap_or(pod_and_namespace);
        let labels: Vec<(String, String)> = meta("LABELS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let label = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| labels.iter().find(|(key, _)| key == k))
                .map_or_else(|| "unknown".to_owned(), |(_, v)| v.clone())
        };
        StatsIdentity {
            workload: meta("WORKLOAD_NAME").unwrap_or_else(|| pod.to_owned()),
            namespace,
            app: label(["app.kubernetes.io/name", "app"]),
            version: label(["app.kubernetes.io/version", "version"]),
            cluster: meta("CLUSTER_ID").unwrap_or_else(|| "Kubernetes".to_owned()),
        }
    }
}

fn regex(name: &str, regex: &str) -> TagSpecifier {
    TagSpecifier {
        tag_name: name.to_owned(),
        tag_value: Some(tag_specifier::TagValue::Regex(regex.to_owned())),
    }
}

fn fixed(name: &str, value: &str) -> TagSpecifier {
    TagSpecifier {
        tag_name: name.to_owned(),
        tag_value: Some(tag_specifier::TagValue::FixedValue(value.to_owned())),
    }
}

/// Envoy's built-in tags kept (by name, so Envoy's own fast extractors run: a literal
/// pre-filter before any regex). `envoy.cluster_name` is not among them: it takes the cluster
/// name up to its first dot, and Istio's cluster names have dots.
const ENVOY_TAGS: &[&str] = &[
    "envoy.response_code",
    "envoy.response_code_class",
    "envoy.http_conn_manager_prefix",
    "envoy.listener_address",
    "envoy.tcp_prefix",
    "envoy.http_user_agent",
    "envoy.virtual_host",
    "envoy.virtual_cluster",
    "envoy.ssl_cipher",
    "envoy.worker_id",
];

/// The stats configuration of a sidecar that is `identity`.
///
/// Envoy's tag regexes are `std::regex`, tried on every stat whose first token matches their
/// literal prefix, and a cluster makes about 107 stats: each regex that runs on cluster stats
/// costs a W-M sidecar (2,000 clusters) about 0.3 s of startup when it matches at the start of
/// the name, and 1.5 s when it fails (it is tried at every position). So the cluster's parts
/// are taken by regexes that match at the start of nearly every cluster stat, the response
/// code keeps Envoy's own extractor (label `envoy_response_code`), and the identity is fixed
/// values, which cost no regex.
pub fn stats_config(identity: &StatsIdentity) -> StatsConfig {
    let outbound = r"^cluster\.outbound\|";
    let mut tags = vec![
        // The cluster: a service cluster's stats carry its name and `;` (its
        // `alt_stat_name`); a DNS ServiceEntry's up to a stat group; inbound clusters by their
        // form; any other up to its first dot (`PassthroughCluster`, `xds-grpc`).
        regex("cluster_name", r"^cluster\.((outbound\|[^;]*);\.)"),
        regex(
            "cluster_name",
            &format!(r"^cluster\.((outbound\|\d*\|[^|]*\|.+?)\.){CLUSTER_STAT}"),
        ),
        regex(
            "cluster_name",
            r"^cluster\.((inbound\|\d*\|[^|]*\|[^.]*)\.)",
        ),
        regex("cluster_name", r"^cluster\.(([^.]+)\.)"),
        regex(
            "destination_service",
            r"^cluster\.(outbound\|\d*\|[^|]*\|([^;]*);\.)",
        ),
        regex(
            "destination_service",
            &format!(r"^cluster\.(outbound\|\d*\|[^|]*\|(.+?)\.){CLUSTER_STAT}"),
        ),
        regex(
            "destination_service_name",
            &format!(r"{outbound}\d*\|[^|]*\|(([^.|]+)\.)[^.|]+\.svc\."),
        ),
        regex(
            "destination_service_namespace",
            &format!(r"{outbound}\d*\|[^|]*\|[^.|]+\.(([^.|]+)\.)svc\."),
        ),
        regex("destination_port", r"^cluster\.((?:out|in)bound\|(\d+)\|)"),
        regex(
            "destination_subset",
            &format!(r"{outbound}\d*\|(([^|]*)\|)"),
        ),
    ];
    tags.extend(ENVOY_TAGS.iter().map(|name| TagSpecifier {
        tag_name: (*name).to_owned(),
        tag_value: None,
    }));
    tags.extend([
        fixed("source_workload", &identity.workload),
        fixed("source_workload_namespace", &identity.namespace),
        fixed("source_app", &identity.app),
        fixed("source_version", &identity.version),
        fixed("source_cluster", &identity.cluster),
    ]);
    StatsConfig {
        stats_tags: tags,
        use_all_default_tags: Some(boolv(false)),
        ..Default::default()
    }
}

/// Sets the bootstrap's stats configuration from its node.
pub fn add_stats_config(b: &mut Bootstrap) {
    b.stats_config = Some(stats_config(&StatsIdentity::of_node(b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::dynamic_bootstrap;

    fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn identity_comes_from_the_node_id_and_metadata() {
        let node = "sidecar~10.0.0.1~reviews-v2-7d9f.bookinfo~bookinfo.svc.cluster.local";
        let b = dynamic_bootstrap(node, &[], "127.0.0.1", 15010, false, 15000, None);
        assert_eq!(
            StatsIdentity::of_node(&b),
            StatsIdentity {
                workload: "reviews-v2-7d9f".to_owned(),
                namespace: "bookinfo".to_owned(),
                app: "unknown".to_owned(),
                version: "unknown".to_owned(),
                cluster: "Kubernetes".to_owned(),
            }
        );
        let metadata = meta(&[
            ("WORKLOAD_NAME", "reviews-v2"),
            (
                "LABELS",
                "app=reviews,app.kubernetes.io/version=2.1,version=v2",
            ),
            ("CLUSTER_ID", "east"),
        ]);
        let b = dynamic_bootstrap(node, &metadata, "127.0.0.1", 15010, false, 15000, None);
        let identity = StatsIdentity::of_node(&b);
        assert_eq!(identity.workload, "reviews-v2");
        assert_eq!(identity.app, "reviews");
        assert_eq!(identity.version, "2.1", "app.kubernetes.io/version first");
        assert_eq!(identity.cluster, "east");
    }

    #[test]
    fn alternatives_of_one_tag_go_most_specific_first_and_identity_is_fixed() {
        let config = stats_config(&StatsIdentity {
            workload: "w".to_owned(),
            ..StatsIdentity::default()
        });
        let names: Vec<&str> = config
            .stats_tags
            .iter()
            .filter(|t| t.tag_name == "cluster_name")
            .filter_map(|t| match &t.tag_value {
                Some(tag_specifier::TagValue::Regex(r)) => Some(r.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(names.len(), 4);
        assert!(names[0].contains(';'), "the alt_stat_name form first");
        assert_eq!(names[3], r"^cluster\.(([^.]+)\.)", "any cluster last");
        assert!(
            config
                .stats_tags
                .iter()
                .any(|t| t.tag_name == "source_workload"
                    && t.tag_value == Some(tag_specifier::TagValue::FixedValue("w".to_owned())))
        );
        assert!(
            !config
                .stats_tags
                .iter()
                .any(|t| t.tag_name == "envoy.cluster_name"),
            "Envoy's cluster name stops at the first dot of Istio's"
        );
        assert_eq!(config.use_all_default_tags, Some(boolv(false)));
    }
}
