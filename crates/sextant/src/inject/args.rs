//! `sextant serve`'s sidecar injection flags (flattened into `ServeArgs`).

use super::{DEFAULT_INIT_IMAGE, DEFAULT_PROXY_IMAGE, InjectConfig, Resources, values};

/// Sidecar injection (`POST /inject` on the webhook port): what each injected Pod gets.
#[derive(Clone, Debug, clap::Args)]
pub struct InjectArgs {
    /// The sidecar's Envoy image (`sidecar.istio.io/proxyImage` overrides it per Pod).
    #[arg(long, env = "SEXTANT_SIDECAR_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    pub sidecar_image: String,
    /// The image of the `istio-init` container, which runs `sextant iptables`.
    #[arg(long, env = "SEXTANT_SIDECAR_INIT_IMAGE", default_value = DEFAULT_INIT_IMAGE)]
    pub sidecar_init_image: String,
    /// The secure xDS port as sidecars reach it, `HOST:PORT` (default:
    /// `SERVICE_NAME.LEASE_NAMESPACE.svc:SECURE_XDS_PORT`).
    #[arg(long, env = "SEXTANT_SIDECAR_XDS_ADDRESS")]
    pub sidecar_xds_address: Option<String>,
    /// The name sidecars expect in Sextant's certificate when the host of
    /// `--sidecar-xds-address` is not it (default, when that host is an IP address:
    /// `SERVICE_NAME.LEASE_NAMESPACE.svc`, which the certificate names).
    #[arg(long, env = "SEXTANT_SIDECAR_XDS_SERVER_NAME")]
    pub sidecar_xds_server_name: Option<String>,
    /// The sidecar's CPU request (empty for none); the `sidecar.istio.io/proxyCPU` family of
    /// annotations replaces all four resource settings.
    #[arg(long, env = "SEXTANT_SIDECAR_CPU_REQUEST", default_value = "100m")]
    pub sidecar_cpu_request: String,
    /// The sidecar's memory request (empty for none).
    #[arg(long, env = "SEXTANT_SIDECAR_MEMORY_REQUEST", default_value = "128Mi")]
    pub sidecar_memory_request: String,
    /// The sidecar's CPU limit (empty for none).
    #[arg(long, env = "SEXTANT_SIDECAR_CPU_LIMIT", default_value = "2000m")]
    pub sidecar_cpu_limit: String,
    /// The sidecar's memory limit (empty for none).
    #[arg(long, env = "SEXTANT_SIDECAR_MEMORY_LIMIT", default_value = "1024Mi")]
    pub sidecar_memory_limit: String,
    /// Envoy's log level (`sidecar.istio.io/logLevel` overrides it).
    #[arg(long, env = "SEXTANT_SIDECAR_LOG_LEVEL", default_value = "warning")]
    pub sidecar_log_level: String,
    /// Envoy's per-component log levels, `COMPONENT:LEVEL,...`, empty for none
    /// (`sidecar.istio.io/componentLogLevel` overrides it).
    #[arg(
        long,
        env = "SEXTANT_SIDECAR_COMPONENT_LOG_LEVEL",
        default_value = "misc:error"
    )]
    pub sidecar_component_log_level: String,
    /// Envoy's worker threads, 0 for one per core (`concurrency` of `proxy.istio.io/config`
    /// overrides it).
    #[arg(long, env = "SEXTANT_SIDECAR_CONCURRENCY", default_value_t = 2)]
    pub sidecar_concurrency: u32,
    /// The sidecar's user and group id; `sextant iptables` lets this user's traffic out
    /// uncaptured.
    #[arg(long, env = "SEXTANT_SIDECAR_UID", default_value_t = 1337)]
    pub sidecar_uid: u32,
    /// Make sidecars Kubernetes native sidecars (Kubernetes 1.29 or later): init containers
    /// with `restartPolicy: Always`, which start before the application, hold it until Envoy
    /// is configured, and stop after it (`sidecar.istio.io/nativeSidecar` decides per Pod).
    #[arg(long, env = "SEXTANT_SIDECAR_NATIVE")]
    pub sidecar_native: bool,
    /// The MutatingWebhookConfiguration whose `caBundle` the Lease holder keeps current;
    /// empty when there is none (sidecar injection not registered).
    #[arg(
        long,
        env = "SEXTANT_INJECTOR_WEBHOOK_CONFIG",
        default_value = "sextant-sidecar-injector"
    )]
    pub injector_webhook_config: String,
}

/// Where the injector's configuration comes from besides its own flags.
pub struct Defaults<'a> {
    /// The xDS address when `--sidecar-xds-address` is not given.
    pub xds_address: String,
    /// A name Sextant's serving certificate carries, expected when the xDS address's host is
    /// an IP address and `--sidecar-xds-server-name` is not given.
    pub server_name: String,
    /// This cluster's id.
    pub cluster_id: &'a str,
    /// This cluster's network, if `--cluster-network` gives it one.
    pub network: Option<&'a str>,
    /// `--domain-suffix`.
    pub domain_suffix: &'a str,
}

impl InjectArgs {
    /// The injector's configuration, or which flag is wrong.
    pub fn config(&self, defaults: Defaults<'_>) -> Result<InjectConfig, String> {
        let optional = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
        let address = self
            .sidecar_xds_address
            .clone()
            .unwrap_or(defaults.xds_address);
        let xds_address = values::host_port(&address)
            .map_err(|e| format!("--sidecar-xds-address {address:?}: {e}"))?;
        if let Some(name) = &self.sidecar_xds_server_name {
            values::dns_name(name)
                .map_err(|e| format!("--sidecar-xds-server-name {name:?}: {e}"))?;
        }
        let is_ip = xds_address.host.parse::<std::net::IpAddr>().is_ok();
        let xds_server_name = self
            .sidecar_xds_server_name
            .clone()
            .or_else(|| is_ip.then_some(defaults.server_name));
        let config = InjectConfig {
            proxy_image: self.sidecar_image.clone(),
            init_image: self.sidecar_init_image.clone(),
            xds_address,
            xds_server_name,
            resources: Resources {
                cpu_request: optional(&self.sidecar_cpu_request),
                memory_request: optional(&self.sidecar_memory_request),
                cpu_limit: optional(&self.sidecar_cpu_limit),
                memory_limit: optional(&self.sidecar_memory_limit),
            },
            log_level: self.sidecar_log_level.clone(),
            component_log_level: self.sidecar_component_log_level.clone(),
            concurrency: self.sidecar_concurrency,
            uid: self.sidecar_uid,
            native_sidecar: self.sidecar_native,
            cluster_id: defaults.cluster_id.to_owned(),
            network: defaults.network.map(str::to_owned),
            domain_suffix: defaults.domain_suffix.to_owned(),
            ..InjectConfig::default()
        };
        config.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        inject: InjectArgs,
    }

    fn config(args: &[&str]) -> Result<InjectConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.inject.config(Defaults {
            xds_address: "sextant.mesh.svc:15012".to_owned(),
            server_name: "sextant.mesh.svc".to_owned(),
            cluster_id: "Kubernetes",
            network: Some("net-a"),
            domain_suffix: "cluster.local",
        })
    }

    #[test]
    fn defaults_name_sextants_service_and_istios_settings() {
        let c = config(&[]).expect("valid");
        assert_eq!(c.xds_address.to_string(), "sextant.mesh.svc:15012");
        assert_eq!(c.xds_server_name, None);
        assert_eq!(c.network.as_deref(), Some("net-a"));
        assert_eq!(c.resources.memory_limit.as_deref(), Some("1024Mi"));
        assert_eq!(c.init_image, DEFAULT_INIT_IMAGE);
        assert!(!c.native_sidecar);
        assert!(config(&["--sidecar-native"]).expect("valid").native_sidecar);
    }

    #[test]
    fn an_ip_address_is_checked_against_sextants_service_name() {
        let c = config(&["--sidecar-xds-address", "10.0.0.9:15012"]).expect("valid");
        assert_eq!(c.xds_server_name.as_deref(), Some("sextant.mesh.svc"));
        let named = config(&[
            "--sidecar-xds-address",
            "10.0.0.9:15012",
            "--sidecar-xds-server-name",
            "istiod.istio-system.svc",
        ])
        .expect("valid");
        assert_eq!(
            named.xds_server_name.as_deref(),
            Some("istiod.istio-system.svc")
        );
    }

    #[test]
    fn empty_resources_are_unset_and_bad_flags_are_named() {
        let c = config(&["--sidecar-cpu-limit", ""]).expect("valid");
        assert_eq!(c.resources.cpu_limit, None);
        for (flag, value) in [
            ("--sidecar-memory-request", "lots"),
            ("--sidecar-log-level", "loud"),
            ("--sidecar-xds-address", "sextant"),
            ("--sidecar-xds-server-name", "not a name"),
            ("--sidecar-image", "two words"),
        ] {
            let error = config(&[flag, value]).expect_err(flag);
            assert!(error.contains(flag), "{error}");
        }
    }
}
