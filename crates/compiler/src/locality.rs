//! Locality-aware load balancing in load assignments, as Istio's `ApplyLocalityLoadBalancer`
//! does it, and the network view: which endpoints a proxy reaches directly and which through
//! their network's east-west gateway.
//!
//! - `distribute`: the first rule whose `from` matches the proxy's locality sets each
//!   locality's weight (a `to` pattern matching several localities shares its weight among
//!   them by their own weights); localities no `to` names get no traffic.
//! - Otherwise, only with outlier detection (without it Envoy never leaves priority 0):
//!   - `failoverPriority` labels: an endpoint's priority is how many of the labels, counted
//!     from the last, it must drop before the rest match the proxy's;
//!   - locality failover (when no `failoverPriority`, or `failover` is also given): 0 for the
//!     same region, zone and subzone, 1 for the same zone, 2 for the same region, 3 for
//!     another region, 4 for a region a `failover` rule from the proxy's region does not name.
//!   - Priorities combine as `labels × 5 + locality` and are renumbered from 0 without gaps.

use std::collections::HashMap;

use sextant_model::{Endpoint, Locality, LocalityLb, NetworkGateway, Proxy, Snapshot};

/// `distribute` rules: `(from, [(to, weight)])`.
type Distribute = [(String, Vec<(String, u32)>)];

/// How a load assignment is spread over localities for one proxy.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Spread<'a> {
    /// `distribute` rules to weigh localities by.
    distribute: Option<&'a Distribute>,
    /// Failover priorities are computed (outlier detection is on).
    failover: bool,
    /// Region failover rules.
    failover_regions: &'a [(String, String)],
    /// `failoverPriority` labels.
    labels: &'a [String],
}

impl<'a> Spread<'a> {
    /// What a cluster's effective locality settings and outlier detection ask for.
    pub(crate) fn new(lb: Option<&'a LocalityLb>, outlier: bool) -> Spread<'a> {
        // The mesh's default `localityLbSetting` is enabled with no rules.
        if lb.is_some_and(|l| l.enabled == Some(false)) {
            return Spread::default();
        }
        match lb {
            Some(l) if !l.distribute.is_empty() => Spread {
                distribute: Some(&l.distribute),
                ..Spread::default()
            },
            _ if outlier => Spread {
                distribute: None,
                failover: true,
                failover_regions: lb.map_or(&[][..], |l| &l.failover),
                labels: lb.map_or(&[][..], |l| &l.failover_priority),
            },
            _ => Spread::default(),
        }
    }

    /// Nothing to do: one priority, weights as they are.
    pub(crate) fn is_plain(&self) -> bool {
        self.distribute.is_none() && !self.failover
    }

    /// The `failoverPriority` part of an endpoint's priority.
    pub(crate) fn label_priority(&self, proxy: &Proxy, ep: &Endpoint) -> u32 {
        if !self.failover || self.labels.is_empty() {
            return 0;
        }
        let matches = |entry: &String| {
            let (key, wanted) = match entry.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (entry.as_str(), proxy_label(proxy, entry)),
            };
            endpoint_label(ep, key) == wanted
        };
        // The longest prefix of the labels the endpoint shares with the proxy.
        let shared = self.labels.iter().take_while(|l| matches(l)).count();
        u32::try_from(self.labels.len() - shared).unwrap_or(u32::MAX)
    }

    /// Sets each group's priority and weight; a group left with weight 0 gets no traffic.
    pub(crate) fn apply(&self, proxy: &Locality, groups: &mut [Group<'_>]) {
        if let Some(rules) = self.distribute {
            distribute(proxy, groups, rules);
            return;
        }
        if !self.failover {
            return;
        }
        let by_locality = self.labels.is_empty() || !self.failover_regions.is_empty();
        for g in groups.iter_mut() {
            let locality = if by_locality {
                locality_priority(proxy, g.locality, self.failover_regions)
            } else {
                0
            };
            g.priority = g.label_priority * 5 + locality;
        }
        // Priorities from 0 without gaps, as Envoy requires.
        let mut used: Vec<u32> = groups.iter().map(|g| g.priority).collect();
        used.sort_unstable();
        used.dedup();
        for g in groups.iter_mut() {
            g.priority = u32::try_from(used.partition_point(|p| *p < g.priority)).unwrap_or(0);
        }
    }
}

/// One locality group of a load assignment being assembled.
#[derive(Debug)]
pub(crate) struct Group<'a> {
    pub(crate) locality: &'a Locality,
    pub(crate) label_priority: u32,
    /// Encoded endpoints reached directly.
    pub(crate) direct: Vec<&'a [u8]>,
    /// East-west gateways standing in for endpoints of other networks, with their weight.
    pub(crate) gateways: Vec<(&'a NetworkGateway, u32)>,
    /// Sum of the endpoint weights (the locality's weight unless `distribute` sets one).
    pub(crate) weight: u32,
    pub(crate) priority: u32,
}

impl<'a> Group<'a> {
    pub(crate) fn new(locality: &'a Locality, label_priority: u32) -> Group<'a> {
        Group {
            locality,
            label_priority,
            direct: Vec::new(),
            gateways: Vec::new(),
            weight: 0,
            priority: 0,
        }
    }

    /// Adds `weight` toward a gateway.
    pub(crate) fn via(&mut self, gateway: &'a NetworkGateway, weight: u32) {
        self.weight = self.weight.saturating_add(weight);
        match self.gateways.iter_mut().find(|(g, _)| *g == gateway) {
            Some((_, w)) => *w = w.saturating_add(weight),
            None => self.gateways.push((gateway, weight)),
        }
    }
}

/// Istio's `LbPriority`, with `failover` rules for the cross-region case.
fn locality_priority(proxy: &Locality, ep: &Locality, failover: &[(String, String)]) -> u32 {
    if proxy.region == ep.region {
        if proxy.zone == ep.zone {
            return if proxy.subzone == ep.subzone { 0 } else { 1 };
        }
        return 2;
    }
    match failover.iter().find(|(from, _)| *from == proxy.region) {
        Some((_, to)) if *to != ep.region => 4,
        _ => 3,
    }
}

/// Istio's `applyLocalityWeights`.
fn distribute(proxy: &Locality, groups: &mut [Group<'_>], rules: &Distribute) {
    let Some((_, to)) = rules.iter().find(|(from, _)| proxy.matches(from)) else {
        return;
    };
    let mut unmatched: Vec<bool> = vec![true; groups.len()];
    let mut weights: Vec<u32> = vec![0; groups.len()];
    for (pattern, weight) in to {
        let matching: Vec<usize> = (0..groups.len())
            .filter(|i| unmatched[*i] && groups[*i].locality.matches(pattern))
            .collect();
        let total: u64 = matching
            .iter()
            .map(|i| u64::from(groups[*i].weight.max(1)))
            .sum();
        for i in matching {
            unmatched[i] = false;
            let own = u64::from(groups[i].weight.max(1));
            let share = (own * u64::from(*weight)).div_ceil(total.max(1));
            weights[i] = u32::try_from(share).unwrap_or(u32::MAX);
        }
    }
    for (g, w) in groups.iter_mut().zip(weights) {
        g.weight = w;
    }
}

/// A label of the proxy for `failoverPriority`: the topology keys from where it is.
fn proxy_label(proxy: &Proxy, key: &str) -> Option<String> {
    let place = (&proxy.cluster_id, &proxy.network, &proxy.locality);
    augmented_label(place, &proxy.labels, key)
}

/// A label of an endpoint for `failoverPriority`.
fn endpoint_label(ep: &Endpoint, key: &str) -> Option<String> {
    augmented_label((&ep.cluster_id, &ep.network, &ep.locality), &ep.labels, key)
}

/// A label with the topology keys taken from where its owner is (Istio's `AugmentLabels`).
fn augmented_label(
    (cluster, network, locality): (&String, &String, &Locality),
    labels: &std::collections::BTreeMap<String, String>,
    key: &str,
) -> Option<String> {
    let topology = match key {
        "topology.istio.io/cluster" => Some(cluster),
        "topology.istio.io/network" => Some(network),
        "topology.kubernetes.io/region" => Some(&locality.region),
        "topology.kubernetes.io/zone" => Some(&locality.zone),
        "topology.istio.io/subzone" => Some(&locality.subzone),
        _ => None,
    };
    topology
        .filter(|v| !v.is_empty())
        .cloned()
        .or_else(|| labels.get(key).cloned())
}

/// Which endpoints a proxy reaches through an east-west gateway (Istio's
/// `EndpointsByNetworkFilter`): those on another network that has gateways, preferring the
/// gateways of the endpoint's own cluster. Either side without a network is on every network.
/// Built once per compilation: an endpoint's gateways are a lookup, not a scan.
#[derive(Debug, Default)]
pub(crate) struct Gateways<'s> {
    /// Each network's gateways, and the same by the cluster that declares them.
    by_network: HashMap<&'s str, Network<'s>>,
}

type Network<'s> = (
    Vec<&'s NetworkGateway>,
    HashMap<&'s str, Vec<&'s NetworkGateway>>,
);

impl<'s> Gateways<'s> {
    pub(crate) fn of(snapshot: &'s Snapshot) -> Gateways<'s> {
        let mut by_network: HashMap<&'s str, Network<'s>> = HashMap::new();
        for g in &snapshot.network_gateways {
            let (all, by_cluster) = by_network.entry(&g.network).or_default();
            all.push(g);
            by_cluster.entry(&g.cluster_id).or_default().push(g);
        }
        Gateways { by_network }
    }

    /// The gateways `proxy` reaches `ep` through, if any.
    pub(crate) fn for_endpoint(
        &self,
        proxy: &Proxy,
        ep: &Endpoint,
    ) -> Option<&[&'s NetworkGateway]> {
        if self.by_network.is_empty()
            || ep.network.is_empty()
            || proxy.network.is_empty()
            || ep.network == proxy.network
        {
            return None;
        }
        // A network without gateways is assumed reachable directly.
        let (all, by_cluster) = self.by_network.get(ep.network.as_str())?;
        Some(by_cluster.get(ep.cluster_id.as_str()).unwrap_or(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Locality {
        Locality::parse(s)
    }

    #[test]
    fn locality_priorities_follow_istios_lb_priority_and_failover_rules() {
        let me = l("us-east/a/1");
        assert_eq!(locality_priority(&me, &l("us-east/a/1"), &[]), 0);
        assert_eq!(locality_priority(&me, &l("us-east/a/2"), &[]), 1);
        assert_eq!(locality_priority(&me, &l("us-east/b/1"), &[]), 2);
        assert_eq!(locality_priority(&me, &l("eu/x/1"), &[]), 3);
        let rules = [("us-east".to_owned(), "us-west".to_owned())];
        assert_eq!(locality_priority(&me, &l("us-west/x/1"), &rules), 3);
        assert_eq!(locality_priority(&me, &l("eu/x/1"), &rules), 4);
    }

    #[test]
    fn distribute_weighs_localities_and_starves_the_unnamed() {
        let (a, b, c) = (l("r/a/"), l("r/b/"), l("s/c/"));
        let mut groups = vec![Group::new(&a, 0), Group::new(&b, 0), Group::new(&c, 0)];
        for g in &mut groups {
            g.weight = 2;
        }
        let rules = vec![(
            "r/a/*".to_owned(),
            vec![("r/a/*".to_owned(), 80), ("r/*".to_owned(), 20)],
        )];
        distribute(&l("r/a/x"), &mut groups, &rules);
        let weights: Vec<u32> = groups.iter().map(|g| g.weight).collect();
        assert_eq!(weights, [80, 20, 0]);
    }

    #[test]
    fn components_read_in_place_are_the_effective_policys() {
        let rule = serde_json::json!({"apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule", "metadata": {"name": "r", "namespace": "default"},
            "spec": {"host": "reviews", "trafficPolicy": {
                "outlierDetection": {"consecutive5xxErrors": 1},
                "loadBalancer": {"localityLbSetting": {"failover": [{"from": "a", "to": "b"}]}},
                "portLevelSettings": [{"port": {"number": 9090},
                    "loadBalancer": {"simple": "RANDOM"}}]},
              "subsets": [
                {"name": "plain", "labels": {"v": "1"},
                 "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
                {"name": "bare", "labels": {"v": "2"}}]}});
        let mut index = sextant_index::Index::default();
        index.apply(sextant_index::Object::from_json(rule, "default").expect("object"));
        let (snapshot, _) = index.publish();
        let dr = snapshot.destination_rules.first().map(|d| &**d);
        for subset in [None, Some("plain"), Some("bare"), Some("none")] {
            for port in [9080, 9090] {
                let effective = crate::policy::effective(dr, subset, port);
                let lb = crate::policy::component(dr, subset, port, |p| p.load_balancer.as_ref());
                let od =
                    crate::policy::component(dr, subset, port, |p| p.outlier_detection.as_ref());
                assert_eq!(lb, effective.load_balancer.as_ref(), "{subset:?} {port}");
                assert_eq!(
                    od,
                    effective.outlier_detection.as_ref(),
                    "{subset:?} {port}"
                );
            }
        }
    }

    #[test]
    fn priorities_are_renumbered_without_gaps() {
        let (a, b) = (l("r/a/"), l("s/b/"));
        let mut groups = vec![Group::new(&a, 0), Group::new(&b, 0)];
        let policy = Spread {
            failover: true,
            ..Spread::default()
        };
        policy.apply(&l("r/a/"), &mut groups);
        assert_eq!((groups[0].priority, groups[1].priority), (0, 1));
    }
}
