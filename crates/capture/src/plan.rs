//! What applying a capture runs, step by step, for a backend: the rules as the backend's
//! input, and the `ip` commands Istio runs beside them.

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
}

impl Tool {
    /// The program's name, as looked up on `PATH`.
    pub fn program(self) -> &'static str {
        match self {
            Tool::IptablesRestore => "iptables-restore",
            Tool::Ip6tablesRestore => "ip6tables-restore",
            Tool::Nft => "nft",
            Tool::Ip => "ip",
        }
    }

    fn restore(family: Family) -> Tool {
        match family {
            Family::V4 => Tool::IptablesRestore,
            Family::V6 => Tool::Ip6tablesRestore,
        }
    }
}

/// How often a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Once; its failure is the plan's.
    Once,
    /// Again while it succeeds: a deletion of whatever copies an earlier run left. Its
    /// failure means there is nothing (more) to delete.
    WhileSucceeds,
}

/// One command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The program.
    pub tool: Tool,
    /// Its arguments.
    pub args: Vec<String>,
    /// What it reads on standard input.
    pub stdin: Option<String>,
    /// How often it runs.
    pub repeat: Repeat,
}

impl Step {
    fn new(tool: Tool, args: &[&str], stdin: Option<String>, repeat: Repeat) -> Step {
        let args = args.iter().map(|a| a.to_string()).collect();
        Step {
            tool,
            args,
            stdin,
            repeat,
        }
    }

    /// The command line, for messages.
    pub fn command(&self) -> String {
        std::iter::once(self.tool.program())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The steps that apply a capture, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The steps.
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
                    let tool = Tool::restore(*family);
                    steps.extend(builtin_deletions(tool, rules));
                    let input = Some(iptables::restore(rules));
                    steps.push(Step::new(tool, &["--noflush"], input, Repeat::Once));
                }
            }
            Backend::Nft => {
                let script = Some(nft::script(&rulesets));
                steps.push(Step::new(Tool::Nft, &["-f", "-"], script, Repeat::Once));
            }
        }
        steps.extend(routing(config, families));
        Plan { steps }
    }
}

/// Declaring Istio's chains empties them, but the rules in built-in chains stay: each is
/// deleted while a copy is there.
fn builtin_deletions(tool: Tool, rules: &[Rule]) -> Vec<Step> {
    let mut inputs: Vec<String> = Vec::new();
    for rule in rules.iter().filter(|r| r.chain.is_builtin()) {
        let input = iptables::deletion(rule);
        if !inputs.contains(&input) {
            inputs.push(input);
        }
    }
    let step = |input| Step::new(tool, &["--noflush"], Some(input), Repeat::WhileSucceeds);
    inputs.into_iter().map(step).collect()
}

/// Istio's `ip` commands: the `::6` address Envoy's inbound passthrough binds to on IPv6,
/// and under TPROXY the policy routing that delivers marked packets to the loopback
/// interface (`ip rule add` adds a duplicate each time, so earlier copies go first).
fn routing(config: &CaptureConfig, families: &[Family]) -> Vec<Step> {
    let mut steps = Vec::new();
    if families.contains(&Family::V6) {
        let args = ["-6", "addr", "replace", "::6/128", "dev", "lo"];
        steps.push(Step::new(Tool::Ip, &args, None, Repeat::Once));
    }
    if config.inbound_mode != InterceptionMode::Tproxy || config.inbound_include.is_empty() {
        return steps;
    }
    let mark = config.tproxy_mark.to_string();
    let table = config.tproxy_route_table.to_string();
    for family in families {
        let (fam, default) = match family {
            Family::V4 => ("-4", "0.0.0.0/0"),
            Family::V6 => ("-6", "::/0"),
        };
        let rule = |verb| [fam, "rule", verb, "fwmark", &mark, "lookup", &table].map(String::from);
        steps.push(Step {
            tool: Tool::Ip,
            args: rule("del").into(),
            stdin: None,
            repeat: Repeat::WhileSucceeds,
        });
        steps.push(Step {
            tool: Tool::Ip,
            args: rule("add").into(),
            stdin: None,
            repeat: Repeat::Once,
        });
        let route = [
            fam, "route", "replace", "local", default, "dev", "lo", "table", &table,
        ];
        steps.push(Step::new(Tool::Ip, &route, None, Repeat::Once));
    }
    steps
}

/// The plan as `--dry-run` prints it: each command as a `#` line (a comment to
/// `iptables-restore` and `nft`), followed by what it reads.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            let repeat = match step.repeat {
                Repeat::Once => "",
                Repeat::WhileSucceeds => "   (repeated while it succeeds)",
            };
            writeln!(f, "# {}{repeat}", step.command())?;
            if let Some(stdin) = &step.stdin {
                f.write_str(stdin)?;
            }
        }
        Ok(())
    }
}
