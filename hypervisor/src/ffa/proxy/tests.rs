//! The proxy against fake guest memory and the stub SPMC.

use super::*;
use crate::devices::memory::fake::VecMemory;
use crate::devices::memory::GuestMemoryError;
use crate::ffa::descriptors::{MemTransaction, Receiver};
use crate::ffa::spmc::{StubSpmc, ECHO_SP, RECORD_SP};
use crate::ffa::EndpointId;

const RAM: u64 = 0x4000_0000;
const RAM_PAGES: u64 = 64;
/// Where the fake stage 2 puts the VM's RAM.
const HOST: u64 = 0x8800_0000;
const TX: u64 = RAM + 0x1_0000;
const RX: u64 = RAM + 0x1_1000;
const PAGE: u64 = RAM + 0x2_0000;

/// A VM's RAM and a stage 2 that maps it linearly at `HOST`.
struct FakeVm(VecMemory);

impl FakeVm {
    fn new() -> Self {
        Self(VecMemory::new(RAM, (RAM_PAGES * PAGE_SIZE) as usize))
    }
}

impl GuestMemory for FakeVm {
    fn read(&self, a: IntermediatePhysAddr, b: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.0.read(a, b)
    }
    fn write(&mut self, a: IntermediatePhysAddr, b: &[u8]) -> Result<(), GuestMemoryError> {
        self.0.write(a, b)
    }
}

impl CallerMemory for FakeVm {
    fn owned_page(&self, ipa: IntermediatePhysAddr) -> Option<PhysAddr> {
        let offset = ipa.checked_offset_from(IntermediatePhysAddr::new(RAM))?;
        (offset < RAM_PAGES * PAGE_SIZE).then(|| PhysAddr::new(HOST + offset))
    }
}

fn proxy() -> Proxy {
    Proxy::new(2, Box::new(StubSpmc::new("test")))
}

fn call(p: &mut Proxy, vm: usize, mem: &mut FakeVm, regs: &[u64]) -> Regs {
    let mut full = [0; 8];
    full[..regs.len()].copy_from_slice(regs);
    p.call(vm, mem, &full)
}

fn status(regs: &Regs) -> Result<(), FfaError> {
    if regs[0] == u64::from(fid::FFA_ERROR) {
        Err(FfaError::from_w2(regs[2]).expect("an FF-A error code"))
    } else {
        assert_eq!(regs[0], u64::from(fid::FFA_SUCCESS_32), "{regs:x?}");
        Ok(())
    }
}

fn map(
    p: &mut Proxy,
    vm: usize,
    mem: &mut FakeVm,
    tx: u64,
    rx: u64,
    pages: u64,
) -> Result<(), FfaError> {
    status(&call(
        p,
        vm,
        mem,
        &[fid::FFA_RXTX_MAP_64.into(), tx, rx, pages],
    ))
}

#[test]
fn version_ids_and_features() {
    let (mut p, mut m) = (proxy(), FakeVm::new());
    assert_eq!(
        call(&mut p, 0, &mut m, &[fid::FFA_VERSION.into(), 0x1_0000])[0],
        0x1_0001
    );
    assert_eq!(
        call(&mut p, 0, &mut m, &[fid::FFA_VERSION.into(), 0x2_0000])[0],
        0xffff_ffff
    );
    assert_eq!(
        call(&mut p, 0, &mut m, &[fid::FFA_VERSION.into(), 1 << 31])[0],
        0xffff_ffff
    );
    assert_eq!(call(&mut p, 1, &mut m, &[fid::FFA_ID_GET.into()])[2], 2);
    assert_eq!(
        call(&mut p, 0, &mut m, &[fid::FFA_SPM_ID_GET.into()])[2],
        0x8000
    );
    for f in FEATURES.iter().map(|(f, _)| *f) {
        assert_eq!(
            status(&call(
                &mut p,
                0,
                &mut m,
                &[fid::FFA_FEATURES.into(), f.into()]
            )),
            Ok(())
        );
    }
    // MEM_DONATE, and feature ID 1 (notification pending interrupt).
    for f in [u64::from(fid::FFA_MSG_WAIT), 0x8400_0071, 1] {
        assert_eq!(
            status(&call(&mut p, 0, &mut m, &[fid::FFA_FEATURES.into(), f])),
            Err(FfaError::NotSupported)
        );
    }
    assert_eq!(
        status(&call(&mut p, 0, &mut m, &[0x8400_00ee])),
        Err(FfaError::NotSupported)
    );
    assert!(p.first_call() && !p.first_call());
}

#[test]
fn rxtx_map_checks_alignment_ownership_and_state() {
    let (mut p, mut m) = (proxy(), FakeVm::new());
    let cases = [
        (TX + 8, RX, 1, FfaError::InvalidParameters),
        (TX, RX, 0, FfaError::InvalidParameters),
        (TX, RX, 1 << 6 | 1, FfaError::InvalidParameters),
        (TX, TX, 1, FfaError::InvalidParameters),
        (TX, RX, 2, FfaError::InvalidParameters),
        (TX, !0xfff, 1, FfaError::InvalidParameters),
        (TX, RAM + RAM_PAGES * PAGE_SIZE, 1, FfaError::Denied),
        (0x0900_0000, RX, 1, FfaError::Denied),
    ];
    for (tx, rx, pages, expected) in cases {
        assert_eq!(
            map(&mut p, 0, &mut m, tx, rx, pages),
            Err(expected),
            "{tx:#x} {rx:#x} {pages}"
        );
    }
    assert_eq!(map(&mut p, 0, &mut m, TX, RX, 1), Ok(()));
    assert_eq!(
        map(&mut p, 0, &mut m, TX, RX, 1),
        Err(FfaError::Denied),
        "mapped already"
    );
    // The other VM's table is its own.
    assert_eq!(map(&mut p, 1, &mut m, TX, RX, 1), Ok(()));
    let unmap = |p: &mut Proxy, m: &mut FakeVm, w1| {
        status(&call(p, 0, m, &[fid::FFA_RXTX_UNMAP.into(), w1]))
    };
    assert_eq!(
        unmap(&mut p, &mut m, 2 << 16),
        Err(FfaError::InvalidParameters),
        "not its ID"
    );
    assert_eq!(unmap(&mut p, &mut m, 1 << 16), Ok(()));
    assert_eq!(
        unmap(&mut p, &mut m, 0),
        Err(FfaError::InvalidParameters),
        "nothing mapped"
    );
    assert_eq!(
        map(&mut p, 0, &mut m, TX, RX, 1),
        Ok(()),
        "the pages are free again"
    );
}

#[test]
fn partition_info_fills_rx_until_released() {
    let (mut p, mut m) = (proxy(), FakeVm::new());
    let get = |p: &mut Proxy, m: &mut FakeVm, uuid: [u32; 4], flags| {
        let w = uuid.map(u64::from);
        call(
            p,
            0,
            m,
            &[
                fid::FFA_PARTITION_INFO_GET.into(),
                w[0],
                w[1],
                w[2],
                w[3],
                flags,
            ],
        )
    };
    let count_only = get(&mut p, &mut m, [0; 4], 1);
    assert_eq!(
        (status(&count_only), count_only[2], count_only[3]),
        (Ok(()), 2, 0)
    );
    assert_eq!(
        status(&get(&mut p, &mut m, [0; 4], 0)),
        Err(FfaError::Busy),
        "no RX buffer"
    );
    map(&mut p, 0, &mut m, TX, RX, 1).unwrap();
    let all = get(&mut p, &mut m, [0; 4], 0);
    assert_eq!((status(&all), all[2], all[3]), (Ok(()), 2, 24));
    let mut rx = [0u8; 48];
    m.read(IntermediatePhysAddr::new(RX), &mut rx).unwrap();
    let infos: Vec<_> = rx
        .chunks(24)
        .map(|c| PartitionInfo::decode(c).unwrap())
        .collect();
    assert_eq!(
        infos.iter().map(|i| i.id).collect::<Vec<_>>(),
        [ECHO_SP, RECORD_SP]
    );
    assert_eq!(
        status(&get(&mut p, &mut m, [0; 4], 0)),
        Err(FfaError::Busy),
        "RX is full"
    );
    let release =
        |p: &mut Proxy, m: &mut FakeVm| status(&call(p, 0, m, &[fid::FFA_RX_RELEASE.into()]));
    assert_eq!(release(&mut p, &mut m), Ok(()));
    assert_eq!(release(&mut p, &mut m), Err(FfaError::Denied));
    let uuid = infos[1].uuid;
    let words =
        core::array::from_fn(|i| u32::from_le_bytes(uuid[i * 4..i * 4 + 4].try_into().unwrap()));
    let one = get(&mut p, &mut m, words, 0);
    assert_eq!((status(&one), one[2]), (Ok(()), 1));
    release(&mut p, &mut m).unwrap();
    assert_eq!(
        status(&get(&mut p, &mut m, [1, 2, 3, 4], 0)),
        Err(FfaError::InvalidParameters)
    );
    assert_eq!(
        status(&get(&mut p, &mut m, [0; 4], 2)),
        Err(FfaError::InvalidParameters)
    );
}

#[test]
fn direct_requests_reach_partitions_only_from_their_sender() {
    let (mut p, mut m) = (proxy(), FakeVm::new());
    let req = |p: &mut Proxy, m: &mut FakeVm, w1: u64| {
        call(
            p,
            0,
            m,
            &[
                fid::FFA_MSG_SEND_DIRECT_REQ_64.into(),
                w1,
                0,
                11,
                12,
                13,
                14,
                15,
            ],
        )
    };
    let echo = req(&mut p, &mut m, 1 << 16 | u64::from(ECHO_SP));
    assert_eq!(echo[0], u64::from(fid::FFA_MSG_SEND_DIRECT_RESP_64));
    assert_eq!(echo[1], u64::from(ECHO_SP) << 16 | 1);
    assert_eq!(&echo[3..], &[11, 12, 13, 14, 15]);
    for w1 in [2 << 16 | u64::from(ECHO_SP), 1 << 16 | 2, 1 << 16 | 0x8003] {
        assert_eq!(
            status(&req(&mut p, &mut m, w1)),
            Err(FfaError::InvalidParameters),
            "{w1:#x}"
        );
    }
    assert_eq!(
        status(&call(
            &mut p,
            0,
            &mut m,
            &[
                fid::FFA_MSG_SEND_DIRECT_RESP_32.into(),
                1 << 16 | u64::from(ECHO_SP)
            ]
        )),
        Err(FfaError::Denied)
    );
}

fn transaction(sender: EndpointId, receiver: EndpointId, ranges: &[(u64, u32)]) -> MemTransaction {
    MemTransaction {
        sender,
        attributes: 0x2f,
        flags: 0,
        tag: 0,
        receivers: vec![Receiver {
            id: receiver,
            permissions: 2,
            flags: 0,
        }],
        ranges: ranges
            .iter()
            .map(|&(address, pages)| Range { address, pages })
            .collect(),
    }
}

/// Writes `t` into `vm`'s TX buffer and sends it with `function`.
fn send(
    p: &mut Proxy,
    vm: usize,
    m: &mut FakeVm,
    function: u32,
    t: &MemTransaction,
) -> Result<u64, FfaError> {
    let bytes = t.encode();
    m.write(IntermediatePhysAddr::new(TX), &bytes).unwrap();
    let len = bytes.len() as u64;
    let regs = call(p, vm, m, &[function.into(), len, len]);
    status(&regs).map(|()| regs[2] | regs[3] << 32)
}

fn reclaim(
    p: &mut Proxy,
    vm: usize,
    m: &mut FakeVm,
    handle: u64,
    flags: u64,
) -> Result<(), FfaError> {
    status(&call(
        p,
        vm,
        m,
        &[
            fid::FFA_MEM_RECLAIM.into(),
            handle & 0xffff_ffff,
            handle >> 32,
            flags,
        ],
    ))
}

#[test]
fn share_and_reclaim_track_page_ownership() {
    let (mut p, mut m0) = (proxy(), FakeVm::new());
    let mut m1 = FakeVm::new();
    let share = transaction(1, RECORD_SP, &[(PAGE, 2)]);
    assert_eq!(
        send(&mut p, 0, &mut m0, fid::FFA_MEM_SHARE_32, &share),
        Err(FfaError::InvalidParameters),
        "no TX buffer"
    );
    map(&mut p, 0, &mut m0, TX, RX, 1).unwrap();
    map(&mut p, 1, &mut m1, TX, RX, 1).unwrap();
    let handle = send(&mut p, 0, &mut m0, fid::FFA_MEM_SHARE_32, &share).unwrap();
    assert_eq!(
        send(
            &mut p,
            0,
            &mut m0,
            fid::FFA_MEM_LEND_64,
            &transaction(1, ECHO_SP, &[(PAGE + 0x1000, 1)])
        ),
        Err(FfaError::Denied),
        "the page is shared already"
    );
    assert_eq!(
        send(
            &mut p,
            0,
            &mut m0,
            fid::FFA_MEM_SHARE_32,
            &transaction(1, ECHO_SP, &[(TX, 1)])
        ),
        Err(FfaError::Denied),
        "a mailbox page"
    );
    assert_eq!(
        map(&mut p, 0, &mut m0, PAGE, PAGE + 0x1000, 1),
        Err(FfaError::Denied)
    );
    assert_eq!(
        reclaim(&mut p, 1, &mut m1, handle, 0),
        Err(FfaError::InvalidParameters),
        "another VM's handle"
    );
    assert_eq!(
        reclaim(&mut p, 0, &mut m0, handle, 2),
        Err(FfaError::InvalidParameters),
        "reserved flags"
    );
    assert_eq!(reclaim(&mut p, 0, &mut m0, handle, 0), Ok(()));
    assert_eq!(
        reclaim(&mut p, 0, &mut m0, handle, 0),
        Err(FfaError::InvalidParameters),
        "twice"
    );
    assert!(
        send(&mut p, 0, &mut m0, fid::FFA_MEM_SHARE_32, &share).is_ok(),
        "free again"
    );
}

#[test]
fn shares_outside_own_ram_or_to_vms_are_refused() {
    let (mut p, mut m) = (proxy(), FakeVm::new());
    map(&mut p, 0, &mut m, TX, RX, 1).unwrap();
    let end = RAM + RAM_PAGES * PAGE_SIZE;
    let cases = [
        (
            transaction(1, ECHO_SP, &[(end - 0x1000, 2)]),
            FfaError::Denied,
        ),
        (
            transaction(1, ECHO_SP, &[(0x0900_0000, 1)]),
            FfaError::Denied,
        ),
        (transaction(1, 2, &[(PAGE, 1)]), FfaError::InvalidParameters),
        (
            transaction(1, ECHO_SP, &[(PAGE, 2), (PAGE + 0x1000, 1)]),
            FfaError::InvalidParameters,
        ),
        (
            transaction(2, ECHO_SP, &[(PAGE, 1)]),
            FfaError::InvalidParameters,
        ),
    ];
    for (t, expected) in cases {
        assert_eq!(
            send(&mut p, 0, &mut m, fid::FFA_MEM_SHARE_64, &t),
            Err(expected),
            "{t:x?}"
        );
    }
    // A length past the TX buffer, and a fragmented descriptor.
    for (total, fragment) in [(4097, 4097), (96, 80)] {
        let regs = call(
            &mut p,
            0,
            &mut m,
            &[fid::FFA_MEM_SHARE_32.into(), total, fragment],
        );
        assert_eq!(status(&regs), Err(FfaError::InvalidParameters));
    }
}

#[test]
fn lent_memory_comes_back_zeroed_when_asked() {
    let (mut p, mut m) = (proxy(), FakeVm::new());
    map(&mut p, 0, &mut m, TX, RX, 1).unwrap();
    m.write(IntermediatePhysAddr::new(PAGE), &[0xaa; 16])
        .unwrap();
    let handle = send(
        &mut p,
        0,
        &mut m,
        fid::FFA_MEM_LEND_32,
        &transaction(1, RECORD_SP, &[(PAGE, 1)]),
    )
    .unwrap();
    reclaim(&mut p, 0, &mut m, handle, RECLAIM_ZERO).unwrap();
    let mut back = [0xffu8; 16];
    m.read(IntermediatePhysAddr::new(PAGE), &mut back).unwrap();
    assert_eq!(back, [0; 16]);
}

#[test]
fn a_reset_vm_starts_without_mailbox_or_shares() {
    let (mut p, mut m0) = (proxy(), FakeVm::new());
    let mut m1 = FakeVm::new();
    map(&mut p, 0, &mut m0, TX, RX, 1).unwrap();
    map(&mut p, 1, &mut m1, TX, RX, 1).unwrap();
    let mine = send(
        &mut p,
        0,
        &mut m0,
        fid::FFA_MEM_SHARE_32,
        &transaction(1, ECHO_SP, &[(PAGE, 1)]),
    )
    .unwrap();
    let theirs = send(
        &mut p,
        1,
        &mut m1,
        fid::FFA_MEM_SHARE_32,
        &transaction(2, ECHO_SP, &[(PAGE, 1)]),
    )
    .unwrap();
    assert_eq!(p.forget_vm(0), 0);
    assert_eq!(
        reclaim(&mut p, 0, &mut m0, mine, 0),
        Err(FfaError::InvalidParameters),
        "reclaimed already"
    );
    assert_eq!(
        map(&mut p, 0, &mut m0, TX, RX, 1),
        Ok(()),
        "no mailbox left"
    );
    assert!(send(
        &mut p,
        0,
        &mut m0,
        fid::FFA_MEM_SHARE_32,
        &transaction(1, ECHO_SP, &[(PAGE, 1)])
    )
    .is_ok());
    assert_eq!(
        reclaim(&mut p, 1, &mut m1, theirs, 0),
        Ok(()),
        "the other VM's share is untouched"
    );
}

#[test]
fn the_spmc_gets_physical_pages() {
    let pages = [
        (PAGE, PhysAddr::new(0x9000_0000)),
        (PAGE + 0x1000, PhysAddr::new(0x9000_1000)),
        (PAGE + 0x2000, PhysAddr::new(0x7000_0000)),
    ];
    assert_eq!(
        physical_ranges(&pages),
        [
            Range {
                address: 0x9000_0000,
                pages: 2
            },
            Range {
                address: 0x7000_0000,
                pages: 1
            }
        ]
    );
}
