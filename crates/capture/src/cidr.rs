//! An address range in CIDR form, as the range flags take it.

use std::{fmt, net::IpAddr, str::FromStr};

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` bits; `None` when `prefix` is longer than the
    /// address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        if prefix > max_prefix(addr) {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Some(Cidr { addr, prefix })
    }

    /// A single host: `/32` or `/128`.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix: max_prefix(addr),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Whether this is an IPv4 range.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether the network address is a loopback address (as Istio's test for an include
    /// range that asks to capture loopback traffic).
    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDRESS/PREFIX`, or a bare address for a single host.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let Some(prefix) = prefix else {
            return Ok(Cidr::host(addr));
        };
        let bits: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        Cidr::new(addr, bits).ok_or_else(|| {
            format!(
                "prefix length {bits} is longer than the address ({})",
                max_prefix(addr)
            )
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_are_cleared_and_bare_addresses_are_hosts() {
        let c: Cidr = "10.1.2.3/8".parse().expect("valid");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let c: Cidr = "2001:db8::1/32".parse().expect("valid");
        assert_eq!(c.to_string(), "2001:db8::/32");
        assert_eq!(
            "10.1.2.3".parse::<Cidr>().expect("valid").to_string(),
            "10.1.2.3/32"
        );
        assert_eq!("::1".parse::<Cidr>().expect("valid").to_string(), "::1/128");
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().expect("valid").to_string(),
            "0.0.0.0/0"
        );
        assert_eq!("::/0".parse::<Cidr>().expect("valid").to_string(), "::/0");
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let err = "10.0.0.0/33".parse::<Cidr>().expect_err("too long");
        assert!(err.contains("33") && err.contains("32"), "{err}");
        let err = "::/129".parse::<Cidr>().expect_err("too long");
        assert!(err.contains("129"), "{err}");
        let err = "10.0.0/8".parse::<Cidr>().expect_err("not an address");
        assert!(err.contains("\"10.0.0\""), "{err}");
        let err = "10.0.0.0/x".parse::<Cidr>().expect_err("not a length");
        assert!(err.contains("\"x\""), "{err}");
    }
}
