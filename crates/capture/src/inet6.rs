//! Whether a network namespace has IPv6, from its `/proc/net/if_inet6`.

use std::net::Ipv6Addr;

/// Whether `if_inet6` (the text of `/proc/net/if_inet6`) lists an address a Pod is reached
/// at over IPv6: one on an interface other than `lo` that is neither loopback nor link-local
/// (every interface gets a link-local address, IPv6 Pod or not).
pub fn has_ipv6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|line| {
        // ADDRESS IFINDEX PREFIX SCOPE FLAGS NAME
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [hex, _, _, _, _, name] = fields.as_slice() else {
            return false;
        };
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            return false;
        };
        let addr = Ipv6Addr::from(bits);
        *name != "lo" && !addr.is_loopback() && !addr.is_unicast_link_local()
    })
}

#[cfg(test)]
mod tests {
    use super::has_ipv6;

    #[test]
    fn a_global_address_on_an_interface_is_ipv6() {
        let text = "\
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000a8c1abfffe2d1a4b 02 40 20 80     eth0
fd000000000000000000000000000010 02 40 00 80     eth0
";
        assert!(has_ipv6(text));
    }

    #[test]
    fn loopback_link_local_and_lo_addresses_are_not() {
        let text = "\
00000000000000000000000000000001 01 80 10 80       lo
00000000000000000000000000000006 01 80 00 80       lo
fe80000000000000a8c1abfffe2d1a4b 02 40 20 80     eth0
";
        assert!(!has_ipv6(text));
        assert!(!has_ipv6(""));
        assert!(!has_ipv6("garbage\n"));
    }
}
