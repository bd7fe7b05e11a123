//! What applying a capture runs, step by step, for a backend: first the removal of whatever
//! earlier runs left (in any mode, backend or family), then the rules as the backend's input
//! and the `ip` commands Istio runs beside them.

use std::fmt;

use crate::{
    config::{CaptureConfig, InterceptionMode},
    iptables, nft,
    rules::{self, Family, Rule},
};

/// How the rules reach the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-restore --noflush` and `ip6tables-restore --noflush`, Istio's chains.
    Iptables,
    /// `nft -f -`, a table of Sextant's own per family.
    Nft,
}

impl Backend {
    /// Its name as `--backend` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nft => "nft",
        }
    }
}

/// A program a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `iptables-restore`.
    IptablesRestore,
    /// `ip6tables-restore`.
    Ip6tablesRestore,
    /// `nft`.
    Nft,
    /// `ip` (iproute2).
    Ip,
    /// `iptables-save`.
    IptablesSave,
    /// `ip6tables-save`.
    Ip6tablesSave,
}

impl Tool {
    /// The program's name, as looked up on `PATH`.
    pub fn program(self) -> &'static str {
        match self {
            Tool::IptablesRestore => "iptables-restore",
            Tool::Ip6tablesRestore => "ip6tables-restore",
            Tool::Nft => "nft",
            Tool::Ip => "ip",
            Tool::IptablesSave => "iptables-save",
            Tool::Ip6tablesSave => "ip6tables-save",
        }
    }

    /// The family's `iptables-restore`.
    pub fn restore(family: Family) -> Tool {
        match family {
            Family::V4 => Tool::IptablesRestore,
            Family::V6 => Tool::Ip6tablesRestore,
        }
    }

    /// The family's `iptables-save`.
    pub fn save(family: Family) -> Tool {
        match family {
            Family::V4 => Tool::IptablesSave,
            Family::V6 => Tool::Ip6tablesSave,
        }
    }
}

/// The routing protocol number (`proto 83`, unassigned in iproute2's `rt_protos`) on the `ip
/// rule` and `ip route` entries Sextant adds, so that a later run finds them whatever mark and
/// table they were made with.
pub const ROUTE_PROTOCOL: u8 = 83;

/// One command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The program.
    pub tool: Tool,
    /// Its arguments.
    pub args: Vec<String>,
    /// What it reads on standard input.
    pub stdin: Option<String>,
}

impl Step {
    fn new(tool: Tool, args: &[&str], stdin: Option<String>) -> Step {
        let args = args.iter().map(|a| a.to_string()).collect();
        Step { tool, args, stdin }
    }

    /// The command line, for messages.
    pub fn command(&self) -> String {
        std::iter::once(self.tool.program())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How often a deletion runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Once (a flush).
    Once,
    /// Again while it succeeds: it deletes one copy at a time.
    WhileSucceeds,
}

/// Part of removing what earlier runs of `sextant iptables` (or Istio's `istio-iptables`) left
/// in the namespace, in either mode, backend and family, before a run applies its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Istio's chains in the nat and mangle tables of the family, and the rules elsewhere
    /// that jump to them or carry Sextant's comment, as the family's `iptables-save` shows
    /// them, deleted with one `iptables-restore --noflush`. Skipped when `iptables-save` is
    /// missing or fails.
    Iptables(Family),
    /// A deletion. Its failure means there was nothing to delete, and without its program
    /// nothing can have been added.
    Delete {
        /// The command.
        step: Step,
        /// How often it runs.
        repeat: Repeat,
    },
}

/// What applying a capture runs, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The removal of what earlier runs left, first.
    pub cleanup: Vec<Cleanup>,
    /// The steps that apply the capture; the first failure ends the run.
    pub steps: Vec<Step>,
}

impl Plan {
    /// The plan for `config` on `backend`, with rules for each of `families`.
    pub fn new(config: &CaptureConfig, backend: Backend, families: &[Family]) -> Plan {
        let rulesets: Vec<(Family, Vec<Rule>)> = families
            .iter()
            .map(|&family| (family, rules::ruleset(config, family)))
            .collect();
        let mut steps = Vec::new();
        match backend {
            Backend::Iptables => {
                for (family, rules) in &rulesets {
                    let input = Some(iptables::restore(rules));
                    steps.push(Step::new(Tool::restore(*family), &["--noflush"], input));
                }
            }
            Backend::Nft => {
                let script = Some(nft::script(&rulesets));
                steps.push(Step::new(Tool::Nft, &["-f", "-"], script));
            }
        }
        steps.extend(routing(config, families));
        Plan {
            cleanup: cleanup(),
            steps,
        }
    }

    /// Only the removal of what earlier runs left (`--cleanup-only`).
    pub fn cleanup_only() -> Plan {
        Plan {
            cleanup: cleanup(),
            steps: Vec::new(),
        }
    }
}

/// Everything any run may have added, whatever its flags: both families' chains, both nft
/// tables, the policy routing and the `::6` address.
fn cleanup() -> Vec<Cleanup> {
    let delete = |tool, args: &[&str], repeat| Cleanup::Delete {
        step: Step::new(tool, args, None),
        repeat,
    };
    let proto = ROUTE_PROTOCOL.to_string();
    let mut cleanup = vec![Cleanup::Iptables(Family::V4), Cleanup::Iptables(Family::V6)];
    for family in ["ip", "ip6"] {
        let args = ["delete", "table", family, nft::TABLE];
        cleanup.push(delete(Tool::Nft, &args, Repeat::WhileSucceeds));
    }
    for family in ["-4", "-6"] {
        let rule = [family, "rule", "del", "protocol", &proto];
        cleanup.push(delete(Tool::Ip, &rule, Repeat::WhileSucceeds));
        let route = [family, "route", "flush", "table", "all", "proto", &proto];
        cleanup.push(delete(Tool::Ip, &route, Repeat::Once));
    }
    let address = ["-6", "addr", "del", PASSTHROUGH_V6, "dev", "lo"];
    cleanup.push(delete(Tool::Ip, &address, Repeat::WhileSucceeds));
    cleanup
}

/// The address Envoy's inbound passthrough binds to on IPv6.
const PASSTHROUGH_V6: &str = "::6/128";

/// Istio's `ip` commands: the `::6` address Envoy's inbound passthrough binds to on IPv6,
/// and under TPROXY the policy routing that delivers marked packets to the loopback
/// interface, each entry marked [`ROUTE_PROTOCOL`].
fn routing(config: &CaptureConfig, families: &[Family]) -> Vec<Step> {
    let mut steps = Vec::new();
    if families.contains(&Family::V6) {
        let args = ["-6", "addr", "replace", PASSTHROUGH_V6, "dev", "lo"];
        steps.push(Step::new(Tool::Ip, &args, None));
    }
    if config.inbound_mode != InterceptionMode::Tproxy || config.inbound_include.is_empty() {
        return steps;
    }
    let mark = config.tproxy_mark.to_string();
    let table = config.tproxy_route_table.to_string();
    let proto = ROUTE_PROTOCOL.to_string();
    for family in families {
        let (fam, default) = match family {
            Family::V4 => ("-4", "0.0.0.0/0"),
            Family::V6 => ("-6", "::/0"),
        };
        let rule = [
            fam, "rule", "add", "fwmark", &mark, "lookup", &table, "protocol", &proto,
        ];
        steps.push(Step::new(Tool::Ip, &rule, None));
        let route = [
            fam, "route", "replace", "local", default, "dev", "lo", "table", &table, "proto",
            &proto,
        ];
        steps.push(Step::new(Tool::Ip, &route, None));
    }
    steps
}

/// The plan as `--dry-run` prints it: each command as a `#` line (a comment to
/// `iptables-restore` and `nft`), followed by what it reads.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.cleanup.is_empty() {
            writeln!(
                f,
                "## remove what earlier runs left (a failed deletion: nothing to delete)"
            )?;
        }
        for cleanup in &self.cleanup {
            match cleanup {
                Cleanup::Iptables(family) => writeln!(
                    f,
                    "# {} --noflush   (deleting the ISTIO_* chains of nat and mangle in `{}` \
                     and the rules that jump to them or carry `-m comment --comment {}`)",
                    Tool::restore(*family).program(),
                    Tool::save(*family).program(),
                    iptables::COMMENT,
                )?,
                Cleanup::Delete { step, repeat } => {
                    let repeat = match repeat {
                        Repeat::Once => "",
                        Repeat::WhileSucceeds => "   (repeated while it succeeds)",
                    };
                    writeln!(f, "# {}{repeat}", step.command())?;
                }
            }
        }
        if !self.steps.is_empty() {
            writeln!(f, "## apply")?;
        }
        for step in &self.steps {
            writeln!(f, "# {}", step.command())?;
            if let Some(stdin) = &step.stdin {
                f.write_str(stdin)?;
            }
        }
        Ok(())
    }
}
