//! The FF-A battery (boot argument `testguest.ffa`, or `testguest.ffa-peer`
//! in a VM with a neighbour): FF-A v1.1 through SMC, one line per check,
//! against whatever SPMC the hypervisor put behind its proxy. The refusals
//! are part of it: an unaligned or foreign RX/TX map, memory outside the
//! guest's RAM, overlapping ranges, reclaiming twice, and (with a peer)
//! reclaiming the other VM's share.

use core::fmt::Write;

use crate::arch::{self, sysreg, FfaPages};
use crate::ffa_abi::{
    encode_share, regs, share_len, FfaError, Outcome, Partition, Uuid, ABIS,
    ATTRIBUTES_NORMAL_WB_INNER, ATTRIBUTES_NOT_SPECIFIED, BUSY, DENIED, FFA_FEATURES, FFA_ID_GET,
    FFA_MEM_DONATE_32, FFA_MEM_LEND_32, FFA_MEM_RECLAIM, FFA_MEM_SHARE_32, FFA_MEM_SHARE_64,
    FFA_MSG_SEND_DIRECT_REQ_32, FFA_MSG_SEND_DIRECT_REQ_64, FFA_MSG_SEND_DIRECT_RESP_32,
    FFA_MSG_SEND_DIRECT_RESP_64, FFA_PARTITION_INFO_GET, FFA_RXTX_MAP_64, FFA_RXTX_UNMAP,
    FFA_RX_RELEASE, FFA_SPM_ID_GET, FFA_VERSION, INVALID_PARAMETERS, NOT_SUPPORTED, NO_DATA,
    PARTITION_INFO_SIZE, RECLAIM_ZERO, RECORD_CMD_OLDEST_FROM_OTHER, VERSION_1_1,
};
use crate::platform::{FfaBattery, Platform};
use crate::report::Report;

/// Which of the FF-A pages holds what. Result lines name pages by these
/// numbers, not by address: the pages follow the guest's image, so their
/// addresses move whenever the guest grows.
const TX: usize = 0;
const RX: usize = 1;
const SHARED: usize = 2;
const LENT: usize = 3;
const LEFT_FOR_PEER: usize = 4;
/// Partitions the battery keeps track of.
const MAX_PARTITIONS: usize = 4;
/// OP-TEE's FF-A partition UUID, 486178e0-e7f8-11e3-bc5e-0002a5d5c51b.
const OPTEE_UUID: [u8; 16] = [
    0x48, 0x61, 0x78, 0xe0, 0xe7, 0xf8, 0x11, 0xe3, 0xbc, 0x5e, 0x00, 0x02, 0xa5, 0xd5, 0xc5, 0x1b,
];
/// OP-TEE's direct-request calls (`OPTEE_FFA_GET_API_VERSION`, `_OS_VERSION`).
const OPTEE_FFA_GET_API_VERSION: u64 = 0;
const OPTEE_FFA_GET_OS_VERSION: u64 = 1;
/// How long the peer checks wait for the other VM's share.
const PEER_WAIT_SECONDS: u64 = 10;

fn call(function: u32, args: &[u64]) -> Outcome {
    Outcome::of(arch::ffa_call(regs(function, args)))
}

/// Reports `check` as passed when `got` is the refusal `want`.
fn refused<W: Write>(report: &mut Report<W>, check: &str, got: Outcome, want: FfaError) {
    if got == Outcome::Error(want) {
        report.pass(check, format_args!("{want}"));
    } else {
        report.fail(check, format_args!("{got}, expected {want}"));
    }
}

/// Shares or lends `ranges` with `receiver` through the TX buffer;
/// returns the handle.
fn give(
    pages: &FfaPages,
    function: u32,
    me: u16,
    receiver: u16,
    ranges: &[(u64, u32)],
) -> Result<u64, Outcome> {
    let mut buf = [0u8; share_len(2)];
    let attributes = if function == FFA_MEM_LEND_32 {
        ATTRIBUTES_NOT_SPECIFIED
    } else {
        ATTRIBUTES_NORMAL_WB_INNER
    };
    let len = encode_share(&mut buf, me, receiver, attributes, ranges);
    pages.write(TX * 0x1000, &buf[..len]);
    match call(function, &[len as u64, len as u64, 0, 0]) {
        Outcome::Success(r) => Ok((r[2] & 0xffff_ffff) | (r[3] << 32)),
        other => Err(other),
    }
}

fn reclaim(handle: u64, flags: u64) -> Outcome {
    call(
        FFA_MEM_RECLAIM,
        &[handle & 0xffff_ffff, handle >> 32, flags],
    )
}

pub fn battery<W: Write>(report: &mut Report<W>, platform: &Platform, mode: FfaBattery) {
    let pages = arch::ffa_pages();
    let version = arch::ffa_call(regs(FFA_VERSION, &[VERSION_1_1.into()]))[0];
    if version == u64::from(VERSION_1_1) {
        report.pass("ffa-version", format_args!("1.1"));
    } else {
        report.fail(
            "ffa-version",
            format_args!("FFA_VERSION(1.1) returned {version:#x}"),
        );
    }
    let me = match call(FFA_ID_GET, &[]) {
        Outcome::Success(r) if r[2] != 0 && r[2] & 0x8000 == 0 => {
            report.pass("ffa-id", format_args!("{:#06x}", r[2]));
            r[2] as u16
        }
        other => {
            report.fail("ffa-id", format_args!("{other}, or not a VM's ID"));
            return;
        }
    };
    match call(FFA_SPM_ID_GET, &[]) {
        Outcome::Success(r) if r[2] & 0x8000 != 0 => {
            report.pass("ffa-spm-id", format_args!("{:#06x}", r[2]))
        }
        other => report.fail("ffa-spm-id", format_args!("{other}, or not a secure ID")),
    }
    features(report);
    refused(
        report,
        "ffa-rxtx-unaligned",
        call(
            FFA_RXTX_MAP_64,
            &[pages.page(TX) + 0x800, pages.page(RX), 1],
        ),
        INVALID_PARAMETERS,
    );
    let ram_end = (platform.ram.base + platform.ram.size) as u64;
    refused(
        report,
        "ffa-rxtx-outside-ram",
        call(FFA_RXTX_MAP_64, &[ram_end, ram_end + 0x1000, 1]),
        DENIED,
    );
    match call(FFA_RXTX_MAP_64, &[pages.page(TX), pages.page(RX), 1]) {
        Outcome::Success(_) => report.pass(
            "ffa-rxtx-map",
            format_args!("TX page {TX} RX page {RX} of the battery's pages"),
        ),
        other => {
            report.fail("ffa-rxtx-map", format_args!("{other}"));
            return;
        }
    }
    let mut found = [None; MAX_PARTITIONS];
    let count = partitions(report, &pages, &mut found);
    match (found[0], found[1]) {
        // A real secure world: OP-TEE is the one partition. Its direct
        // requests are OP-TEE's own calls, not an echo, and memory goes to
        // it; the neighbour checks need the stub's record partition.
        (Some(optee), _) if optee.uuid == OPTEE_UUID && mode == FfaBattery::Alone => {
            direct_optee(report, me, optee.id);
            memory(report, &pages, me, optee.id, ram_end);
        }
        (Some(first), Some(second)) if first.uuid != OPTEE_UUID => {
            direct_echo(report, me, first.id);
            if mode == FfaBattery::WithPeer {
                peer_share(report, &pages, me, second.id);
            }
            memory(report, &pages, me, second.id, ram_end);
            if mode == FfaBattery::WithPeer {
                peer_reclaim(report, me, second.id);
            }
        }
        _ => {
            report.fail(
                "ffa-partitions",
                format_args!("{count} partitions: the battery needs the stub's two, or OP-TEE alone without a peer"),
            );
            return;
        }
    }
    match call(FFA_RXTX_UNMAP, &[u64::from(me) << 16]) {
        Outcome::Success(_) => refused(
            report,
            "ffa-rxtx-unmap",
            call(FFA_RXTX_UNMAP, &[0]),
            INVALID_PARAMETERS,
        ),
        other => report.fail("ffa-rxtx-unmap", format_args!("{other}")),
    }
}

fn features<W: Write>(report: &mut Report<W>) {
    let missing = ABIS
        .iter()
        .find(|(_, id)| !matches!(call(FFA_FEATURES, &[u64::from(*id)]), Outcome::Success(_)));
    let donate = call(FFA_FEATURES, &[FFA_MEM_DONATE_32.into()]);
    match missing {
        Some((name, _)) => report.fail("ffa-features", format_args!("FFA_{name} not reported")),
        None if donate != Outcome::Error(NOT_SUPPORTED) => report.fail(
            "ffa-features",
            format_args!("FFA_MEM_DONATE: {donate}, expected NOT_SUPPORTED"),
        ),
        None => report.pass(
            "ffa-features",
            format_args!("{} ABIs reported, MEM_DONATE not", ABIS.len()),
        ),
    }
}

/// FFA_PARTITION_INFO_GET: the count alone, then every descriptor, then
/// one partition by its UUID. Returns how many there are.
fn partitions<W: Write>(
    report: &mut Report<W>,
    pages: &FfaPages,
    found: &mut [Option<Partition>; MAX_PARTITIONS],
) -> usize {
    let count = match call(FFA_PARTITION_INFO_GET, &[0, 0, 0, 0, 1]) {
        Outcome::Success(r) => r[2] as usize,
        other => {
            report.fail("ffa-partitions", format_args!("count only: {other}"));
            return 0;
        }
    };
    match call(FFA_PARTITION_INFO_GET, &[0, 0, 0, 0, 0]) {
        Outcome::Success(r) if r[2] as usize == count && r[3] as usize == PARTITION_INFO_SIZE => {}
        other => {
            report.fail(
                "ffa-partitions",
                format_args!("{other} (count {count} before)"),
            );
            return 0;
        }
    }
    for (i, slot) in found.iter_mut().enumerate().take(count) {
        let mut bytes = [0u8; PARTITION_INFO_SIZE];
        pages.read(RX * 0x1000 + i * PARTITION_INFO_SIZE, &mut bytes);
        *slot = Some(Partition::decode(&bytes));
    }
    let busy = call(FFA_PARTITION_INFO_GET, &[0, 0, 0, 0, 0]);
    let released = call(FFA_RX_RELEASE, &[]);
    let list = &found[..count.min(MAX_PARTITIONS)];
    let bad = list
        .iter()
        .flatten()
        .find(|p| p.id & 0x8000 == 0 || p.uuid == [0; 16]);
    let Some(Some(first)) = list.first().copied() else {
        report.fail("ffa-partitions", format_args!("none"));
        return count;
    };
    let by_uuid = match call(
        FFA_PARTITION_INFO_GET,
        &[
            first.uuid_words()[0],
            first.uuid_words()[1],
            first.uuid_words()[2],
            first.uuid_words()[3],
            0,
        ],
    ) {
        Outcome::Success(r) => {
            let mut bytes = [0u8; PARTITION_INFO_SIZE];
            pages.read(RX * 0x1000, &mut bytes);
            call(FFA_RX_RELEASE, &[]);
            (r[2], Partition::decode(&bytes).id)
        }
        _ => (0, 0),
    };
    if let Some(p) = bad {
        report.fail(
            "ffa-partitions",
            format_args!("{:#06x} is not a secure partition with a UUID", p.id),
        );
    } else if busy != Outcome::Error(BUSY) || !matches!(released, Outcome::Success(_)) {
        report.fail(
            "ffa-partitions",
            format_args!("a full RX buffer gave {busy}, RX_RELEASE {released}"),
        );
    } else if by_uuid != (1, first.id) {
        report.fail(
            "ffa-partitions",
            format_args!("by UUID: {} partitions, {:#06x}", by_uuid.0, by_uuid.1),
        );
    } else {
        report.pass(
            "ffa-partitions",
            format_args!("{count}, the first found by its UUID"),
        );
        for p in list.iter().flatten() {
            report.pass(
                "ffa-partition",
                format_args!(
                    "{:#06x} uuid {} contexts {} properties {:#x}",
                    p.id,
                    Uuid(&p.uuid),
                    p.contexts,
                    p.properties
                ),
            );
        }
    }
    count
}

/// A direct request each way (SMC64 and SMC32) to the echo partition.
fn direct_echo<W: Write>(report: &mut Report<W>, me: u16, partition: u16) {
    let w1 = (u64::from(me) << 16) | u64::from(partition);
    let payload = [0x1111_2222_3333_4444, 5, 6, 7, 0x8888_9999_aaaa_bbbb];
    let r64 = arch::ffa_call([
        FFA_MSG_SEND_DIRECT_REQ_64.into(),
        w1,
        0,
        payload[0],
        payload[1],
        payload[2],
        payload[3],
        payload[4],
    ]);
    let r32 = arch::ffa_call([
        FFA_MSG_SEND_DIRECT_REQ_32.into(),
        w1,
        0,
        payload[0],
        payload[1],
        payload[2],
        payload[3],
        payload[4],
    ]);
    let back = (u64::from(partition) << 16) | u64::from(me);
    let narrowed = payload.map(|v| v & 0xffff_ffff);
    if r64[0] != u64::from(FFA_MSG_SEND_DIRECT_RESP_64) || r64[1] != back || r64[3..] != payload {
        report.fail("ffa-direct-echo", format_args!("64-bit answer {r64:x?}"));
    } else if r32[0] != u64::from(FFA_MSG_SEND_DIRECT_RESP_32)
        || r32[1] != back
        || r32[3..] != narrowed
    {
        report.fail("ffa-direct-echo", format_args!("32-bit answer {r32:x?}"));
    } else {
        report.pass(
            "ffa-direct-echo",
            format_args!("{partition:#06x} echoed 5 registers, SMC64 and SMC32"),
        );
    }
    direct_to_self(report, me);
}

/// A direct request a VM sends to itself: only partitions take them, so
/// the proxy refuses it.
fn direct_to_self<W: Write>(report: &mut Report<W>, me: u16) {
    let to_self = arch::ffa_call([
        FFA_MSG_SEND_DIRECT_REQ_64.into(),
        (u64::from(me) << 16) | u64::from(me),
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    refused(
        report,
        "ffa-direct-to-vm",
        Outcome::of(to_self),
        INVALID_PARAMETERS,
    );
}

/// OP-TEE's two version calls (its FF-A ABI, `optee_ffa.h`), as 32-bit
/// direct requests: the API version, then the OS version the scenario
/// compares with the one the lab built. Then the proxy's own refusal.
fn direct_optee<W: Write>(report: &mut Report<W>, me: u16, partition: u16) {
    let w1 = (u64::from(me) << 16) | u64::from(partition);
    let ask =
        |call: u64| arch::ffa_call([FFA_MSG_SEND_DIRECT_REQ_32.into(), w1, 0, call, 0, 0, 0, 0]);
    let back = (u64::from(partition) << 16) | u64::from(me);
    let api = ask(OPTEE_FFA_GET_API_VERSION);
    let os = ask(OPTEE_FFA_GET_OS_VERSION);
    let answered = |r: &[u64; 8]| r[0] == u64::from(FFA_MSG_SEND_DIRECT_RESP_32) && r[1] == back;
    if !answered(&api) || api[3] != 1 {
        report.fail(
            "ffa-direct-optee",
            format_args!("API version answer {api:x?}"),
        );
    } else if !answered(&os) {
        report.fail(
            "ffa-direct-optee",
            format_args!("OS version answer {os:x?}"),
        );
    } else {
        report.pass(
            "ffa-direct-optee",
            format_args!(
                "{partition:#06x} API {}.{} OS {}.{}",
                api[3], api[4], os[3], os[4]
            ),
        );
    }
    direct_to_self(report, me);
}

/// Share, lend and reclaim, and the refusals around them.
fn memory<W: Write>(
    report: &mut Report<W>,
    pages: &FfaPages,
    me: u16,
    partition: u16,
    ram_end: u64,
) {
    let page = pages.page(SHARED);
    let handle = match give(pages, FFA_MEM_SHARE_64, me, partition, &[(page, 1)]) {
        Ok(handle) => {
            report.pass(
                "ffa-share",
                format_args!("page {SHARED} with {partition:#06x}"),
            );
            handle
        }
        Err(e) => {
            report.fail("ffa-share", format_args!("{e}"));
            return;
        }
    };
    let again = give(pages, FFA_MEM_SHARE_32, me, partition, &[(page, 1)]);
    refused(
        report,
        "ffa-share-twice",
        again.err().unwrap_or(Outcome::Success([0; 8])),
        DENIED,
    );
    let outside = give(pages, FFA_MEM_SHARE_32, me, partition, &[(ram_end, 1)]);
    refused(
        report,
        "ffa-share-outside-ram",
        outside.err().unwrap_or(Outcome::Success([0; 8])),
        DENIED,
    );
    let lent = pages.page(LENT);
    let overlap = give(
        pages,
        FFA_MEM_SHARE_32,
        me,
        partition,
        &[(lent, 1), (lent, 1)],
    );
    refused(
        report,
        "ffa-share-overlap",
        overlap.err().unwrap_or(Outcome::Success([0; 8])),
        INVALID_PARAMETERS,
    );
    match reclaim(handle, 0) {
        Outcome::Success(_) => report.pass("ffa-reclaim", format_args!("SUCCESS")),
        other => report.fail("ffa-reclaim", format_args!("{other}")),
    }
    refused(
        report,
        "ffa-reclaim-twice",
        reclaim(handle, 0),
        INVALID_PARAMETERS,
    );
    pages.write(LENT * 0x1000, &[0x5a; 16]);
    let mut back = [0xffu8; 16];
    match give(pages, FFA_MEM_LEND_32, me, partition, &[(lent, 1)])
        .map(|h| (h, reclaim(h, RECLAIM_ZERO)))
    {
        Ok((_, Outcome::Success(_))) => {
            pages.read(LENT * 0x1000, &mut back);
            if back == [0; 16] {
                report.pass("ffa-lend-reclaim-zeroed", format_args!("page {LENT}"));
            } else {
                report.fail(
                    "ffa-lend-reclaim-zeroed",
                    format_args!("page reads {back:x?}"),
                );
            }
        }
        // OP-TEE does not zero on reclaim: it refuses the flag, and the
        // page must then come back without it.
        Ok((h, Outcome::Error(INVALID_PARAMETERS))) => match reclaim(h, 0) {
            Outcome::Success(_) => report.pass(
                "ffa-lend-reclaim-zeroed",
                format_args!("page {LENT}: zeroing refused, reclaimed without it"),
            ),
            other => report.fail(
                "ffa-lend-reclaim-zeroed",
                format_args!("reclaim {h:#x} without zeroing: {other}"),
            ),
        },
        Ok((h, other)) => report.fail(
            "ffa-lend-reclaim-zeroed",
            format_args!("reclaim {h:#x}: {other}"),
        ),
        Err(e) => report.fail("ffa-lend-reclaim-zeroed", format_args!("lend: {e}")),
    }
}

/// With a neighbour VM: leave a share with the record partition for the
/// neighbour to find (before any other, so it is the oldest of ours the
/// partition holds, and kept).
fn peer_share<W: Write>(report: &mut Report<W>, pages: &FfaPages, me: u16, partition: u16) {
    match give(
        pages,
        FFA_MEM_SHARE_32,
        me,
        partition,
        &[(pages.page(LEFT_FOR_PEER), 1)],
    ) {
        Ok(_) => report.pass(
            "ffa-peer-share",
            format_args!("left for the neighbour to see"),
        ),
        Err(e) => report.fail("ffa-peer-share", format_args!("{e}")),
    }
}

/// The oldest share of another endpoint the record partition holds:
/// (handle, owner), `Ok(None)` if none yet.
fn peer_record(me: u16, partition: u16) -> Result<Option<(u64, u64)>, [u64; 8]> {
    let w1 = (u64::from(me) << 16) | u64::from(partition);
    let r = arch::ffa_call([
        FFA_MSG_SEND_DIRECT_REQ_64.into(),
        w1,
        0,
        RECORD_CMD_OLDEST_FROM_OTHER,
        me.into(),
        0,
        0,
        0,
    ]);
    match (r[0] == u64::from(FFA_MSG_SEND_DIRECT_RESP_64), r[3]) {
        (true, 0) => Ok(Some(((r[4] & 0xffff_ffff) | (r[5] << 32), r[6]))),
        (true, code) if code as u32 as i32 == NO_DATA.0 => Ok(None),
        _ => Err(r),
    }
}

/// Waits for the neighbour's share, tries to reclaim it, and checks the
/// partition still holds it afterwards.
fn peer_reclaim<W: Write>(report: &mut Report<W>, me: u16, partition: u16) {
    let deadline = sysreg::counter() + PEER_WAIT_SECONDS * sysreg::counter_frequency();
    let theirs = loop {
        match peer_record(me, partition) {
            Ok(None) if sysreg::counter() < deadline => continue,
            other => break other,
        }
    };
    let (handle, owner) = match theirs {
        Ok(Some(found)) => found,
        Ok(None) => {
            report.fail(
                "ffa-peer-reclaim",
                format_args!("no share of another endpoint within {PEER_WAIT_SECONDS} s"),
            );
            return;
        }
        Err(r) => {
            report.fail(
                "ffa-peer-reclaim",
                format_args!("record partition answered {r:x?}"),
            );
            return;
        }
    };
    let answer = reclaim(handle, 0);
    let still_there = peer_record(me, partition) == Ok(Some((handle, owner)));
    if answer != Outcome::Error(INVALID_PARAMETERS) {
        report.fail(
            "ffa-peer-reclaim",
            format_args!("endpoint {owner:#06x}'s handle {handle:#x}: {answer}"),
        );
    } else if !still_there {
        report.fail(
            "ffa-peer-reclaim",
            format_args!("endpoint {owner:#06x}'s handle {handle:#x} is gone after the refusal"),
        );
    } else {
        report.pass(
            "ffa-peer-reclaim",
            format_args!("endpoint {owner:#06x}'s share refused: {answer}, still shared"),
        );
    }
}
