//! Fuzz targets for what the hypervisor parses: the MMIO decoder (a
//! guest's syndrome and instruction word), the boot bundle (cpio archive,
//! manifest DTB) and the FF-A descriptors a guest writes into its TX buffer.

use super::Input;
use crate::arch::aarch64::mmio_decode::{decode, decode_instruction, decode_syndrome};
use crate::boot::cpio::Archive;
use crate::ffa::descriptors::{parse_mem_transaction, PartitionInfo, ShareKind};

/// A data-abort syndrome, the guest's PSTATE and the instruction at its
/// PC; a decoded access names a register the guest has.
pub fn mmio_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let esr = input.u64();
    let spsr = input.u64();
    let word = input.u32();
    let instruction = (!input.bool()).then_some(word);
    for access in [
        decode_syndrome(esr),
        decode_instruction(word),
        decode(esr, spsr, instruction),
    ]
    .into_iter()
    .flatten()
    {
        assert!(access.register <= 31, "{access:?}");
        if let Some(writeback) = access.writeback {
            assert!(writeback.base <= 31, "{access:?}");
        }
    }
}

/// The boot bundle's archive: every member, and lookups by name.
pub fn cpio(data: &[u8]) {
    let archive = Archive::new(data);
    let mut names = Vec::new();
    for entry in archive.entries().take(1024) {
        let Ok(entry) = entry else { break };
        let _ = entry.is_file();
        names.push(entry.name);
    }
    for name in names
        .iter()
        .take(16)
        .chain(&["manifest.dtb", "vm0/kernel", ""])
    {
        let _ = archive.find(name);
    }
}

/// The manifest DTB; a manifest that parses has VMs whose RAM checks
/// answer for any range.
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = crate::boot::manifest::parse(data) else {
        return;
    };
    for vm in &manifest.vms {
        for (ipa, len) in [(0x4000_0000, 4), (u64::MAX - 3, 4), (0, u64::MAX)] {
            let _ = vm.ram_contains(crate::addr::IntermediatePhysAddr::new(ipa), len);
        }
    }
}

/// A memory transaction descriptor as a guest writes it into its TX
/// buffer, and a partition-information descriptor as the SPMC writes it.
/// What parses encodes back to a descriptor that parses the same.
pub fn ffa_descriptors(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = if input.bool() {
        ShareKind::Share
    } else {
        ShareKind::Lend
    };
    let sender = input.u16();
    let rest = input.bytes(data.len());
    if let Ok(transaction) = parse_mem_transaction(rest, kind, sender) {
        let _ = transaction.total_pages();
        for range in &transaction.ranges {
            // Its pages are walked one by one (`page_addresses`).
            assert!(range.end().is_some(), "{range:?} wraps");
            let _ = range.page_addresses().take(4).count();
        }
        let again = parse_mem_transaction(&transaction.encode(), kind, sender);
        assert_eq!(again.as_ref(), Ok(&transaction), "encode/parse round trip");
    }
    if let Some(info) = PartitionInfo::decode(rest) {
        assert_eq!(PartitionInfo::decode(&info.encode()), Some(info));
    }
}
