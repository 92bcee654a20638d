//! The device tree each VM boots with: QEMU's `virt` layout as DESIGN.md
//! gives it (GICv3, PL011, PL031, architected timer, PSCI over HVC, the 32
//! virtio-mmio slots, the two CFI flash banks from 0, RAM at 0x4000_0000),
//! the VM's CPUs and memory, and
//! `/chosen` with its command line, initrd and random seeds. Node names, phandles and interrupt specifiers follow
//! what QEMU itself generates, so guests see nothing unusual.

use super::layout::RAM_BASE;
use crate::scenario::net::VIRTIO_SLOTS;
use anyhow::{anyhow, Result};
use vm_fdt::FdtWriter;

pub const GICD_BASE: u64 = 0x0800_0000;
pub const GICD_SIZE: u64 = 0x1_0000;
pub const GICR_BASE: u64 = 0x080A_0000;
/// Redistributor frames per vCPU (RD + SGI).
pub const GICR_STRIDE: u64 = 0x2_0000;
pub const UART_BASE: u64 = 0x0900_0000;
pub const RTC_BASE: u64 = 0x0901_0000;
/// The two CFI flash banks, each this big, from address 0.
pub const FLASH_BANK_SIZE: u64 = 0x0400_0000;
/// virtio-mmio slot 0, and the distance between slots.
pub const VIRTIO_BASE: u64 = 0x0A00_0000;
pub const VIRTIO_STRIDE: u64 = 0x200;
/// SPI of virtio-mmio slot 0; slot n has `VIRTIO_SPI + n`.
const VIRTIO_SPI: u32 = 16;
const MMIO_PAGE: u64 = 0x1000;
/// SPI numbers (INTID - 32).
const UART_SPI: u32 = 1;
const RTC_SPI: u32 = 2;
/// PPI numbers (INTID - 16): secure and non-secure physical, virtual and
/// hypervisor timers; GIC maintenance.
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
const MAINTENANCE_PPI: u32 = 9;
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_EDGE_RISING: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;
const PHANDLE_CLOCK: u32 = 0x8000;
const PHANDLE_GIC: u32 = 0x8001;
/// QEMU virt's APB clock.
const APB_CLOCK_HZ: u32 = 24_000_000;

/// What one VM's device tree describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDt {
    pub vcpus: u32,
    pub memory_size: u64,
    /// `compatible` of each CPU node (`arm,cortex-a72`).
    pub cpu_compatible: String,
    pub bootargs: String,
    /// Start and end IPA of the initrd.
    pub initrd: Option<(u64, u64)>,
    /// `/chosen` `rng-seed` and `kaslr-seed`, as QEMU gives every guest.
    pub rng_seed: [u8; 32],
    pub kaslr_seed: u64,
}

fn fdt_err(e: vm_fdt::Error) -> anyhow::Error {
    anyhow!("writing the guest device tree: {e}")
}

impl GuestDt {
    /// The flattened device tree.
    pub fn to_dtb(&self) -> Result<Vec<u8>> {
        self.write().map_err(fdt_err)
    }

    fn write(&self) -> Result<Vec<u8>, vm_fdt::Error> {
        let mut fdt = FdtWriter::new()?;
        let root = fdt.begin_node("")?;
        fdt.property_string("compatible", "linux,dummy-virt")?;
        fdt.property_u32("#address-cells", 2)?;
        fdt.property_u32("#size-cells", 2)?;
        fdt.property_u32("interrupt-parent", PHANDLE_GIC)?;

        let chosen = fdt.begin_node("chosen")?;
        fdt.property("rng-seed", &self.rng_seed)?;
        fdt.property_u64("kaslr-seed", self.kaslr_seed)?;
        // As QEMU: no `bootargs` for an empty command line.
        if !self.bootargs.is_empty() {
            fdt.property_string("bootargs", &self.bootargs)?;
        }
        fdt.property_string("stdout-path", &format!("/pl011@{UART_BASE:x}"))?;
        if let Some((start, end)) = self.initrd {
            fdt.property_u64("linux,initrd-start", start)?;
            fdt.property_u64("linux,initrd-end", end)?;
        }
        fdt.end_node(chosen)?;

        // QEMU's two flash banks, one node (firmware such as U-Boot finds
        // them here).
        let flash = fdt.begin_node("flash@0")?;
        fdt.property_u32("bank-width", 4)?;
        fdt.property_array_u64(
            "reg",
            &[0, FLASH_BANK_SIZE, FLASH_BANK_SIZE, FLASH_BANK_SIZE],
        )?;
        fdt.property_string("compatible", "cfi-flash")?;
        fdt.end_node(flash)?;

        let memory = fdt.begin_node(&format!("memory@{RAM_BASE:x}"))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &[RAM_BASE, self.memory_size])?;
        fdt.end_node(memory)?;

        let cpus = fdt.begin_node("cpus")?;
        fdt.property_u32("#address-cells", 1)?;
        fdt.property_u32("#size-cells", 0)?;
        for cpu in 0..self.vcpus {
            let node = fdt.begin_node(&format!("cpu@{cpu:x}"))?;
            fdt.property_string("device_type", "cpu")?;
            fdt.property_string("compatible", &self.cpu_compatible)?;
            fdt.property_u32("reg", cpu)?;
            fdt.property_string("enable-method", "psci")?;
            fdt.end_node(node)?;
        }
        fdt.end_node(cpus)?;

        let psci = fdt.begin_node("psci")?;
        fdt.property_string_list(
            "compatible",
            vec![
                "arm,psci-1.0".into(),
                "arm,psci-0.2".into(),
                "arm,psci".into(),
            ],
        )?;
        fdt.property_string("method", "hvc")?;
        fdt.end_node(psci)?;

        let gic = fdt.begin_node(&format!("intc@{GICD_BASE:x}"))?;
        fdt.property_string("compatible", "arm,gic-v3")?;
        fdt.property_u32("#interrupt-cells", 3)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_u32("#redistributor-regions", 1)?;
        fdt.property_array_u64(
            "reg",
            &[
                GICD_BASE,
                GICD_SIZE,
                GICR_BASE,
                GICR_STRIDE * u64::from(self.vcpus),
            ],
        )?;
        fdt.property_array_u32("interrupts", &[GIC_PPI, MAINTENANCE_PPI, IRQ_LEVEL_HIGH])?;
        fdt.property_phandle(PHANDLE_GIC)?;
        fdt.end_node(gic)?;

        let timer = fdt.begin_node("timer")?;
        fdt.property_string("compatible", "arm,armv8-timer")?;
        let cells: Vec<u32> = TIMER_PPIS
            .iter()
            .flat_map(|ppi| [GIC_PPI, *ppi, IRQ_LEVEL_HIGH])
            .collect();
        fdt.property_array_u32("interrupts", &cells)?;
        fdt.property_null("always-on")?;
        fdt.end_node(timer)?;

        let clock = fdt.begin_node("apb-pclk")?;
        fdt.property_string("compatible", "fixed-clock")?;
        fdt.property_u32("#clock-cells", 0)?;
        fdt.property_u32("clock-frequency", APB_CLOCK_HZ)?;
        fdt.property_string("clock-output-names", "clk24mhz")?;
        fdt.property_phandle(PHANDLE_CLOCK)?;
        fdt.end_node(clock)?;

        let uart = fdt.begin_node(&format!("pl011@{UART_BASE:x}"))?;
        fdt.property_string_list(
            "compatible",
            vec!["arm,pl011".into(), "arm,primecell".into()],
        )?;
        fdt.property_array_u64("reg", &[UART_BASE, MMIO_PAGE])?;
        fdt.property_array_u32("interrupts", &[GIC_SPI, UART_SPI, IRQ_LEVEL_HIGH])?;
        fdt.property_array_u32("clocks", &[PHANDLE_CLOCK, PHANDLE_CLOCK])?;
        fdt.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
        fdt.end_node(uart)?;

        let rtc = fdt.begin_node(&format!("pl031@{RTC_BASE:x}"))?;
        fdt.property_string_list(
            "compatible",
            vec!["arm,pl031".into(), "arm,primecell".into()],
        )?;
        fdt.property_array_u64("reg", &[RTC_BASE, MMIO_PAGE])?;
        fdt.property_array_u32("interrupts", &[GIC_SPI, RTC_SPI, IRQ_LEVEL_HIGH])?;
        fdt.property_u32("clocks", PHANDLE_CLOCK)?;
        fdt.property_string("clock-names", "apb_pclk")?;
        fdt.end_node(rtc)?;

        // Every slot, lowest address first, with QEMU's properties in
        // QEMU's order: a slot without a device reads as empty (DeviceID 0).
        for slot in 0..VIRTIO_SLOTS as u32 {
            let base = VIRTIO_BASE + u64::from(slot) * VIRTIO_STRIDE;
            let node = fdt.begin_node(&format!("virtio_mmio@{base:x}"))?;
            fdt.property_null("dma-coherent")?;
            fdt.property_array_u32("interrupts", &[GIC_SPI, VIRTIO_SPI + slot, IRQ_EDGE_RISING])?;
            fdt.property_array_u64("reg", &[base, VIRTIO_STRIDE])?;
            fdt.property_string("compatible", "virtio,mmio")?;
            fdt.end_node(node)?;
        }

        fdt.end_node(root)?;
        fdt.finish()
    }
}
