//! Webhooks configured by `clientConfig.service` (`namespace`, `name`, `path`, `port`, 443 by
//! default), resolved the way the API server routes to endpoints
//! (`k8s.io/apiserver/pkg/util/proxy.ResolveEndpoint`): the Service must exist and be of type
//! ClusterIP, NodePort or LoadBalancer; one of its ports must be the webhook's port; the
//! address is the first ready endpoint (`conditions.ready` unset or true) of its
//! EndpointSlices (label `kubernetes.io/service-name`), on the slice port named as the Service
//! port (a slice listing no ports: the Service port's numeric `targetPort`, or the port
//! itself). The call then goes to that address over HTTPS, verifying the certificate for
//! `NAME.NAMESPACE.svc`, as the API server's service resolver names it.
//!
//! Resolution reads the store, so it happens under the server's lock before the webhooks are
//! called (`Services::resolve`), once per write for every service a webhook names.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde_json::Value;

use crate::store::{Key, Store};

/// A webhook's `clientConfig.service`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRef {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port to call (443 when unset).
    pub port: u16,
    /// The URL path (`/` when unset).
    pub path: String,
}

impl ServiceRef {
    /// The service reference of a `clientConfig`, if it has one; an error when it is not a
    /// valid one.
    pub fn of(client_config: &Value) -> Option<Result<ServiceRef, String>> {
        let service = client_config.get("service").filter(|s| s.is_object())?;
        let text = |k: &str| service[k].as_str().unwrap_or_default().to_owned();
        let (namespace, name) = (text("namespace"), text("name"));
        if namespace.is_empty() || name.is_empty() {
            return Some(Err(
                "clientConfig.service: namespace and name are required".into()
            ));
        }
        let port = match &service["port"] {
            Value::Null => 443,
            p => match p.as_u64().and_then(|p| u16::try_from(p).ok()) {
                Some(p) if p > 0 => p,
                _ => {
                    return Some(Err(format!(
                        "clientConfig.service.port: Invalid value: {p}"
                    )));
                }
            },
        };
        let path = match text("path") {
            p if p.is_empty() => "/".to_owned(),
            p => p,
        };
        Some(Ok(ServiceRef {
            namespace,
            name,
            port,
            path,
        }))
    }

    /// The name the webhook's certificate must hold: `NAME.NAMESPACE.svc`.
    pub fn host(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

/// Where each service a webhook names is reached, or why it cannot be.
#[derive(Debug, Default)]
pub struct Services {
    resolved: BTreeMap<(String, String, u16), Result<SocketAddr, String>>,
}

impl Services {
    /// Resolves every service that a webhook of `configs` names, from the Services and
    /// EndpointSlices of `store`.
    pub fn resolve<'a>(configs: impl IntoIterator<Item = &'a Value>, store: &Store) -> Services {
        let mut resolved = BTreeMap::new();
        let hooks = configs
            .into_iter()
            .flat_map(|c| c["webhooks"].as_array().into_iter().flatten());
        for hook in hooks {
            if let Some(Ok(r)) = ServiceRef::of(&hook["clientConfig"]) {
                resolved
                    .entry((r.namespace.clone(), r.name.clone(), r.port))
                    .or_insert_with(|| resolve(store, &r));
            }
        }
        Services { resolved }
    }

    /// The address of `service`.
    pub fn address(&self, service: &ServiceRef) -> Result<SocketAddr, String> {
        let key = (
            service.namespace.clone(),
            service.name.clone(),
            service.port,
        );
        self.resolved.get(&key).cloned().unwrap_or_else(|| {
            Err(format!(
                "service \"{}\" was not resolved before the call",
                service.name
            ))
        })
    }
}

fn resolve(store: &Store, r: &ServiceRef) -> Result<SocketAddr, String> {
    let key = Key {
        group: String::new(),
        plural: "services".into(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    };
    let service = store
        .get(&key)
        .ok_or_else(|| format!("service \"{}\" not found", r.name))?;
    let spec = &service["spec"];
    match spec["type"].as_str().unwrap_or("ClusterIP") {
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        other => return Err(format!("unsupported service type {other:?}")),
    }
    let service_port = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"].as_u64() == Some(u64::from(r.port)))
        .ok_or_else(|| {
            format!(
                "no service port {} found for service \"{}\"",
                r.port, r.name
            )
        })?;
    let port_name = service_port["name"].as_str().unwrap_or_default();
    let unlisted = service_port["targetPort"]
        .as_u64()
        .unwrap_or(u64::from(r.port));
    let slices = store
        .list("discovery.k8s.io", "endpointslices", Some(&r.namespace))
        .map(|(_, s)| s)
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == r.name.as_str());
    for slice in slices {
        let ports = slice["ports"].as_array().filter(|p| !p.is_empty());
        let port = match ports {
            None => Some(unlisted),
            Some(ports) => ports
                .iter()
                .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
                .and_then(|p| p["port"].as_u64()),
        };
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        let ready = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["conditions"]["ready"] != Value::Bool(false));
        for endpoint in ready {
            let address = endpoint["addresses"][0].as_str().unwrap_or_default();
            if let Ok(ip) = address.parse::<IpAddr>() {
                return Ok(SocketAddr::new(ip, port));
            }
        }
    }
    Err(format!("no endpoints available for service \"{}\"", r.name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::EventType;

    fn put(store: &mut Store, plural: &str, group: &str, object: Value) {
        let key = Key {
            group: group.into(),
            plural: plural.into(),
            namespace: "sextant-system".into(),
            name: object["metadata"]["name"].as_str().expect("named").into(),
        };
        store.put(key, object, EventType::Added);
    }

    fn service_ref(port: Option<u16>) -> ServiceRef {
        let mut service =
            json!({"namespace": "sextant-system", "name": "sextant", "path": "/validate"});
        if let Some(p) = port {
            service["port"] = json!(p);
        }
        ServiceRef::of(&json!({ "service": service }))
            .expect("a service reference")
            .expect("valid")
    }

    fn slice(name: &str, ports: Value, endpoints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/service-name": "sextant"}},
               "ports": ports, "endpoints": endpoints})
    }

    #[test]
    fn a_service_resolves_to_a_ready_endpoint_on_the_named_port() {
        let mut store = Store::open(None).expect("a store");
        let r = service_ref(None);
        assert_eq!(
            (r.port, r.host()),
            (443, "sextant.sextant-system.svc".into())
        );
        let resolved = |store: &Store| resolve(store, &r);
        assert_eq!(
            resolved(&store),
            Err("service \"sextant\" not found".into())
        );
        put(
            &mut store,
            "services",
            "",
            json!({"metadata": {"name": "sextant"}, "spec": {"ports": [
                {"name": "https-webhook", "port": 443, "targetPort": 15017}]}}),
        );
        assert_eq!(
            resolved(&store),
            Err("no endpoints available for service \"sextant\"".into())
        );
        put(
            &mut store,
            "endpointslices",
            "discovery.k8s.io",
            slice(
                "sextant-a",
                json!([{"name": "https-webhook", "port": 25017}]),
                json!([{"addresses": ["127.0.0.9"], "conditions": {"ready": false}},
                       {"addresses": ["127.0.0.10"], "conditions": {"ready": true}}]),
            ),
        );
        assert_eq!(
            resolved(&store),
            Ok("127.0.0.10:25017".parse().expect("addr"))
        );
        // A slice without ports: the Service port's targetPort.
        let mut store = Store::open(None).expect("a store");
        put(
            &mut store,
            "services",
            "",
            json!({"metadata": {"name": "sextant"}, "spec": {"ports": [
                {"port": 443, "targetPort": 15017}]}}),
        );
        put(
            &mut store,
            "endpointslices",
            "discovery.k8s.io",
            slice("s", json!([]), json!([{"addresses": ["127.0.0.11"]}])),
        );
        assert_eq!(
            resolved(&store),
            Ok("127.0.0.11:15017".parse().expect("addr"))
        );
        assert_eq!(
            resolve(&store, &service_ref(Some(8443))),
            Err("no service port 8443 found for service \"sextant\"".into())
        );
    }

    #[test]
    fn invalid_references_and_external_names_are_refused() {
        assert!(ServiceRef::of(&json!({"url": "https://x"})).is_none());
        assert!(matches!(
            ServiceRef::of(&json!({"service": {"name": "a"}})),
            Some(Err(_))
        ));
        assert!(matches!(
            ServiceRef::of(&json!({"service": {"namespace": "n", "name": "a", "port": 70000}})),
            Some(Err(_))
        ));
        let mut store = Store::open(None).expect("a store");
        put(
            &mut store,
            "services",
            "",
            json!({"metadata": {"name": "sextant"}, "spec": {"type": "ExternalName",
                   "externalName": "example.com"}}),
        );
        assert_eq!(
            resolve(&store, &service_ref(None)),
            Err("unsupported service type \"ExternalName\"".into())
        );
    }
}
