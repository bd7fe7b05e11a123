//! RDS: one route configuration per HTTP port, a virtual host `host:port` per service with all
//! its alternative names, and the catch-all virtual host last.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, VirtualHost, route, route_action,
};
use sextant_model::{Resolution, Service, VirtualService, host_matches};

use prost::Message;

use sextant_resources::{Encoded, wire};

use crate::{
    context::Context,
    proto::{boolv, ip_text, seconds, u32v},
    routes,
};

/// Where each virtual host of a proxy's route configurations came from, so that a rebuild after
/// VirtualService changes re-encodes only the virtual hosts whose VirtualService changed.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    /// By route configuration name, in the order of `EncodedResources::routes`.
    configs: Vec<ConfigOrigins>,
}

#[derive(Clone, Debug)]
struct ConfigOrigins {
    /// One per service with the configuration's port, in order.
    hosts: Vec<Origin>,
    /// Whether virtual hosts other than the services' claimed domains first (which the
    /// services' virtual hosts then leave out).
    claims: bool,
}

/// What a service's virtual host was built from.
#[derive(Clone, Debug)]
enum Origin {
    /// No virtual host: an earlier one already claimed all its domains.
    Skipped,
    /// The default route.
    Default,
    /// This VirtualService's routes (kept alive, so pointer equality means "the same").
    Routed(Arc<VirtualService>),
}

impl Origin {
    fn same(&self, other: &Origin) -> bool {
        match (self, other) {
            (Origin::Routed(a), Origin::Routed(b)) => Arc::ptr_eq(a, b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

/// The previous compilation of the same proxy, when only VirtualServices changed since: its
/// route configurations and where their virtual hosts came from.
pub struct Previous<'a> {
    /// Route configurations, sorted by name.
    pub routes: &'a [Encoded],
    /// Where their virtual hosts came from.
    pub origins: &'a Origins,
}

/// Route configurations the proxy's HTTP listeners ask for, sorted by name, and where their
/// virtual hosts came from. With `previous`, virtual hosts whose origin did not change are
/// reused as they are.
pub fn route_configurations(
    ctx: &Context<'_>,
    previous: Option<&Previous<'_>>,
) -> (Vec<Encoded>, Origins) {
    let mut by_port: BTreeMap<u16, Vec<&Service>> = BTreeMap::new();
    for svc in ctx.services() {
        for port in ctx.ports_of(svc).filter(|p| p.protocol.is_http()) {
            by_port.entry(port.port).or_default().push(svc);
        }
    }
    let literal = literal_hosts(ctx);
    let mut out: Vec<(Encoded, ConfigOrigins)> = by_port
        .into_iter()
        .map(|(port, services)| {
            let old = previous.and_then(|p| {
                let name = port.to_string();
                let i = p.routes.binary_search_by(|e| e.name.cmp(&name)).ok()?;
                let origins = p.origins.configs.get(i)?;
                (origins.hosts.len() == services.len()).then(|| (&p.routes[i], origins))
            });
            route_configuration(ctx, port, &services, &literal, old)
        })
        .collect();
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let (routes, configs) = out.into_iter().unzip();
    (routes, Origins { configs })
}

/// A route configuration for a name the proxy asked for that we do not know: empty, as Istio
/// answers, so the listener still warms.
pub fn empty(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        validate_clusters: Some(boolv(false)),
        ..Default::default()
    }
}

/// One route configuration as parts: its name, one part per service virtual host, then the
/// rest (virtual hosts for VirtualService hosts that name no service, the catch-all, options).
/// With `old` (the same configuration for the same services), a virtual host whose origin is
/// unchanged is the old part, and a changed one keeps the old part's name and domains (they
/// depend only on the services). New parts are written into one buffer and sliced from it; the
/// scope cache gives each part its own copy when it keeps it.
fn route_configuration(
    ctx: &Context<'_>,
    port: u16,
    services: &[&Service],
    literal: &[LiteralHosts<'_>],
    old: Option<(&Encoded, &ConfigOrigins)>,
) -> (Encoded, ConfigOrigins) {
    // Domains already used by an earlier virtual host (Envoy rejects duplicates), by hash.
    let mut used_domains: HashSet<u64> = HashSet::with_capacity(services.len() * 6);
    // Istio builds the virtual hosts of VirtualServices before the services' own, and the
    // first virtual host to list a domain keeps it: hosts that are no service's (and routed
    // aliases) claim their domains before the services do.
    let claimed = claiming_hosts(ctx, port, literal, &mut used_domains);
    // A part reused from `old` keeps its domains, so only while nothing claims any.
    let old = old.filter(|(_, origins)| !origins.claims && claimed.is_empty());
    let name = port.to_string();
    let mut buf = Vec::new();
    // Each part: an old one, or where a new one ends in `buf`.
    let mut parts: Vec<Result<Bytes, usize>> = Vec::with_capacity(services.len() + 2);
    wire::string_field(&mut buf, 1, &name);
    parts.push(Err(buf.len()));
    let mut hosts = Vec::with_capacity(services.len());
    // Old parts, after the name, one per virtual host.
    let mut old_parts = old.map(|(e, m)| (e.body.chunks()[1..].iter(), &m.hosts));
    let mut scratch = Scratch::default();
    for (i, svc) in services.iter().enumerate() {
        let origin = match ctx.virtual_service(&svc.hostname) {
            Some(vs) => Origin::Routed(vs.clone()),
            None => Origin::Default,
        };
        if let Some((old_parts, old_hosts)) = &mut old_parts {
            if matches!(old_hosts[i], Origin::Skipped) {
                hosts.push(Origin::Skipped);
                continue;
            }
            let part = old_parts.next().expect("a part per virtual host");
            if old_hosts[i].same(&origin) {
                parts.push(Ok(part.clone()));
            } else {
                scratch.vhost.clear();
                scratch.vhost.extend_from_slice(name_and_domains(part));
                virtual_host(ctx, svc, port, &origin, &mut scratch, &mut buf);
                parts.push(Err(buf.len()));
            }
            hosts.push(origin);
            continue;
        }
        let Scratch { vhost, text, .. } = &mut scratch;
        vhost.clear();
        text.clear();
        text.push_str(&svc.hostname);
        text.push(':');
        text.push_str(&name);
        wire::string_field(vhost, 1, text);
        let mut any = false;
        for_each_domain(ctx, svc, text, |d| {
            if used_domains.insert(xxhash_rust::xxh3::xxh3_64(d.as_bytes())) {
                wire::string_field(vhost, 2, d);
                any = true;
            }
        });
        if !any {
            hosts.push(Origin::Skipped);
            continue;
        }
        virtual_host(ctx, svc, port, &origin, &mut scratch, &mut buf);
        parts.push(Err(buf.len()));
        hosts.push(origin);
    }
    let claims = !claimed.is_empty();
    for v in claimed {
        wire::message_field(&mut buf, 2, &v);
    }
    wire::message_field(&mut buf, 2, &catch_all(ctx));
    RouteConfiguration {
        validate_clusters: Some(boolv(false)),
        ignore_port_in_host_matching: true,
        max_direct_response_body_size_bytes: Some(u32v(1024 * 1024)),
        ..Default::default()
    }
    .encode_raw(&mut buf);
    parts.push(Err(buf.len()));
    let buf = Bytes::from(buf);
    let mut start = 0;
    let parts = parts
        .into_iter()
        .map(|p| match p {
            Ok(old) => old,
            Err(end) => {
                let part = buf.slice(start..end);
                start = end;
                part
            }
        })
        .collect();
    (
        Encoded::from_parts(&name, parts),
        ConfigOrigins { hosts, claims },
    )
}

/// Reused buffers: a route configuration is built one virtual host at a time.
#[derive(Default)]
struct Scratch {
    /// The virtual host being built.
    vhost: Vec<u8>,
    route: Vec<u8>,
    text: String,
}

/// Appends a `virtual_hosts` entry (field 2 of the route configuration) to `buf`: what
/// `scratch.vhost` holds already (the encoded name and domains), then the routes of `origin`.
fn virtual_host(
    ctx: &Context<'_>,
    svc: &Service,
    port: u16,
    origin: &Origin,
    scratch: &mut Scratch,
    buf: &mut Vec<u8>,
) {
    let vhost = &mut scratch.vhost;
    let routed = match origin {
        Origin::Routed(vs) => routes::virtual_service_routes(ctx, vs, port),
        _ => Vec::new(),
    };
    // A VirtualService with no route for this port leaves the service its default route, as
    // in Istio. The default is assembled from shared parts: see `wire`.
    if routed.is_empty() {
        scratch.route.clear();
        routes::default_route_bytes(ctx, &svc.hostname, port, &mut scratch.route);
        wire::bytes_field(vhost, 3, &scratch.route);
    }
    for r in routed {
        wire::message_field(vhost, 3, &r);
    }
    // include_request_attempt_count
    wire::varint_field(vhost, 14, 1);
    wire::bytes_field(buf, 2, vhost);
}

/// The name and domains at the start of an encoded `virtual_hosts` entry: every field before
/// its routes (field 3) and later fields.
fn name_and_domains(entry: &[u8]) -> &[u8] {
    use prost::encoding::{decode_key, decode_varint};
    let mut outer = entry;
    let parsed = (|| {
        decode_key(&mut outer).ok()?;
        let len = decode_varint(&mut outer).ok()? as usize;
        let body = outer.get(..len)?;
        let mut rest = body;
        loop {
            let at = body.len() - rest.len();
            if rest.is_empty() {
                return Some(body);
            }
            let (tag, _) = decode_key(&mut rest).ok()?;
            if tag > 2 {
                return Some(&body[..at]);
            }
            let len = decode_varint(&mut rest).ok()? as usize;
            rest = rest.get(len..)?;
        }
    })();
    parsed.expect("virtual hosts are encoded by `virtual_host`")
}

/// Istio's domains of a service's virtual host (`generateVirtualHostDomains`): its names,
/// then the names of its ExternalName aliases, then for a headless service each of those
/// again as `*.name`, then its cluster IP. `text` is scratch space.
fn for_each_domain(ctx: &Context<'_>, svc: &Service, text: &mut String, mut f: impl FnMut(&str)) {
    let wildcards: &[&str] = if svc.resolution == Resolution::Passthrough {
        &["", "*."]
    } else {
        &[""]
    };
    for prefix in wildcards {
        for_each_name(ctx, &svc.hostname, prefix, text, &mut f);
        for alias in ctx.aliases_of(&svc.hostname) {
            for_each_name(ctx, &alias.hostname, prefix, text, &mut f);
        }
    }
    // As a Host header carries it: IPv6 in brackets (Istio's `IPv6Compliant`).
    match svc.cluster_ip {
        Some(ip @ std::net::IpAddr::V4(_)) => {
            ip_text(ip, text);
            f(text);
        }
        Some(std::net::IpAddr::V6(v6)) => {
            text.clear();
            text.push('[');
            text.push_str(&v6.to_string());
            text.push(']');
            f(text);
        }
        None => {}
    }
}

/// The names Istio gives a host name in virtual host domains (`GenerateAltVirtualHosts`), each
/// after `prefix`: the host name, the same with a trailing dot (an absolute name, as DNS
/// clients may send it), and for a Kubernetes host name `name.ns.svc.<suffix>` the names that
/// resolve to it from the proxy's namespace: `name` (same namespace only), `name.ns.svc` and
/// `name.ns`.
fn for_each_name(
    ctx: &Context<'_>,
    hostname: &str,
    prefix: &str,
    text: &mut String,
    f: &mut impl FnMut(&str),
) {
    let mut emit = |text: &mut String, parts: &[&str]| {
        text.clear();
        text.push_str(prefix);
        for p in parts {
            text.push_str(p);
        }
        f(text);
    };
    emit(text, &[hostname]);
    emit(text, &[hostname, "."]);
    let kube = hostname
        .strip_suffix(ctx.snapshot.domain_suffix.as_str())
        .and_then(|h| h.strip_suffix(".svc."));
    let Some(name_ns) = kube else {
        return;
    };
    let Some((name, namespace)) = name_ns.split_once('.') else {
        return;
    };
    if namespace == ctx.proxy.namespace {
        emit(text, &[name]);
        emit(text, &[name_ns, ".svc"]);
        emit(text, &[name_ns]);
    } else {
        emit(text, &[name_ns]);
        emit(text, &[name_ns, ".svc"]);
    }
}

/// A mesh VirtualService's hosts that name no service, and the ports of the services its
/// other hosts name (where those hosts get virtual hosts besides port 80).
struct LiteralHosts<'a> {
    vs: &'a VirtualService,
    hosts: Vec<String>,
    ports: std::collections::BTreeSet<u16>,
}

/// [`LiteralHosts`] of every mesh VirtualService that has any, in precedence order: found once
/// per compilation, each wildcard host matched against the services once.
fn literal_hosts<'a>(ctx: &Context<'a>) -> Vec<LiteralHosts<'a>> {
    // The ports of what `host` names (services, and aliases with ports), and whether it
    // names anything.
    let named = |host: &str| {
        let mut ports = std::collections::BTreeSet::new();
        let mut any = false;
        let mut add = |s: &Service| {
            if !s.is_alias() || !s.ports.is_empty() {
                any = true;
                ports.extend(s.ports.iter().map(|p| p.port));
            }
        };
        if host.starts_with('*') {
            ctx.services()
                .chain(ctx.aliases())
                .filter(|s| host_matches(host, &s.hostname))
                .for_each(|s| add(s));
        } else if let Some(s) = ctx.service(host).or_else(|| ctx.alias(host)) {
            add(s);
        }
        (any, ports)
    };
    let mut out = Vec::new();
    for vs in ctx
        .snapshot
        .mesh_virtual_services(&ctx.proxy.namespace)
        .filter(|vs| ctx.imports(vs))
    {
        let mut l = LiteralHosts {
            vs,
            hosts: Vec::new(),
            ports: std::collections::BTreeSet::new(),
        };
        for host in &vs.hosts {
            let mut host = ctx.resolve(host, &vs.id.namespace).to_ascii_lowercase();
            if host.parse::<std::net::Ipv6Addr>().is_ok() {
                host = format!("[{host}]");
            }
            let (any, ports) = named(&host);
            if any {
                l.ports.extend(ports);
            } else {
                l.hosts.push(host);
            }
        }
        if !l.hosts.is_empty() {
            out.push(l);
        }
    }
    out
}

/// Virtual hosts that claim their domains before the services' own, in Istio's order
/// (VirtualServices in precedence order, then routed aliases):
/// - VirtualService hosts that are no service's (`bookinfo.com`, or `test.default`, which
///   Istio does not read as a short name): a virtual host with just that domain and the
///   VirtualService's routes, on port 80 and on every port of the services the
///   VirtualService also routes (Istio's `separateVSHostsAndServices`). Istio decides "no
///   service's" among the services with the route's port, so that on port 80 the host of a
///   service without port 80 becomes such a literal host, routed to clusters that do not
///   exist; Sextant counts services of any port and leaves those requests to the catch-all;
/// - ExternalName aliases that have this port and a VirtualService of their own: their names,
///   with that VirtualService's routes.
///
/// A VirtualService with no route for the port adds nothing there.
fn claiming_hosts(
    ctx: &Context<'_>,
    port: u16,
    literal: &[LiteralHosts<'_>],
    used: &mut HashSet<u64>,
) -> Vec<VirtualHost> {
    let mut out = Vec::new();
    for l in literal {
        if port != 80 && !l.ports.contains(&port) {
            continue;
        }
        let routes = routes::virtual_service_routes(ctx, l.vs, port);
        if routes.is_empty() {
            continue;
        }
        for host in &l.hosts {
            if used.insert(xxhash_rust::xxh3::xxh3_64(host.as_bytes())) {
                out.push(VirtualHost {
                    name: format!("{host}:{port}"),
                    domains: vec![host.clone()],
                    routes: routes.clone(),
                    include_request_attempt_count: true,
                    ..Default::default()
                });
            }
        }
    }
    let mut text = String::new();
    for alias in ctx.aliases().filter(|a| a.port(port).is_some()) {
        let Some(vs) = ctx.virtual_service(&alias.hostname) else {
            continue;
        };
        let routes = routes::virtual_service_routes(ctx, vs, port);
        if routes.is_empty() {
            continue;
        }
        let mut domains = Vec::new();
        for_each_name(ctx, &alias.hostname, "", &mut text, &mut |d| {
            if used.insert(xxhash_rust::xxh3::xxh3_64(d.as_bytes())) {
                domains.push(d.to_owned());
            }
        });
        if !domains.is_empty() {
            out.push(VirtualHost {
                name: format!("{}:{port}", alias.hostname),
                domains,
                routes,
                include_request_attempt_count: true,
                ..Default::default()
            });
        }
    }
    out
}

/// `allow_any` (to PassthroughCluster) with interception under ALLOW_ANY; under REGISTRY_ONLY
/// `block_all`, answering 502. Without interception there is no original destination to pass
/// through to, so unknown hosts always get the REGISTRY_ONLY answer.
fn catch_all(ctx: &Context<'_>) -> VirtualHost {
    let registry_only =
        ctx.outbound_traffic_policy() == sextant_model::OutboundTrafficPolicy::RegistryOnly;
    let (name, action) = if ctx.bound_listeners() || registry_only {
        (
            "block_all",
            route::Action::DirectResponse(DirectResponseAction {
                status: 502,
                ..Default::default()
            }),
        )
    } else {
        (
            "allow_any",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                    "PassthroughCluster".to_owned(),
                )),
                timeout: Some(seconds(0)),
                ..Default::default()
            }),
        )
    };
    VirtualHost {
        name: name.to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![Route {
            name: name.to_owned(),
            r#match: Some(envoy_types::pb::envoy::config::route::v3::RouteMatch {
                path_specifier: Some(
                    envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier::Prefix(
                        "/".to_owned(),
                    ),
                ),
                ..Default::default()
            }),
            action: Some(action),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}
