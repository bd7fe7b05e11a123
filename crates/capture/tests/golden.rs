//! Golden tests: each `cases/NAME.flags` is a set of `istio-iptables` flags; its snapshot
//! (`cases/snapshots/NAME.snap`) is the plan for both backends, as `--dry-run` prints it,
//! reviewed like code.
//!
//! A case file has one `LONG-FLAG=VALUE` line per flag that differs from the defaults
//! (`istio-inbound-ports=9080,8080`; an empty value is empty, as in Istio's init arguments;
//! `drop-invalid=true`), `# ` lines describing it, and optionally `ipv6=on` for rules of both
//! families.

use std::path::{Path, PathBuf};

use sextant_capture::{Backend, CaptureConfig, Family, Flags, Plan};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

struct Case {
    flags: Flags,
    families: Vec<Family>,
}

fn read_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut flags = Flags::default();
    let mut families = vec![Family::V4];
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: {line:?} is not NAME=VALUE", path.display()));
        let value = value.to_string();
        let field = match name {
            "ipv6" => {
                assert_eq!(value, "on", "{}: ipv6 is `on` or absent", path.display());
                families.push(Family::V6);
                continue;
            }
            "drop-invalid" => {
                flags.drop_invalid = value.parse().unwrap_or_else(|_| {
                    panic!("{}: drop-invalid is true or false", path.display())
                });
                continue;
            }
            "envoy-port" => &mut flags.envoy_port,
            "inbound-capture-port" => &mut flags.inbound_capture_port,
            "inbound-tunnel-port" => &mut flags.inbound_tunnel_port,
            "proxy-uid" => &mut flags.proxy_uid,
            "proxy-gid" => &mut flags.proxy_gid,
            "istio-inbound-interception-mode" => &mut flags.inbound_interception_mode,
            "istio-inbound-tproxy-mark" => &mut flags.inbound_tproxy_mark,
            "istio-inbound-tproxy-route-table" => &mut flags.inbound_tproxy_route_table,
            "istio-service-cidr" => &mut flags.service_cidr,
            "istio-service-exclude-cidr" => &mut flags.service_exclude_cidr,
            "istio-inbound-ports" => &mut flags.inbound_ports,
            "istio-local-exclude-ports" => &mut flags.local_exclude_ports,
            "istio-outbound-ports" => &mut flags.outbound_ports,
            "istio-local-outbound-ports-exclude" => &mut flags.local_outbound_ports_exclude,
            "istio-exclude-interfaces" => &mut flags.exclude_interfaces,
            "kube-virt-interfaces" => &mut flags.kube_virt_interfaces,
            other => panic!("{}: unknown flag {other:?}", path.display()),
        };
        *field = value;
    }
    Case { flags, families }
}

fn render(case: &Case) -> String {
    let config = CaptureConfig::parse(&case.flags).unwrap_or_else(|e| panic!("{e}"));
    let iptables = Plan::new(&config, Backend::Iptables, &case.families);
    let nft = Plan::new(&config, Backend::Nft, &case.families);
    format!("## --backend iptables\n{iptables}\n## --backend nft\n{nft}")
}

#[test]
fn capture_rules_match_their_goldens() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/cases")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "flags"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 8, "the cases are missing: {paths:?}");
    for path in paths {
        let name = path
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let output = render(&read_case(&path));
        insta::with_settings!({
            snapshot_path => "cases/snapshots",
            prepend_module_to_snapshot => false,
            input_file => &path,
        }, {
            insta::assert_snapshot!(name, output);
        });
    }
}
