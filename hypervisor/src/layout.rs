//! The machine every VM sees: QEMU `virt`'s layout (DESIGN.md), so stock
//! kernels and firmware run unmodified. Guest-physical addresses and guest
//! interrupt IDs only.
#![forbid(unsafe_code)]

use crate::addr::IntermediatePhysAddr;

/// Guest RAM starts here.
pub const RAM_BASE: IntermediatePhysAddr = IntermediatePhysAddr::new(0x4000_0000);
/// Emulated GICv3 distributor.
pub const GICD_BASE: IntermediatePhysAddr = IntermediatePhysAddr::new(0x0800_0000);
/// Size of the distributor frame.
pub const GICD_SIZE: u64 = 0x1_0000;
/// Emulated GICv3 redistributors, one [`GICR_STRIDE`] frame pair per vCPU.
pub const GICR_BASE: IntermediatePhysAddr = IntermediatePhysAddr::new(0x080a_0000);
/// Bytes of redistributor per vCPU (RD_base + SGI_base frames).
pub const GICR_STRIDE: u64 = 0x2_0000;
/// Emulated PL011 UART.
pub const PL011_BASE: IntermediatePhysAddr = IntermediatePhysAddr::new(0x0900_0000);
/// Size of one PrimeCell device window.
pub const PRIMECELL_SIZE: u64 = 0x1000;
/// Emulated PL031 RTC.
pub const PL031_BASE: IntermediatePhysAddr = IntermediatePhysAddr::new(0x0901_0000);
/// First virtio-mmio slot.
pub const VIRTIO_BASE: IntermediatePhysAddr = IntermediatePhysAddr::new(0x0a00_0000);
/// Number of virtio-mmio slots (as on QEMU virt), 0x200 bytes each.
pub const VIRTIO_SLOTS: u64 = 32;

/// Guest INTID of the PL011 (SPI 1).
pub const PL011_INTID: u32 = 33;
/// Guest INTID of the PL031 (SPI 2).
pub const PL031_INTID: u32 = 34;
/// Guest INTID of virtio-mmio slot 0 (SPI 16); slot n has this + n.
pub const VIRTIO_INTID_BASE: u32 = 48;
/// Virtual timer PPI.
pub const VTIMER_INTID: u32 = 27;
/// Non-secure EL1 physical timer PPI.
pub const PTIMER_INTID: u32 = 30;
/// EL2 physical timer PPI (the hypervisor's own time slices).
pub const HYP_TIMER_INTID: u32 = 26;
/// GIC maintenance PPI.
pub const MAINTENANCE_INTID: u32 = 25;

/// Most vCPUs one VM may have.
pub const MAX_VCPUS: u32 = 8;
