//! The capture rules of one address family, in the order Istio's `istio-iptables` writes
//! them (tools/istio-iptables/pkg/capture/run.go), as data that either backend renders.

use crate::{
    cidr::Cidr,
    config::{CaptureConfig, InterceptionMode, PortList, Ranges},
};

/// The mark Envoy's outbound traffic to its own Pod gets under TPROXY, so that it is told
/// apart from the application's loopback traffic (Istio's `OutboundMark`).
pub const OUTBOUND_MARK: u32 = 1338;

/// An address family: each has its own ruleset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`iptables`, `table ip`).
    V4,
    /// IPv6 (`ip6tables`, `table ip6`).
    V6,
}

impl Family {
    /// The loopback address applications use to reach each other and Envoy without capture.
    pub fn loopback(self) -> Cidr {
        match self {
            Family::V4 => Cidr::host([127, 0, 0, 1].into()),
            Family::V6 => Cidr::host(std::net::Ipv6Addr::LOCALHOST.into()),
        }
    }

    /// The source Envoy binds to when it passes inbound traffic through to the application
    /// (`127.0.0.6`, `::6`), so that this traffic is not captured again.
    pub fn passthrough_source(self) -> Cidr {
        match self {
            Family::V4 => Cidr::host([127, 0, 0, 6].into()),
            Family::V6 => Cidr::host([0, 0, 0, 0, 0, 0, 0, 6].into()),
        }
    }

    fn holds(self, cidr: &Cidr) -> bool {
        cidr.is_ipv4() == (self == Family::V4)
    }
}

/// The netfilter table a rule is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// TPROXY marks and diversion.
    Mangle,
    /// Redirects.
    Nat,
}

/// A chain: a built-in hook or one of Istio's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chain {
    /// Packets arriving.
    Prerouting,
    /// Packets the Pod sends.
    Output,
    /// `ISTIO_INBOUND`: which inbound packets are captured.
    Inbound,
    /// `ISTIO_REDIRECT`: to Envoy's outbound listener.
    Redirect,
    /// `ISTIO_IN_REDIRECT`: to Envoy's inbound listener.
    InRedirect,
    /// `ISTIO_OUTPUT`: which outbound packets are captured.
    IstioOutput,
    /// `ISTIO_DIVERT`: marks packets of connections already captured by TPROXY.
    Divert,
    /// `ISTIO_TPROXY`: hands new inbound connections to Envoy by TPROXY.
    Tproxy,
    /// `ISTIO_DROP`: drops what it is given (`--drop-invalid`).
    Drop,
}

impl Chain {
    /// The chain's iptables name.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Output => "OUTPUT",
            Chain::Inbound => "ISTIO_INBOUND",
            Chain::Redirect => "ISTIO_REDIRECT",
            Chain::InRedirect => "ISTIO_IN_REDIRECT",
            Chain::IstioOutput => "ISTIO_OUTPUT",
            Chain::Divert => "ISTIO_DIVERT",
            Chain::Tproxy => "ISTIO_TPROXY",
            Chain::Drop => "ISTIO_DROP",
        }
    }

    /// Whether the chain is a built-in hook, shared with whoever else filters the Pod.
    pub fn is_builtin(self) -> bool {
        matches!(self, Chain::Prerouting | Chain::Output)
    }
}

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Its name in both syntaxes.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One condition of a rule. A port condition needs a [`Match::Protocol`] before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// `-p`.
    Protocol(Protocol),
    /// `-i`.
    InInterface(String),
    /// `-o`.
    OutInterface(String),
    /// `-s`.
    Source(Cidr),
    /// `-d`.
    Destination(Cidr),
    /// `! -d`.
    NotDestination(Cidr),
    /// `--dport`.
    DestinationPort(u16),
    /// `! --dport`.
    NotDestinationPort(u16),
    /// `-m owner --uid-owner`.
    Uid(u32),
    /// `-m owner ! --uid-owner`.
    NotUid(u32),
    /// `-m owner --gid-owner`.
    Gid(u32),
    /// `-m owner ! --gid-owner`.
    NotGid(u32),
    /// `-m mark --mark`.
    Mark(u32),
    /// `-m mark ! --mark`.
    NotMark(u32),
    /// `-m connmark --mark`.
    ConnMark(u32),
    /// `-m conntrack --ctstate RELATED,ESTABLISHED`.
    Established,
    /// `-m conntrack --ctstate INVALID`.
    Invalid,
}

/// What a rule does with the packets it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Leave this chain (uncaptured, from a built-in chain).
    Return,
    /// Accept.
    Accept,
    /// Go through another chain.
    Jump(Chain),
    /// NAT to a local port.
    Redirect(u16),
    /// Hand to a local port by TPROXY, marking the packet.
    Tproxy {
        /// Envoy's inbound port.
        port: u16,
        /// The mark.
        mark: u32,
    },
    /// Set the packet mark.
    SetMark(u32),
    /// Copy the packet mark to the connection.
    SaveMark,
    /// Copy the connection mark to the packet.
    RestoreMark,
    /// Drop.
    Drop,
}

/// Where a rule goes in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// At the end (`-A`).
    Append,
    /// At this 1-based position (`-I CHAIN N`), ahead of what is there.
    Insert(usize),
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its table.
    pub table: Table,
    /// Its chain.
    pub chain: Chain,
    /// Where it goes.
    pub position: Position,
    /// Its conditions, in Istio's order.
    pub matches: Vec<Match>,
    /// What it does.
    pub target: Target,
}

impl Rule {
    /// The protocol the rule matches, which its port conditions are of.
    pub fn protocol(&self) -> Option<Protocol> {
        self.matches.iter().find_map(|m| match m {
            Match::Protocol(p) => Some(*p),
            _ => None,
        })
    }
}

/// The rules for `family`, in Istio's order.
pub fn ruleset(config: &CaptureConfig, family: Family) -> Vec<Rule> {
    let mut rules = Builder::default();
    let tproxy = config.inbound_mode == InterceptionMode::Tproxy;
    exclude_interfaces(&mut rules, config, tproxy);
    for iface in &config.reroute_interfaces {
        rules.insert(
            Table::Nat,
            Chain::Prerouting,
            1,
            vec![in_iface(iface)],
            Target::Return,
        );
    }
    use Match::*;
    if config.drop_invalid {
        // A packet outside the TCP window would be answered with a reset that ends the
        // connection; dropped, it is retransmitted (Istio's `--drop-invalid`).
        let invalid = vec![Invalid];
        rules.append(
            Table::Mangle,
            Chain::Prerouting,
            invalid,
            Target::Jump(Chain::Drop),
        );
        rules.append(Table::Mangle, Chain::Drop, vec![], Target::Drop);
    }
    let tcp = || Protocol(self::Protocol::Tcp);
    rules.append(
        Table::Nat,
        Chain::Inbound,
        vec![tcp(), DestinationPort(config.inbound_tunnel_port)],
        Target::Return,
    );
    rules.append(
        Table::Nat,
        Chain::Redirect,
        vec![tcp()],
        Target::Redirect(config.outbound_port),
    );
    rules.append(
        Table::Nat,
        Chain::InRedirect,
        vec![tcp()],
        Target::Redirect(config.inbound_capture_port),
    );
    inbound(&mut rules, config, family, tproxy);
    rules.append(
        Table::Nat,
        Chain::Output,
        vec![],
        Target::Jump(Chain::IstioOutput),
    );
    outbound(&mut rules, config, family);
    if tproxy {
        tproxy_marks(&mut rules, config, family);
    }
    rules.0
}

#[derive(Default)]
struct Builder(Vec<Rule>);

impl Builder {
    fn append(&mut self, table: Table, chain: Chain, matches: Vec<Match>, target: Target) {
        let position = Position::Append;
        self.0.push(Rule {
            table,
            chain,
            position,
            matches,
            target,
        });
    }

    fn insert(
        &mut self,
        table: Table,
        chain: Chain,
        at: usize,
        matches: Vec<Match>,
        target: Target,
    ) {
        let position = Position::Insert(at);
        self.0.push(Rule {
            table,
            chain,
            position,
            matches,
            target,
        });
    }
}

fn in_iface(name: &str) -> Match {
    Match::InInterface(name.into())
}

fn lo() -> Match {
    Match::OutInterface("lo".into())
}

fn exclude_interfaces(rules: &mut Builder, config: &CaptureConfig, tproxy: bool) {
    let tables: &[Table] = if tproxy {
        &[Table::Nat, Table::Mangle]
    } else {
        &[Table::Nat]
    };
    for &table in tables {
        for iface in &config.exclude_interfaces {
            rules.append(
                table,
                Chain::Prerouting,
                vec![in_iface(iface)],
                Target::Return,
            );
            let out = Match::OutInterface(iface.clone());
            rules.append(table, Chain::Output, vec![out], Target::Return);
        }
    }
}

/// Inbound capture (Istio's `handleInboundPortsInclude`): REDIRECT in nat, or TPROXY in
/// mangle with established connections diverted to the loopback interface.
fn inbound(rules: &mut Builder, config: &CaptureConfig, family: Family, tproxy: bool) {
    use Match::*;
    let tcp = || Protocol(self::Protocol::Tcp);
    if config.inbound_include.is_empty() {
        return;
    }
    let table = if tproxy {
        let mark = config.tproxy_mark;
        rules.append(Table::Mangle, Chain::Divert, vec![], Target::SetMark(mark));
        rules.append(Table::Mangle, Chain::Divert, vec![], Target::Accept);
        let not_loopback = NotDestination(family.loopback());
        let port = config.inbound_capture_port;
        let target = Target::Tproxy { port, mark };
        rules.append(
            Table::Mangle,
            Chain::Tproxy,
            vec![not_loopback, tcp()],
            target,
        );
        Table::Mangle
    } else {
        Table::Nat
    };
    rules.append(
        table,
        Chain::Prerouting,
        vec![tcp()],
        Target::Jump(Chain::Inbound),
    );
    let capture = |rules: &mut Builder, port: Option<u16>| {
        let on_port = || [tcp()].into_iter().chain(port.map(DestinationPort));
        if tproxy {
            let established = on_port().chain([Established]).collect();
            rules.append(
                table,
                Chain::Inbound,
                established,
                Target::Jump(Chain::Divert),
            );
            rules.append(
                table,
                Chain::Inbound,
                on_port().collect(),
                Target::Jump(Chain::Tproxy),
            );
        } else {
            let target = Target::Jump(Chain::InRedirect);
            rules.append(table, Chain::Inbound, on_port().collect(), target);
        }
    };
    match &config.inbound_include {
        PortList::All => {
            for &port in &config.inbound_exclude {
                let matches = vec![tcp(), DestinationPort(port)];
                rules.append(table, Chain::Inbound, matches, Target::Return);
            }
            capture(rules, None);
        }
        PortList::Only(ports) => {
            for &port in ports {
                capture(rules, Some(port));
            }
        }
    }
}

/// Outbound capture, the `ISTIO_OUTPUT` chain: excluded ports, Envoy's own traffic and
/// loopback first, then excluded ranges, then what is captured.
fn outbound(rules: &mut Builder, config: &CaptureConfig, family: Family) {
    use Match::*;
    let tcp = || Protocol(self::Protocol::Tcp);
    let out = |rules: &mut Builder, matches: Vec<Match>, target: Target| {
        rules.append(Table::Nat, Chain::IstioOutput, matches, target);
    };
    for &port in &config.outbound_ports_exclude {
        out(rules, vec![tcp(), DestinationPort(port)], Target::Return);
        let udp = Protocol(self::Protocol::Udp);
        out(rules, vec![udp, DestinationPort(port)], Target::Return);
    }
    out(
        rules,
        vec![lo(), Source(family.passthrough_source())],
        Target::Return,
    );
    let owners = [
        (
            &config.proxy_uids,
            Uid as fn(u32) -> Match,
            NotUid as fn(u32) -> Match,
        ),
        (&config.proxy_gids, Gid, NotGid),
    ];
    for (ids, owned, not_owned) in owners {
        for &id in ids {
            // The application calling its own Pod's address through a Service: Envoy's
            // outbound side sends it over loopback to its inbound side.
            let to_self = vec![
                lo(),
                NotDestination(family.loopback()),
                tcp(),
                NotDestinationPort(config.inbound_tunnel_port),
                owned(id),
            ];
            out(rules, to_self, Target::Jump(Chain::InRedirect));
            // The application calling itself over loopback by address: not captured.
            if !config.captures_loopback() {
                out(rules, vec![lo(), not_owned(id)], Target::Return);
            }
            // Everything else Envoy sends, whatever the protocol: never captured again.
            out(rules, vec![owned(id)], Target::Return);
        }
    }
    out(rules, vec![Destination(family.loopback())], Target::Return);
    for cidr in config.outbound_exclude.iter().filter(|c| family.holds(c)) {
        out(rules, vec![Destination(*cidr)], Target::Return);
    }
    for &port in &config.outbound_ports_include {
        out(
            rules,
            vec![tcp(), DestinationPort(port)],
            Target::Jump(Chain::Redirect),
        );
    }
    let redirect = Target::Jump(Chain::Redirect);
    match &config.outbound_include {
        Ranges::All => {
            out(rules, vec![], redirect);
            for iface in &config.reroute_interfaces {
                rules.insert(
                    Table::Nat,
                    Chain::Prerouting,
                    1,
                    vec![in_iface(iface)],
                    redirect,
                );
            }
        }
        Ranges::Only(cidrs) => {
            for cidr in cidrs.iter().filter(|c| family.holds(c)) {
                for iface in &config.reroute_interfaces {
                    let matches = vec![in_iface(iface), Destination(*cidr)];
                    rules.insert(Table::Nat, Chain::Prerouting, 1, matches, redirect);
                }
                out(rules, vec![Destination(*cidr)], redirect);
            }
        }
    }
}

/// TPROXY's marks: the connection keeps the inbound mark so replies are routed back through
/// loopback to Envoy, and Envoy's own loopback traffic to the application is told apart.
fn tproxy_marks(rules: &mut Builder, config: &CaptureConfig, family: Family) {
    use Match::*;
    let tcp = || Protocol(self::Protocol::Tcp);
    let mark = config.tproxy_mark;
    let mangle = Table::Mangle;
    rules.append(
        mangle,
        Chain::Prerouting,
        vec![tcp(), Mark(mark)],
        Target::SaveMark,
    );
    rules.append(
        mangle,
        Chain::Output,
        vec![tcp(), lo(), Mark(mark)],
        Target::Return,
    );
    let owners = [
        (&config.proxy_uids, Uid as fn(u32) -> Match),
        (&config.proxy_gids, Gid),
    ];
    for (ids, owned) in owners {
        for &id in ids {
            let matches = vec![NotDestination(family.loopback()), tcp(), lo(), owned(id)];
            rules.append(
                mangle,
                Chain::Output,
                matches,
                Target::SetMark(OUTBOUND_MARK),
            );
        }
    }
    rules.append(
        mangle,
        Chain::Output,
        vec![tcp(), ConnMark(mark)],
        Target::RestoreMark,
    );
    rules.insert(
        mangle,
        Chain::Inbound,
        1,
        vec![tcp(), Mark(mark)],
        Target::Return,
    );
    let passthrough = vec![tcp(), Source(family.passthrough_source()), in_iface("lo")];
    rules.insert(mangle, Chain::Inbound, 2, passthrough, Target::Return);
    let app_loopback = vec![tcp(), in_iface("lo"), NotMark(OUTBOUND_MARK)];
    rules.insert(mangle, Chain::Inbound, 3, app_loopback, Target::Return);
}

/// The tables the rules use, in `iptables-restore`'s order.
pub fn tables(rules: &[Rule]) -> Vec<Table> {
    let mut tables: Vec<Table> = rules.iter().map(|r| r.table).collect();
    tables.sort();
    tables.dedup();
    tables
}

/// Istio's chains of `table` the rules create: those with rules in the order they first
/// appear, then those only jumped to.
pub fn chains(rules: &[Rule], table: Table) -> Vec<Chain> {
    let in_table = || rules.iter().filter(|r| r.table == table);
    let owners = in_table().map(|r| r.chain);
    let targets = in_table().filter_map(|r| match r.target {
        Target::Jump(chain) => Some(chain),
        _ => None,
    });
    let mut chains = Vec::new();
    for chain in owners.chain(targets) {
        if !chain.is_builtin() && !chains.contains(&chain) {
            chains.push(chain);
        }
    }
    chains
}

/// The rules of one chain in the order they end up in, inserts applied: what the chain
/// holds when it held nothing before.
pub fn in_final_order(rules: &[Rule], table: Table, chain: Chain) -> Vec<&Rule> {
    let mut ordered: Vec<&Rule> = Vec::new();
    for rule in rules
        .iter()
        .filter(|r| r.table == table && r.chain == chain)
    {
        match rule.position {
            Position::Append => ordered.push(rule),
            Position::Insert(at) => ordered.insert(at.saturating_sub(1).min(ordered.len()), rule),
        }
    }
    ordered
}
