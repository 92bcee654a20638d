//! GICv3 list-register encoding (`ICH_LR<n>_EL2`): how the hypervisor hands a
//! virtual interrupt to the GIC's virtual CPU interface. Pure bit layout,
//! host-tested; `hw::gic` reads and writes the registers.
#![forbid(unsafe_code)]

const PINTID_SHIFT: u32 = 32;
const PINTID_MASK: u64 = 0x3ff;
const PRIORITY_SHIFT: u32 = 48;
const GROUP1: u64 = 1 << 60;
const HW: u64 = 1 << 61;
const STATE_SHIFT: u32 = 62;
/// With HW = 0, bit 41 asks for a maintenance interrupt on EOI.
const EOI_MAINTENANCE: u64 = 1 << 41;

/// Life-cycle state of a list register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LrState {
    /// Free.
    Invalid,
    /// Pending in the guest.
    Pending,
    /// Acknowledged, not yet EOI'd.
    Active,
    /// Active and pending again.
    PendingActive,
}

/// One list register.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ListRegister {
    /// INTID the guest sees.
    pub vintid: u32,
    /// Physical INTID deactivated by the guest's EOI (HW = 1), if any.
    pub pintid: Option<u32>,
    /// Priority (the GIC keeps the top bits it implements).
    pub priority: u8,
    /// Group 1 (IRQ) rather than group 0 (FIQ).
    pub group1: bool,
    /// State.
    pub state: LrState,
    /// For a software interrupt (HW = 0): raise a maintenance interrupt
    /// when the guest EOIs it.
    pub eoi_maintenance: bool,
}

impl LrState {
    /// The state of an `ICH_LR<n>_EL2` value.
    pub fn of(raw: u64) -> Self {
        match raw >> STATE_SHIFT {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }

    fn bits(self) -> u64 {
        match self {
            LrState::Invalid => 0,
            LrState::Pending => 1,
            LrState::Active => 2,
            LrState::PendingActive => 3,
        }
    }

    /// `raw` in this state, every other field kept.
    pub fn set_in(self, raw: u64) -> u64 {
        raw & !(3 << STATE_SHIFT) | self.bits() << STATE_SHIFT
    }
}

impl ListRegister {
    /// A pending group-1 interrupt.
    pub fn pending(vintid: u32, priority: u8) -> Self {
        Self {
            vintid,
            pintid: None,
            priority,
            group1: true,
            state: LrState::Pending,
            eoi_maintenance: false,
        }
    }

    /// The `ICH_LR<n>_EL2` value.
    pub fn encode(&self) -> u64 {
        let state = self.state.bits();
        let mut v = u64::from(self.vintid)
            | (u64::from(self.priority) << PRIORITY_SHIFT)
            | (state << STATE_SHIFT);
        if self.group1 {
            v |= GROUP1;
        }
        match self.pintid {
            Some(p) => v |= HW | ((u64::from(p) & PINTID_MASK) << PINTID_SHIFT),
            None if self.eoi_maintenance => v |= EOI_MAINTENANCE,
            None => {}
        }
        v
    }

    /// Decodes an `ICH_LR<n>_EL2` value.
    pub fn decode(raw: u64) -> Self {
        let state = LrState::of(raw);
        let hw = raw & HW != 0;
        Self {
            vintid: u32::try_from(raw & 0xffff_ffff).unwrap_or(0),
            pintid: hw.then(|| u32::try_from((raw >> PINTID_SHIFT) & PINTID_MASK).unwrap_or(0)),
            priority: u8::try_from((raw >> PRIORITY_SHIFT) & 0xff).unwrap_or(0),
            group1: raw & GROUP1 != 0,
            state,
            eoi_maintenance: !hw && raw & EOI_MAINTENANCE != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_timer_interrupt() {
        let lr = ListRegister {
            pintid: Some(27),
            ..ListRegister::pending(27, 0xa0)
        };
        let raw = lr.encode();
        assert_eq!(
            raw,
            (1 << 62) | (1 << 61) | (1 << 60) | (0xa0 << 48) | (27 << 32) | 27
        );
        assert_eq!(ListRegister::decode(raw), lr);
        let done = LrState::Invalid.set_in(raw);
        assert_eq!(LrState::of(done), LrState::Invalid);
        assert_eq!(LrState::Pending.set_in(done), raw, "only the state moves");
    }

    #[test]
    fn software_interrupt_with_maintenance() {
        let lr = ListRegister {
            eoi_maintenance: true,
            ..ListRegister::pending(33, 0x80)
        };
        let raw = lr.encode();
        assert_eq!(raw & (1 << 41), 1 << 41);
        assert_eq!(raw & (1 << 61), 0);
        assert_eq!(ListRegister::decode(raw), lr);
        assert_eq!(ListRegister::decode(0).state, LrState::Invalid);
        assert_eq!(ListRegister::decode(3 << 62).state, LrState::PendingActive);
    }
}
