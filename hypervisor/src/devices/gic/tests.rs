//! Host tests of the vGICv3: register behaviour as Linux's irq-gic-v3
//! driver exercises it, and the pending/activate/deactivate flow.

use super::*;
use crate::devices::AccessWidth::{Byte, Double, Word};

const SPIS: u32 = 64;
const UART_SPI: u32 = 33;
const VTIMER_PPI: u32 = 27;
/// GICD_CTLR: EnableGrp0 | EnableGrp1 | ARE as Linux writes it.
const CTLR_LINUX: u64 = 0b1_0011;

fn vgic(vcpus: usize) -> Vgic {
    let affinities: Vec<_> = (0..vcpus)
        .map(|i| Affinity::new(0, 0, 0, i as u8))
        .collect();
    Vgic::new(SPIS, &affinities).unwrap()
}

fn gicd_read(gic: &mut Vgic, offset: u64) -> u64 {
    gic.distributor().read(offset, Word).unwrap()
}

fn gicd_write(gic: &mut Vgic, offset: u64, value: u64) {
    gic.distributor().write(offset, Word, value).unwrap()
}

fn gicr_write(gic: &mut Vgic, vcpu: u64, offset: u64, value: u64) {
    gic.redistributors()
        .write(vcpu * GICR_FRAME_SIZE + offset, Word, value)
        .unwrap()
}

fn gicr_read(gic: &mut Vgic, vcpu: u64, offset: u64) -> u64 {
    gic.redistributors()
        .read(vcpu * GICR_FRAME_SIZE + offset, Word)
        .unwrap()
}

/// What Linux's gic_enable_redist and gic_cpu_config do for one vCPU.
fn wake_and_enable_ppi(gic: &mut Vgic, vcpu: u64, ppi: u32, priority: u8) {
    gicr_write(gic, vcpu, 0x14, 0);
    gicr_write(gic, vcpu, 0x1_0080, 0xFFFF_FFFF);
    gic.redistributors()
        .write(
            vcpu * GICR_FRAME_SIZE + 0x1_0400 + u64::from(ppi),
            Byte,
            u64::from(priority),
        )
        .unwrap();
    gicr_write(gic, vcpu, 0x1_0100, 1 << ppi);
}

#[test]
fn identification_as_a_gicv3() {
    let mut gic = vgic(2);
    assert_eq!(
        gicd_read(&mut gic, 0xFFE8) >> 4 & 0xF,
        3,
        "GICD_PIDR2.ArchRev"
    );
    assert_eq!(
        gicr_read(&mut gic, 1, 0xFFE8) >> 4 & 0xF,
        3,
        "GICR_PIDR2.ArchRev"
    );
    assert_eq!(gicd_read(&mut gic, 0x0008), u64::from(IIDR));
    let typer = gicd_read(&mut gic, 0x0004);
    assert_eq!(
        typer & 0x1F,
        u64::from((SPIS + 32) / 32 - 1),
        "ITLinesNumber"
    );
    assert_eq!(typer >> 19 & 0x1F, 9, "IDbits: INTIDs below 1024");
    assert_eq!(typer >> 5 & 7, 1, "CPUNumber = vCPUs - 1");
    assert_eq!(typer >> 17 & 1, 0, "no LPIs");
    let cidr: Vec<_> = (0..4)
        .map(|i| gicd_read(&mut gic, 0xFFF0 + 4 * i))
        .collect();
    assert_eq!(cidr, [0x0D, 0xF0, 0x05, 0xB1]);
}

#[test]
fn ctlr_keeps_enables_and_reports_are_and_ds() {
    let mut gic = vgic(1);
    assert_eq!(gicd_read(&mut gic, 0) & 0b11, 0);
    gicd_write(&mut gic, 0, CTLR_LINUX);
    let ctlr = gicd_read(&mut gic, 0);
    assert_eq!(ctlr & 0b11, 0b11);
    assert_ne!(ctlr & (1 << 4), 0, "ARE");
    assert_ne!(ctlr & (1 << 6), 0, "DS");
    assert_eq!(ctlr >> 31, 0, "RWP never set");
    gicd_write(&mut gic, 0, 0);
    assert_eq!(gicd_read(&mut gic, 0) & 0b11, 0);
}

#[test]
fn redistributor_typer_affinity_and_last() {
    let gic = Vgic::new(
        SPIS,
        &[
            Affinity::from_mpidr(0x8000_0000),
            Affinity::from_mpidr(0x1_0000_0101),
        ],
    )
    .unwrap();
    let first = gic.redistributors().read(0x8, Double).unwrap();
    let second = gic
        .redistributors()
        .read(GICR_FRAME_SIZE + 0x8, Double)
        .unwrap();
    assert_eq!(first >> 32, 0, "MPIDR bit 31 (RES1) is not affinity");
    assert_eq!(first & (1 << 4), 0, "not last");
    assert_eq!(second >> 32, 0x0100_0101, "Aff3.Aff2.Aff1.Aff0");
    assert_eq!(second >> 8 & 0xFFFF, 1, "processor number");
    assert_ne!(second & (1 << 4), 0, "last");
    let high_half = gic
        .redistributors()
        .read(GICR_FRAME_SIZE + 0xC, Word)
        .unwrap();
    assert_eq!(high_half, 0x0100_0101, "32-bit read of the upper half");
    assert_eq!(
        gic.redistributors().read(2 * GICR_FRAME_SIZE, Word),
        Err(MmioError::OutOfWindow {
            offset: 2 * GICR_FRAME_SIZE
        })
    );
}

#[test]
fn waker_handshake() {
    let mut gic = vgic(1);
    assert_eq!(gicr_read(&mut gic, 0, 0x14), 0b110, "asleep out of reset");
    gicr_write(&mut gic, 0, 0x14, 0);
    assert_eq!(
        gicr_read(&mut gic, 0, 0x14),
        0,
        "ChildrenAsleep clears with ProcessorSleep"
    );
    gicr_write(&mut gic, 0, 0x14, 0b010);
    assert_eq!(gicr_read(&mut gic, 0, 0x14), 0b110);
}

#[test]
fn distributor_banks_cover_spis_only() {
    let mut gic = vgic(1);
    gicd_write(&mut gic, 0x100, 0xFFFF_FFFF);
    assert_eq!(
        gicd_read(&mut gic, 0x100),
        0,
        "SGI/PPI word is RAZ/WI with ARE"
    );
    gicd_write(&mut gic, 0x104, 0b10);
    assert!(gic.irq(0, UART_SPI).unwrap().enabled);
    assert_eq!(gicd_read(&mut gic, 0x104), 0b10);
    gicd_write(&mut gic, 0x184, 0b10);
    assert!(!gic.irq(0, UART_SPI).unwrap().enabled);
    gicd_write(&mut gic, 0x10C, 0xFFFF_FFFF);
    assert_eq!(gicd_read(&mut gic, 0x10C), 0, "past the last SPI");
    gicd_write(&mut gic, 0x084, 0xFFFF_FFFF);
    assert_eq!(gicd_read(&mut gic, 0x084), 0xFFFF_FFFF, "group");
}

#[test]
fn priorities_config_and_routing() {
    let mut gic = vgic(2);
    gicd_write(&mut gic, 0x420, 0xA0A0_A0A0);
    gic.distributor().write(0x421, Byte, 0x57).unwrap();
    assert_eq!(
        gicd_read(&mut gic, 0x420),
        0xA0A0_50A0,
        "byte write, 5 priority bits"
    );
    assert_eq!(gic.irq(0, UART_SPI).unwrap().priority, 0x50);
    gicd_write(&mut gic, 0xC08, 0b1000);
    assert!(gic.irq(0, UART_SPI).unwrap().edge);
    gic.distributor()
        .write(0x6000 + 8 * u64::from(UART_SPI), Double, 0x1)
        .unwrap();
    assert_eq!(
        gic.distributor()
            .read(0x6000 + 8 * u64::from(UART_SPI), Double),
        Ok(1)
    );
    gic.distributor()
        .write(0x6000 + 8 * 40 + 4, Word, 0xFF)
        .unwrap();
    assert_eq!(
        gic.distributor().read(0x6000 + 8 * 40, Double),
        Ok(0xFF_0000_0000),
        "Aff3 via the upper half"
    );
    gic.distributor()
        .write(0x6000 + 8 * 41, Double, 0x8000_0000)
        .unwrap();
    assert_eq!(
        gic.distributor().read(0x6000 + 8 * 41, Double),
        Ok(0),
        "IRM is RAZ/WI"
    );
}

#[test]
fn bad_widths_are_errors() {
    let mut gic = vgic(1);
    assert_eq!(
        gic.distributor().read(0, Byte),
        Err(MmioError::BadAccess {
            offset: 0,
            width: Byte
        })
    );
    assert_eq!(
        gic.distributor().read(0x100, Double),
        Err(MmioError::BadAccess {
            offset: 0x100,
            width: Double
        })
    );
    assert_eq!(
        gic.redistributors().read(0x1_0100, Byte),
        Err(MmioError::BadAccess {
            offset: 0x1_0100,
            width: Byte
        })
    );
    assert_eq!(
        gic.distributor().read(0x1_0000, Word),
        Err(MmioError::OutOfWindow { offset: 0x1_0000 })
    );
    assert_eq!(gicd_read(&mut gic, 0x0F00 - 0x100), 0, "reserved is RAZ");
}

#[test]
fn timer_ppi_flows_through_activate_and_deactivate() {
    let mut gic = vgic(1);
    wake_and_enable_ppi(&mut gic, 0, VTIMER_PPI, 0xA0);
    gic.set_ppi_level(0, VTIMER_PPI, true).unwrap();
    assert_eq!(
        gic.highest_pending(0),
        Ok(None),
        "groups disabled at the distributor"
    );
    gicd_write(&mut gic, 0, CTLR_LINUX);
    let pending = gic.highest_pending(0).unwrap().unwrap();
    assert_eq!(
        pending,
        PendingIrq {
            intid: VTIMER_PPI,
            priority: 0xA0,
            group: Group::One,
            edge: false,
        }
    );
    gic.activate(0, VTIMER_PPI).unwrap();
    assert_eq!(
        gic.highest_pending(0),
        Ok(None),
        "active, not offered twice"
    );
    assert_ne!(
        gicr_read(&mut gic, 0, 0x1_0300) & (1 << VTIMER_PPI),
        0,
        "ISACTIVER0"
    );
    gic.deactivate(0, VTIMER_PPI).unwrap();
    assert_eq!(
        gic.highest_pending(0).unwrap().map(|p| p.intid),
        Some(VTIMER_PPI),
        "line still high"
    );
    gic.set_ppi_level(0, VTIMER_PPI, false).unwrap();
    assert_eq!(gic.highest_pending(0), Ok(None));
}

/// QEMU's GICv3 (and KVM's) keep GICR_WAKER as a register only: a guest
/// that never wakes its redistributor, or puts it back to sleep, still gets
/// its interrupts.
#[test]
fn a_sleeping_redistributor_still_forwards_as_on_qemu() {
    let mut gic = vgic(1);
    wake_and_enable_ppi(&mut gic, 0, VTIMER_PPI, 0xA0);
    gicr_write(&mut gic, 0, 0x14, 0b10);
    assert_eq!(gicr_read(&mut gic, 0, 0x14), 0b110, "asleep, as written");
    gicd_write(&mut gic, 0, CTLR_LINUX);
    gic.raise_edge(0, VTIMER_PPI).unwrap();
    assert_eq!(
        gic.highest_pending(0).unwrap().map(|irq| irq.intid),
        Some(VTIMER_PPI)
    );
}

#[test]
fn spis_go_to_the_routed_vcpu_by_priority() {
    let mut gic = vgic(2);
    for vcpu in 0..2 {
        wake_and_enable_ppi(&mut gic, vcpu, VTIMER_PPI, 0xA0);
    }
    gicd_write(&mut gic, 0, CTLR_LINUX);
    gicd_write(&mut gic, 0x084, 0xFFFF_FFFF);
    gicd_write(&mut gic, 0x104, 0b110);
    gicd_write(&mut gic, 0x420, 0x00_80_90_00);
    gic.distributor().write(0x6000 + 8 * 34, Double, 1).unwrap();
    assert_eq!(gic.spi_target(34), Ok(Some(1)));
    assert_eq!(
        gic.spi_target(UART_SPI),
        Ok(Some(0)),
        "IROUTER resets to affinity 0"
    );
    gic.distributor()
        .write(0x6000 + 8 * 35, Double, 0x7)
        .unwrap();
    assert_eq!(gic.spi_target(35), Ok(None), "no vCPU with Aff0 = 7");
    assert_eq!(
        gic.spi_target(32 + SPIS),
        Err(VgicError::NoSuchInterrupt(32 + SPIS))
    );
    // Both vCPUs find no SPI, then one rises: the scans that skip the
    // SPIs while nothing of them changed must see it.
    assert_eq!(gic.highest_pending(0), Ok(None));
    assert_eq!(gic.highest_pending(1), Ok(None));
    gic.set_spi_level(UART_SPI, true).unwrap();
    gic.raise_edge(0, VTIMER_PPI).unwrap();
    assert_eq!(
        gic.highest_pending(0).unwrap().map(|p| p.intid),
        Some(UART_SPI),
        "0x90 beats 0xA0"
    );
    gic.set_spi_level(34, true).unwrap();
    assert_eq!(
        gic.highest_pending(1).unwrap().map(|p| p.intid),
        Some(34),
        "routed to Aff0 = 1"
    );
    gic.set_spi_level(UART_SPI, false).unwrap();
    assert_eq!(
        gic.highest_pending(0).unwrap().map(|p| p.intid),
        Some(VTIMER_PPI)
    );
    gicd_write(&mut gic, 0x280 + 4, 0b100);
    assert_eq!(
        gic.highest_pending(1).unwrap().map(|p| p.intid),
        Some(34),
        "ICPENDR cannot clear a high level line"
    );
}

#[test]
fn edge_spi_pends_once_per_rising_edge() {
    let mut gic = vgic(1);
    gicr_write(&mut gic, 0, 0x14, 0);
    gicd_write(&mut gic, 0, CTLR_LINUX);
    gicd_write(&mut gic, 0x084, 0xFFFF_FFFF);
    gicd_write(&mut gic, 0x104, 0b10);
    gicd_write(&mut gic, 0xC08, 0b1000);
    gic.set_spi_level(UART_SPI, true).unwrap();
    gic.activate(0, UART_SPI).unwrap();
    gic.deactivate(0, UART_SPI).unwrap();
    assert_eq!(gic.highest_pending(0), Ok(None), "no new edge");
    gic.set_spi_level(UART_SPI, false).unwrap();
    gic.set_spi_level(UART_SPI, true).unwrap();
    assert_eq!(
        gic.highest_pending(0).unwrap().map(|p| p.intid),
        Some(UART_SPI)
    );
}

#[test]
fn sgis_reach_their_targets() {
    let mut gic = vgic(3);
    for vcpu in 0..3 {
        gicr_write(&mut gic, vcpu, 0x14, 0);
        gicr_write(&mut gic, vcpu, 0x1_0080, 0xFFFF_FFFF);
        gicr_write(&mut gic, vcpu, 0x1_0100, 0xFFFF);
    }
    gicd_write(&mut gic, 0, CTLR_LINUX);
    // INTID 5 to target list {1, 2} of cluster 0.
    let value = (5 << 24) | 0b110;
    assert_eq!(gic.send_sgi(0, value), Ok(0b110));
    assert_eq!(gic.highest_pending(1).unwrap().map(|p| p.intid), Some(5));
    assert_eq!(gic.highest_pending(0), Ok(None));
    // IRM: everyone but the sender.
    assert_eq!(gic.send_sgi(1, (3 << 24) | (1 << 40)), Ok(0b101));
    // Another cluster (Aff1 = 1): nobody.
    assert_eq!(gic.send_sgi(0, (1 << 16) | 0b1), Ok(0));
    assert_eq!(gic.send_sgi(7, 0), Err(VgicError::NoSuchVcpu(7)));
}

#[test]
fn configuration_is_checked() {
    assert_eq!(
        Vgic::new(33, &[Affinity::new(0, 0, 0, 0)]).err(),
        Some(VgicError::SpiCount(33))
    );
    assert_eq!(Vgic::new(32, &[]).err(), Some(VgicError::VcpuCount(0)));
    let gic = vgic(1);
    assert_eq!(
        gic.irq(0, 32 + SPIS),
        Err(VgicError::NoSuchInterrupt(32 + SPIS))
    );
    assert_eq!(gic.irq(1, 0), Err(VgicError::NoSuchVcpu(1)));
}

#[test]
fn generations_move_for_the_vcpus_a_change_may_affect() {
    let mut gic = vgic(2);
    gicd_write(&mut gic, 0x0, CTLR_LINUX);
    wake_and_enable_ppi(&mut gic, 0, VTIMER_PPI, 0xa0);
    wake_and_enable_ppi(&mut gic, 1, VTIMER_PPI, 0xa0);
    let at = |g: &Vgic| [g.generation(0), g.generation(1)];
    let settled = at(&gic);
    assert_eq!(gic.highest_pending(0), Ok(None));
    assert_eq!(gic.irq(0, VTIMER_PPI).map(|irq| irq.enabled), Ok(true));
    assert_eq!(at(&gic), settled, "reads leave them alone");

    type Change<'a> = &'a dyn Fn(&mut Vgic);
    // (change, moves vCPU 0, moves vCPU 1)
    let changes: [(Change, bool, bool); 7] = [
        (
            &|g| g.set_ppi_level(0, VTIMER_PPI, true).unwrap(),
            true,
            false,
        ),
        (&|g| g.activate(0, VTIMER_PPI).unwrap(), true, false),
        (&|g| g.deactivate(0, VTIMER_PPI).unwrap(), true, false),
        (&|g| g.raise_edge(1, 3).unwrap(), false, true),
        (&|g| g.set_spi_level(UART_SPI, true).unwrap(), true, true),
        (&|g| g.raise_edge(0, UART_SPI).unwrap(), true, true),
        // IRM: every vCPU but the sender.
        (
            &|g| {
                g.send_sgi(0, 1 << 40).unwrap();
            },
            false,
            true,
        ),
    ];
    for (change, moves0, moves1) in changes {
        let before = at(&gic);
        change(&mut gic);
        let after = at(&gic);
        assert_eq!(
            [after[0] != before[0], after[1] != before[1]],
            [moves0, moves1]
        );
    }
    let before = at(&gic);
    gicd_write(&mut gic, 0x0, 0);
    let after = at(&gic);
    assert!(
        after[0] != before[0] && after[1] != before[1],
        "an MMIO write may change anything"
    );
}

#[test]
fn activate_highest_hands_over_what_highest_pending_names() {
    let gic = &mut vgic(1);
    gicd_write(gic, 0x0, CTLR_LINUX);
    wake_and_enable_ppi(gic, 0, VTIMER_PPI, 0xa0);
    gic.set_ppi_level(0, VTIMER_PPI, true).unwrap();
    let named = gic.highest_pending(0).unwrap();
    assert_eq!(named.map(|p| p.intid), Some(VTIMER_PPI));
    assert_eq!(
        gic.activate_highest(0),
        Ok(named.map(|irq| Activated { irq, more: false }))
    );
    assert!(gic.irq(0, VTIMER_PPI).unwrap().active);
    assert_eq!(gic.activate_highest(0), Ok(None), "active: not again");
}

#[test]
fn activate_highest_says_whether_another_interrupt_waits() {
    const PTIMER_PPI: u32 = 30;
    let gic = &mut vgic(1);
    gicd_write(gic, 0x0, CTLR_LINUX);
    wake_and_enable_ppi(gic, 0, VTIMER_PPI, 0xa0);
    wake_and_enable_ppi(gic, 0, PTIMER_PPI, 0x80);
    gic.set_ppi_level(0, VTIMER_PPI, true).unwrap();
    gic.set_ppi_level(0, PTIMER_PPI, true).unwrap();
    let first = gic.activate_highest(0).unwrap().unwrap();
    assert_eq!((first.irq.intid, first.more), (PTIMER_PPI, true));
    let second = gic.activate_highest(0).unwrap().unwrap();
    assert_eq!((second.irq.intid, second.more), (VTIMER_PPI, false));
    assert_eq!(gic.activate_highest(0), Ok(None));
}

#[test]
fn reset_forgets_everything_the_guest_set() {
    let gic = &mut vgic(2);
    gicd_write(gic, 0x0, CTLR_LINUX);
    wake_and_enable_ppi(gic, 1, VTIMER_PPI, 0xa0);
    gic.set_ppi_level(1, VTIMER_PPI, true).unwrap();
    assert!(gic.highest_pending(1).unwrap().is_some());
    let before = gic.generation(1);
    gic.reset();
    assert_ne!(gic.generation(1), before);
    assert_eq!(gic.highest_pending(1), Ok(None));
    assert!(!gic.irq(1, VTIMER_PPI).unwrap().enabled);
    assert_eq!(gicd_read(gic, 0x0) & 0b11, 0, "groups disabled again");
}

/// The search for a deliverable private interrupt looks at the enabled
/// ones only: enables and disables through GICR_ISENABLER0/ICENABLER0 must
/// reach it, whichever SGIs and PPIs are pending.
#[test]
fn private_interrupts_are_offered_once_enabled_and_not_after() {
    let mut gic = vgic(1);
    wake_and_enable_ppi(&mut gic, 0, VTIMER_PPI, 0xA0);
    gicd_write(&mut gic, 0, CTLR_LINUX);
    // SGI 3 pending but disabled, at a better priority than the timer.
    gic.redistributors()
        .write(0x1_0400 + 3, Byte, 0x10)
        .unwrap();
    gic.send_sgi(0, (3 << 24) | 1).unwrap();
    gic.set_ppi_level(0, VTIMER_PPI, true).unwrap();
    let intid = |gic: &Vgic| gic.highest_pending(0).unwrap().map(|p| p.intid);
    assert_eq!(intid(&gic), Some(VTIMER_PPI), "SGI 3 is disabled");
    gicr_write(&mut gic, 0, 0x1_0100, 1 << 3);
    assert_eq!(intid(&gic), Some(3), "enabled, and first by priority");
    assert_eq!(
        gicr_read(&mut gic, 0, 0x1_0100),
        (1 << 3) | (1 << VTIMER_PPI)
    );
    gicr_write(&mut gic, 0, 0x1_0180, 1 << 3);
    assert_eq!(intid(&gic), Some(VTIMER_PPI), "disabled again");
    gicr_write(&mut gic, 0, 0x1_0180, 1 << VTIMER_PPI);
    assert_eq!(intid(&gic), None, "nothing enabled is pending");
}
