//! The devices a scenario gives its VMs: network interfaces on named
//! switches (MAC and IPv4 address types, the stable default MAC) and disks,
//! and the checks that relate them across VMs (unknown switches, one MAC or
//! one address twice, an address outside its switch's subnet, switches a
//! direct boot cannot wire). Slot numbering follows the lab/hypervisor
//! contract: a VM's interfaces first, then its disks, in the order written.

use super::{error, BootMode, Scenario, ScenarioError, Vm};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;

/// virtio-mmio slots of QEMU's `virt` board, and so of every VM.
pub const VIRTIO_SLOTS: usize = 32;

/// One network interface of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetInterface {
    /// A name in the scenario's `switches`.
    pub switch: String,
    /// Unicast; when absent, [`default_mac`].
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Configured by the lab's `/init` before `LAB-READY`.
    #[serde(default)]
    pub ip: Option<Ipv4Cidr>,
}

/// One disk of a VM: empty (`size-mib`) or filled from an image of
/// `guest-images/images.yaml` (`image`, and `size-mib` when the disk is to
/// be larger than the image).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Disk {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub size_mib: Option<u64>,
    #[serde(default)]
    pub read_only: bool,
}

/// A MAC address, written `02:4c:41:42:00:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Multicast addresses (the group bit) cannot name one interface.
    pub fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("mac `{s}` is not a MAC address like `02:4c:41:42:00:01`");
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        let mac = MacAddr(bytes);
        if !mac.is_unicast() {
            return Err(format!(
                "mac `{s}` is a multicast address (the first byte is odd); an interface needs a unicast one"
            ));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// An IPv4 address with its prefix length, written `10.0.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The subnet, `10.0.0.0/24` for `10.0.0.1/24`.
    pub fn network(self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    /// Whether `addr` lies in this address's subnet.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether the address is the subnet's network or broadcast address,
    /// which no host may take (prefixes up to /30; /31 and /32 have none).
    pub fn is_network_or_broadcast(self) -> bool {
        if self.prefix >= 31 {
            return false;
        }
        let host = u32::from(self.addr) & !self.mask();
        host == 0 || host == !self.mask()
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("ip `{s}` is not an IPv4 address with a prefix like `10.0.0.1/24`");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix == 0 || prefix > 32 {
            return Err(format!("ip `{s}`: the prefix length must be 1 ..= 32"));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// The MAC of interface `index` of `vm` when the scenario names none: a
/// locally administered unicast address (`02:` then five bytes of
/// SHA-256 over the scenario name, the VM name and the index), the same on
/// every run and machine, different for different interfaces.
pub fn default_mac(scenario: &str, vm: &str, index: usize) -> MacAddr {
    let digest = Sha256::digest(format!("{scenario}\0{vm}\0{index}").as_bytes());
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    mac[1..].copy_from_slice(&digest[..5]);
    MacAddr(mac)
}

/// The name Linux gives a VM's interface `index` (virtio-net probes in slot
/// order, and interfaces take the lowest slots).
pub fn interface_name(index: usize) -> String {
    format!("eth{index}")
}

/// The devices of one VM in slot order: interfaces, then disks.
pub fn device_count(vm: &Vm) -> usize {
    vm.net.len() + vm.disks.len()
}

/// The checks across VMs and switches; each error points at the text.
pub(super) fn check(scenario: &Scenario, file: &Path, text: &str) -> Result<(), ScenarioError> {
    let err = |place: Option<(usize, usize)>, field: String, message: String| {
        let (line, column) = place.unwrap_or((1, 1));
        Err(ScenarioError::at(file, line, column, &field, message))
    };
    for (i, switch) in scenario.switches.iter().enumerate() {
        let valid = !switch.is_empty()
            && switch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid || scenario.switches[..i].contains(switch) {
            let what = if valid {
                "declared twice"
            } else {
                "must be letters, digits, `_` and `-`"
            };
            return err(
                Some(error::locate_value(text, switch)),
                format!("switches[{i}]"),
                format!("switch `{switch}` {what}"),
            );
        }
    }
    // (vm index, interface index, mac, address) of every interface so far.
    let mut seen: Vec<(usize, usize, MacAddr, Option<Ipv4Cidr>)> = Vec::new();
    for (v, vm) in scenario.vms.iter().enumerate() {
        let vm_line = error::locate_from(text, 1, "name", &vm.name).map_or(1, |(line, _)| line);
        let at = |key: &str, value: &str| error::locate_from(text, vm_line, key, value);
        if device_count(vm) > VIRTIO_SLOTS {
            return err(
                at("name", &vm.name),
                format!("vms[{v}]"),
                format!(
                    "{} interfaces and disks, but a VM has {VIRTIO_SLOTS} virtio-mmio slots",
                    device_count(vm)
                ),
            );
        }
        for (n, interface) in vm.net.iter().enumerate() {
            let field = |name: &str| format!("vms[{v}].net[{n}].{name}");
            if !scenario.switches.contains(&interface.switch) {
                let known = if scenario.switches.is_empty() {
                    "the scenario declares none in `switches`".to_owned()
                } else {
                    format!("known: {}", scenario.switches.join(", "))
                };
                return err(
                    at("switch", &interface.switch),
                    field("switch"),
                    format!("no switch named `{}` ({known})", interface.switch),
                );
            }
            let mac = scenario.mac(vm, n);
            if let Some(&(ov, on, ..)) = seen.iter().find(|(.., m, _)| *m == mac) {
                let other = &scenario.vms[ov];
                let place = match interface.mac {
                    Some(_) => at("mac", &mac.to_string()),
                    None => at("name", &vm.name),
                };
                return err(
                    place,
                    field("mac"),
                    format!(
                        "MAC {mac} is already interface {on} of VM {}; each interface needs its own",
                        other.name
                    ),
                );
            }
            if let Some(ip) = interface.ip {
                let ip_text = ip.to_string();
                if ip.is_network_or_broadcast() {
                    return err(
                        at("ip", &ip_text),
                        field("ip"),
                        format!(
                            "{ip} is the network or broadcast address of {}, not a host's",
                            ip.network()
                        ),
                    );
                }
                for &(ov, on, _, other_ip) in &seen {
                    let other_vm = &scenario.vms[ov];
                    let Some(other_ip) = other_ip else { continue };
                    if other_ip.addr == ip.addr {
                        return err(
                            at("ip", &ip_text),
                            field("ip"),
                            format!(
                                "address {} is already interface {on} of VM {}",
                                ip.addr, other_vm.name
                            ),
                        );
                    }
                    let same_switch = other_vm.net[on].switch == interface.switch;
                    if same_switch && other_ip.network() != ip.network() {
                        return err(
                            at("ip", &ip_text),
                            field("ip"),
                            format!(
                                "{ip} is outside {}, the subnet of switch `{}` ({} has {other_ip})",
                                other_ip.network(),
                                interface.switch,
                                other_vm.name
                            ),
                        );
                    }
                }
            }
            seen.push((v, n, mac, interface.ip));
        }
        for (d, disk) in vm.disks.iter().enumerate() {
            let field = |name: &str| format!("vms[{v}].disks[{d}]{name}");
            match (&disk.image, disk.size_mib) {
                (None, None) => {
                    return err(
                        at("disks", ""),
                        field(""),
                        "a disk is `{ size-mib: N }` (empty) or `{ image: NAME }` (filled from an image)"
                            .into(),
                    )
                }
                (_, Some(0)) => {
                    return err(
                        at("size-mib", "0"),
                        field(".size-mib"),
                        "a disk has at least 1 MiB".into(),
                    )
                }
                _ => {}
            }
        }
    }
    // The hypervisor holds every VM's RAM and disks in the machine's RAM
    // (the bundle and an image's size are checked when the run is packed).
    if scenario.boot == BootMode::Hypervisor {
        let ram: u64 = scenario.vms.iter().map(|vm| vm.memory_mib).sum();
        let disks: u64 = scenario
            .vms
            .iter()
            .flat_map(|vm| &vm.disks)
            .filter_map(|disk| disk.size_mib)
            .sum();
        if disks > 0 && ram + disks > scenario.machine.memory_mib {
            return err(
                error::locate_from(
                    text,
                    1,
                    "memory-mib",
                    &scenario.machine.memory_mib.to_string(),
                ),
                "machine.memory-mib".into(),
                format!(
                    "{} MiB cannot hold the VMs' {ram} MiB of RAM and {disks} MiB of disks, which \
                     the hypervisor keeps in its memory",
                    scenario.machine.memory_mib
                ),
            );
        }
    }
    for (i, switch) in scenario.switches.iter().enumerate() {
        let ports = scenario
            .vms
            .iter()
            .flat_map(|vm| &vm.net)
            .filter(|interface| &interface.switch == switch)
            .count();
        let message = match scenario.boot {
            BootMode::Hypervisor if ports == 0 => "no interface is on it".to_owned(),
            BootMode::Direct if ports != 2 => format!(
                "{ports} interface(s) on it; under `boot: direct` a switch is a QEMU socket \
                 netdev between two VMs' QEMU processes, so it joins exactly two"
            ),
            _ => continue,
        };
        return err(
            Some(error::locate_value(text, switch)),
            format!("switches[{i}]"),
            format!("switch `{switch}`: {message}"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_prints_and_refuses() {
        let mac: MacAddr = "02:4C:41:42:00:01".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x4c, 0x41, 0x42, 0x00, 0x01]);
        assert_eq!(mac.to_string(), "02:4c:41:42:00:01");
        for bad in [
            "02:4c:41:42:00",
            "02:4c:41:42:00:01:02",
            "2:4c:41:42:00:01",
            "zz:00:00:00:00:00",
            "",
        ] {
            assert!(
                bad.parse::<MacAddr>().unwrap_err().contains("not a MAC"),
                "{bad}"
            );
        }
        let err = "01:00:5e:00:00:01".parse::<MacAddr>().unwrap_err();
        assert!(err.contains("multicast"), "{err}");
    }

    #[test]
    fn cidr_table() {
        let cidr: Ipv4Cidr = "10.0.0.7/24".parse().unwrap();
        assert_eq!(cidr.to_string(), "10.0.0.7/24");
        assert_eq!(cidr.network().to_string(), "10.0.0.0/24");
        assert!(cidr.contains("10.0.0.200".parse().unwrap()));
        assert!(!cidr.contains("10.0.1.1".parse().unwrap()));
        for (text, edge) in [
            ("10.0.0.0/24", true),
            ("10.0.0.255/24", true),
            ("10.0.0.1/24", false),
            ("10.0.0.0/31", false),
            ("10.0.0.1/32", false),
        ] {
            let cidr: Ipv4Cidr = text.parse().unwrap();
            assert_eq!(cidr.is_network_or_broadcast(), edge, "{text}");
        }
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0.1/0", "10.0.0/24", "x/24"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_macs_are_stable_local_unicast_and_distinct() {
        let a = default_mac("multi_vm_net", "vm0", 0);
        assert_eq!(a, default_mac("multi_vm_net", "vm0", 0));
        assert_eq!(a.0[0], 0x02, "locally administered, unicast");
        let others = [
            default_mac("multi_vm_net", "vm0", 1),
            default_mac("multi_vm_net", "vm1", 0),
            default_mac("multi_vm_net3", "vm0", 0),
        ];
        assert!(others.iter().all(|m| *m != a && m.0[0] == 0x02));
    }
}
