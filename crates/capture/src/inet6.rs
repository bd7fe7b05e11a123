//! Whether a network namespace has IPv6, from its `/proc/net/if_inet6`.

use std::net::Ipv6Addr;

/// An IPv6 address of the namespace and the interface that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Interface {
    /// The address.
    pub address: Ipv6Addr,
    /// The interface's name.
    pub interface: String,
}

/// The first address in `if_inet6` (the text of `/proc/net/if_inet6`) a Pod is reached at over
/// IPv6: one on an interface other than `lo` that is neither loopback nor link-local (every
/// interface gets a link-local address, IPv6 Pod or not).
pub fn ipv6_address(if_inet6: &str) -> Option<Ipv6Interface> {
    if_inet6.lines().find_map(|line| {
        // ADDRESS IFINDEX PREFIX SCOPE FLAGS NAME
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [hex, _, _, _, _, name] = fields.as_slice() else {
            return None;
        };
        let address = Ipv6Addr::from(u128::from_str_radix(hex, 16).ok()?);
        let reached = *name != "lo" && !address.is_loopback() && !address.is_unicast_link_local();
        reached.then(|| Ipv6Interface {
            address,
            interface: name.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{Ipv6Interface, ipv6_address};

    #[test]
    fn a_global_address_on_an_interface_is_ipv6() {
        let text = "\
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000a8c1abfffe2d1a4b 02 40 20 80     eth0
fd000000000000000000000000000010 02 40 00 80     eth0
";
        let found = Ipv6Interface {
            address: "fd00::10".parse().expect("an address"),
            interface: "eth0".into(),
        };
        assert_eq!(ipv6_address(text), Some(found));
    }

    #[test]
    fn loopback_link_local_and_lo_addresses_are_not() {
        let text = "\
00000000000000000000000000000001 01 80 10 80       lo
00000000000000000000000000000006 01 80 00 80       lo
fe80000000000000a8c1abfffe2d1a4b 02 40 20 80     eth0
";
        assert_eq!(ipv6_address(text), None);
        assert_eq!(ipv6_address(""), None);
        assert_eq!(ipv6_address("garbage\n"), None);
    }
}
