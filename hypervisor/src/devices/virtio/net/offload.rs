//! What a device does for a guest that did not negotiate an offload its
//! peer used: make the checksum the sender left to be made, or cut a TCP
//! segmentation offload frame into the segments the sender's NIC would have
//! sent (IPv4 or IPv6, TCP, an Ethernet header with or without one VLAN
//! tag), each with its own lengths, IPv4 identification, sequence number,
//! flags and checksums. Plain byte work, host-tested.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::OFFLOAD_HEADER;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPV6_HEADER: usize = 40;
const TCP_HEADER_MIN: usize = 20;
/// TCP flags cleared on every segment but the first (CWR) or the last
/// (FIN, PSH).
const TCP_CWR: u8 = 0x80;
const TCP_FIN_PSH: u8 = 0x09;
/// Most segments one frame is cut into (a 64 KiB frame down to an MSS of
/// 512): a sender asking for more is refused, so a tiny MSS cannot make
/// the hypervisor hold thousands of frames.
pub const MAX_SEGMENTS: usize = 128;

/// The ones' complement sum of `data` as big-endian 16-bit words (an odd
/// last byte padded with zero), added to `sum`, not yet folded.
fn add_words(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// The Internet checksum of a sum of words: folded, complemented.
fn checksum(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn put16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Makes the Internet checksum of `frame` from `start` on and stores it at
/// `start + offset` (the field holds the pseudo-header's sum, as the sender
/// left it); false when that lies outside the frame.
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(at) = start.checked_add(offset).filter(|at| at + 2 <= frame.len()) else {
        return false;
    };
    if start >= frame.len() {
        return false;
    }
    let sum = checksum(add_words(0, &frame[start..]));
    put16(frame, at, sum);
    true
}

/// Where the layers of a TCP frame start.
struct Layout {
    /// The IP header.
    ip: usize,
    ipv4: bool,
    /// The TCP header.
    tcp: usize,
    /// The payload.
    payload: usize,
}

fn layout(frame: &[u8]) -> Option<Layout> {
    let (ethertype, ip) = match be16(frame, 12)? {
        ETHERTYPE_VLAN => (be16(frame, 16)?, 18),
        other => (other, 14),
    };
    let (ipv4, tcp) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(frame.get(ip)? & 0xf) * 4;
            (ihl >= 20 && *frame.get(ip + 9)? == IPPROTO_TCP).then_some((true, ip + ihl))?
        }
        ETHERTYPE_IPV6 => {
            (*frame.get(ip + 6)? == IPPROTO_TCP).then_some((false, ip + IPV6_HEADER))?
        }
        _ => return None,
    };
    let offset = usize::from(frame.get(tcp + 12)? >> 4) * 4;
    let payload = tcp + offset;
    (offset >= TCP_HEADER_MIN && payload <= frame.len()).then_some(Layout {
        ip,
        ipv4,
        tcp,
        payload,
    })
}

/// Cuts `packet` (offload header, then a TCP frame of up to 64 KiB) into
/// frames of at most `mss` bytes of payload, each behind an offload header
/// that asks for nothing, appended to `out`. False (and nothing appended)
/// when the frame is not TCP over IPv4 or IPv6, `mss` is 0, it would take
/// more than [`MAX_SEGMENTS`], or there is no memory for them.
pub fn segment(packet: &[u8], mss: usize, out: &mut VecDeque<Vec<u8>>) -> bool {
    let Some(frame) = packet.get(OFFLOAD_HEADER..) else {
        return false;
    };
    let Some(l) = layout(frame).filter(|_| mss > 0) else {
        return false;
    };
    let (Some(seq), Some(id)) = (be32(frame, l.tcp + 4), be16(frame, l.ip + 4)) else {
        return false;
    };
    let payload = &frame[l.payload..];
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        alloc::vec![payload]
    } else {
        payload.chunks(mss).collect()
    };
    let count = chunks.len();
    if count > MAX_SEGMENTS {
        return false;
    }
    let before = out.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut segment = Vec::new();
        if segment
            .try_reserve_exact(OFFLOAD_HEADER + l.payload + chunk.len())
            .is_err()
        {
            out.truncate(before);
            return false;
        }
        segment.resize(OFFLOAD_HEADER, 0);
        segment.extend_from_slice(&frame[..l.payload]);
        segment.extend_from_slice(chunk);
        let s = &mut segment[OFFLOAD_HEADER..];
        let tcp_len = l.payload - l.tcp + chunk.len();
        if l.ipv4 {
            let ihl = l.tcp - l.ip;
            put16(
                s,
                l.ip + 2,
                u16::try_from(ihl + tcp_len).unwrap_or(u16::MAX),
            );
            put16(s, l.ip + 4, id.wrapping_add(u16::try_from(i).unwrap_or(0)));
            put16(s, l.ip + 10, 0);
            let ip_sum = checksum(add_words(0, &s[l.ip..l.tcp]));
            put16(s, l.ip + 10, ip_sum);
        } else {
            put16(s, l.ip + 4, u16::try_from(tcp_len).unwrap_or(u16::MAX));
        }
        let offset = u32::try_from(i * mss).unwrap_or(0);
        s[l.tcp + 4..l.tcp + 8].copy_from_slice(&seq.wrapping_add(offset).to_be_bytes());
        if i > 0 {
            s[l.tcp + 13] &= !TCP_CWR;
        }
        if i + 1 < count {
            s[l.tcp + 13] &= !TCP_FIN_PSH;
        }
        put16(s, l.tcp + 16, 0);
        // The pseudo-header: addresses, protocol, TCP length.
        let addresses = if l.ipv4 {
            &s[l.ip + 12..l.ip + 20]
        } else {
            &s[l.ip + 8..l.ip + 40]
        };
        let length = u64::try_from(tcp_len).unwrap_or(0);
        let pseudo = add_words(0, addresses) + u64::from(IPPROTO_TCP) + length;
        let tcp_sum = checksum(add_words(pseudo, &s[l.tcp..]));
        put16(s, l.tcp + 16, tcp_sum);
        out.push_back(segment);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sum over data holding its own correct checksum folds to all ones.
    fn sums_to_ones(sum: u64) -> bool {
        checksum(sum) == 0
    }

    fn tcp_frame(ipv4: bool, payload: usize) -> Vec<u8> {
        let mut f = alloc::vec![0u8; OFFLOAD_HEADER];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        if ipv4 {
            f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let total = u16::try_from(20 + 20 + payload).unwrap_or(u16::MAX);
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
            f.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
        } else {
            f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&u16::try_from(20 + payload).unwrap().to_be_bytes());
            f.extend_from_slice(&[IPPROTO_TCP, 64]);
            f.extend_from_slice(&[0xfd; 16]);
            f.extend_from_slice(&[0xfe; 16]);
        }
        // Ports, sequence 0xfffff000 (to wrap), ack, offset 5, ACK|PSH|FIN|CWR.
        f.extend_from_slice(&[0x13, 0x88, 0xc0, 0x00, 0xff, 0xff, 0xf0, 0x00]);
        f.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x80 | 0x10 | 0x09, 0x10, 0]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend((0..payload).map(|i| (i * 7) as u8));
        f
    }

    fn check(ipv4: bool) {
        let packet = tcp_frame(ipv4, 4000);
        let mut out = VecDeque::new();
        assert!(segment(&packet, 1448, &mut out));
        assert_eq!(out.len(), 3);
        let ip = OFFLOAD_HEADER + 14;
        let tcp = ip + if ipv4 { 20 } else { 40 };
        let mut payload = Vec::new();
        for (i, s) in out.iter().enumerate() {
            assert_eq!(s[..OFFLOAD_HEADER], [0; OFFLOAD_HEADER]);
            let chunk = &s[tcp + 20..];
            assert_eq!(chunk.len(), if i < 2 { 1448 } else { 4000 - 2 * 1448 });
            payload.extend_from_slice(chunk);
            let seq = 0xffff_f000u32.wrapping_add(1448 * i as u32);
            assert_eq!(be32(s, tcp + 4), Some(seq));
            let flags = s[tcp + 13];
            assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR on the first only");
            assert_eq!(flags & TCP_FIN_PSH, if i == 2 { TCP_FIN_PSH } else { 0 });
            assert_eq!(flags & 0x10, 0x10, "ACK on all");
            let tcp_len = (s.len() - tcp) as u64;
            let pseudo = if ipv4 {
                assert_eq!(be16(s, ip + 2), Some((20 + tcp_len) as u16));
                assert_eq!(be16(s, ip + 4), Some(0x1234 + i as u16));
                assert!(sums_to_ones(add_words(0, &s[ip..tcp])), "IPv4 header sum");
                add_words(0, &s[ip + 12..ip + 20])
            } else {
                assert_eq!(be16(s, ip + 4), Some(tcp_len as u16));
                add_words(0, &s[ip + 8..ip + 40])
            };
            let pseudo = pseudo + u64::from(IPPROTO_TCP) + tcp_len;
            assert!(sums_to_ones(add_words(pseudo, &s[tcp..])), "TCP sum");
        }
        assert_eq!(payload, packet[tcp + 20..]);
    }

    #[test]
    fn tcp_over_ipv4_is_cut_into_segments_with_their_own_headers() {
        check(true);
    }

    #[test]
    fn tcp_over_ipv6_is_cut_into_segments_with_their_own_headers() {
        check(false);
    }

    #[test]
    fn what_is_not_tcp_is_not_cut() {
        let mut out = VecDeque::new();
        let mut udp = tcp_frame(true, 100);
        udp[OFFLOAD_HEADER + 14 + 9] = 17;
        assert!(!segment(&udp, 1448, &mut out));
        assert!(!segment(&tcp_frame(true, 100), 0, &mut out));
        // An MSS so small it would make too many segments.
        assert!(!segment(
            &tcp_frame(true, 4000),
            4000 / MAX_SEGMENTS - 1,
            &mut out
        ));
        assert!(!segment(&tcp_frame(true, 100)[..40], 1448, &mut out));
        assert!(out.is_empty());
        // A segment no longer than the MSS comes out as one, summed.
        assert!(segment(&tcp_frame(false, 100), 1448, &mut out));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_checksum_is_completed_within_the_frame_only() {
        let mut frame = alloc::vec![1u8, 2, 3, 4, 0, 0, 5];
        assert!(complete_checksum(&mut frame, 0, 4));
        assert!(sums_to_ones(add_words(0, &frame)));
        assert!(!complete_checksum(&mut frame, 0, 6));
        assert!(!complete_checksum(&mut frame, 7, 0));
    }
}
