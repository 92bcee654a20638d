//! The state of one interrupt and the register banks every GICv3 frame
//! shares: one bit per INTID (group, enable, pending, active), one byte per
//! INTID (priority) and two bits per INTID (configuration).

use super::PRIORITY_MASK;

/// An interrupt's group; with GICD_CTLR.DS = 1 the guest owns both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Group 0: a virtual FIQ.
    Zero,
    /// Group 1: a virtual IRQ, what Linux uses.
    One,
}

/// The state of one interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqState {
    pub enabled: bool,
    /// Set by an edge, an ISPENDR write or a SGI; cleared by ICPENDR or
    /// when the interrupt is activated.
    pub pending_latch: bool,
    /// The input line, for level-sensitive interrupts.
    pub line: bool,
    pub active: bool,
    /// Handed to a vCPU's list register and not yet retired from it. The
    /// guest's ICACTIVER/ISACTIVER writes change `active`, not this: an
    /// interrupt is never listed twice (UNPREDICTABLE), nor on two vCPUs.
    pub listed: bool,
    /// Listed while latched: its pending state went into the list register
    /// with it, and comes back if it is withdrawn from there unacknowledged
    /// ([`super::Vgic::withdraw_undeliverable`]). Cleared by ICPENDR.
    pub pending_listed: bool,
    pub priority: u8,
    pub group1: bool,
    /// Edge-triggered (ICFGR bit 2n+1); otherwise level-sensitive.
    pub edge: bool,
}

impl IrqState {
    /// Pending: latched, or a level interrupt whose line is high.
    pub fn pending(&self) -> bool {
        self.pending_latch || (!self.edge && self.line)
    }

    /// Handed to a list register: no longer pending here (its pending
    /// state goes with it), active until the guest is done with it.
    pub fn list(&mut self) {
        self.pending_listed = self.pending_latch;
        self.pending_latch = false;
        self.active = true;
        self.listed = true;
    }

    pub fn group(&self) -> Group {
        if self.group1 {
            Group::One
        } else {
            Group::Zero
        }
    }
}

/// The one-bit-per-INTID registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitRegister {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

impl BitRegister {
    /// The register at frame offset `offset` (IGROUPR at 0x080 ..
    /// ICACTIVER at 0x380, same in GICD and GICR SGI_base), and the index of
    /// its 32-INTID word.
    pub fn decode(offset: u64) -> Option<(Self, usize)> {
        let register = match offset & !0x7F {
            0x080 => BitRegister::Group,
            0x100 => BitRegister::SetEnable,
            0x180 => BitRegister::ClearEnable,
            0x200 => BitRegister::SetPending,
            0x280 => BitRegister::ClearPending,
            0x300 => BitRegister::SetActive,
            0x380 => BitRegister::ClearActive,
            _ => return None,
        };
        Some((register, ((offset & 0x7F) / 4) as usize))
    }

    /// Reads the bits of up to 32 interrupts (bit n = `irqs[n]`).
    pub fn read(self, irqs: &[IrqState]) -> u32 {
        irqs.iter().enumerate().fold(0, |bits, (n, irq)| {
            let set = match self {
                BitRegister::Group => irq.group1,
                BitRegister::SetEnable | BitRegister::ClearEnable => irq.enabled,
                BitRegister::SetPending | BitRegister::ClearPending => irq.pending(),
                BitRegister::SetActive | BitRegister::ClearActive => irq.active,
            };
            bits | (u32::from(set) << n)
        })
    }

    /// Applies a write to up to 32 interrupts (bit n = `irqs[n]`).
    pub fn write(self, irqs: &mut [IrqState], value: u32) {
        for (n, irq) in irqs.iter_mut().enumerate() {
            let bit = value & (1 << n) != 0;
            match self {
                BitRegister::Group => irq.group1 = bit,
                BitRegister::SetEnable if bit => irq.enabled = true,
                BitRegister::ClearEnable if bit => irq.enabled = false,
                BitRegister::SetPending if bit => irq.pending_latch = true,
                BitRegister::ClearPending if bit => {
                    irq.pending_latch = false;
                    irq.pending_listed = false;
                }
                BitRegister::SetActive if bit => irq.active = true,
                BitRegister::ClearActive if bit => irq.active = false,
                _ => {}
            }
        }
    }
}

/// Reads the priority bytes of `irqs` (at most 8), little-endian.
pub fn read_priorities(irqs: &[IrqState]) -> u64 {
    irqs.iter()
        .rev()
        .fold(0, |value, irq| (value << 8) | u64::from(irq.priority))
}

/// Writes one priority byte per interrupt from `value`, little-endian,
/// keeping only the implemented priority bits.
pub fn write_priorities(irqs: &mut [IrqState], value: u64) {
    for (n, irq) in irqs.iter_mut().enumerate() {
        irq.priority = (value >> (8 * n)) as u8 & PRIORITY_MASK;
    }
}

/// ICFGR: bit 2n+1 of the word is "edge" for `irqs[n]` (up to 16).
pub fn read_config(irqs: &[IrqState]) -> u32 {
    irqs.iter().enumerate().fold(0, |bits, (n, irq)| {
        bits | (u32::from(irq.edge) << (2 * n + 1))
    })
}

pub fn write_config(irqs: &mut [IrqState], value: u32) {
    for (n, irq) in irqs.iter_mut().enumerate() {
        irq.edge = value & (1 << (2 * n + 1)) != 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_clear_registers_only_touch_written_ones() {
        let mut irqs = [IrqState::default(); 32];
        BitRegister::SetEnable.write(&mut irqs, 0b1010);
        BitRegister::SetEnable.write(&mut irqs, 0b0001);
        assert_eq!(BitRegister::SetEnable.read(&irqs), 0b1011);
        BitRegister::ClearEnable.write(&mut irqs, 0b0010);
        assert_eq!(BitRegister::ClearEnable.read(&irqs), 0b1001);
        BitRegister::Group.write(&mut irqs, 0xFFFF_0000);
        assert_eq!(BitRegister::Group.read(&irqs), 0xFFFF_0000);
    }

    #[test]
    fn level_interrupts_are_pending_while_the_line_is_high() {
        let mut irq = IrqState {
            line: true,
            ..IrqState::default()
        };
        assert!(irq.pending());
        irq.edge = true;
        assert!(!irq.pending(), "an edge interrupt needs the latch");
        irq.pending_latch = true;
        assert!(irq.pending());
    }

    #[test]
    fn decode_bank_offsets() {
        assert_eq!(
            BitRegister::decode(0x100),
            Some((BitRegister::SetEnable, 0))
        );
        assert_eq!(
            BitRegister::decode(0x184),
            Some((BitRegister::ClearEnable, 1))
        );
        assert_eq!(
            BitRegister::decode(0x3FC),
            Some((BitRegister::ClearActive, 31))
        );
        assert_eq!(BitRegister::decode(0x400), None);
        assert_eq!(BitRegister::decode(0x000), None);
    }

    #[test]
    fn priorities_and_config() {
        let mut irqs = [IrqState::default(); 4];
        write_priorities(&mut irqs, 0xA0B0_C0D7);
        assert_eq!(
            read_priorities(&irqs),
            0xA0B0_C0D0,
            "low 3 bits not implemented"
        );
        write_config(&mut irqs, 0b10_00_10_00);
        assert_eq!(read_config(&irqs), 0b10_00_10_00);
        assert!(irqs[1].edge && irqs[3].edge && !irqs[0].edge);
    }
}
