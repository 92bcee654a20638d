//! Powering the machine off through PSCI on the conduit the host DTB names,
//! from normal shutdown and from the panic handler.

use spin::Once;

use crate::arch;
use crate::platform::PsciConduit;
use crate::smccc::fid::PSCI_SYSTEM_OFF;

// A global because the panic handler has to power off with no other context;
// written once at boot.
static CONDUIT: Once<PsciConduit> = Once::new();

/// Records the host's PSCI conduit (call once the MMU is on).
pub fn set_conduit(conduit: PsciConduit) {
    CONDUIT.call_once(|| conduit);
}

/// SYSTEM_OFF through `conduit`; halts if the firmware returns.
pub fn system_off_via(conduit: PsciConduit) -> ! {
    arch::psci_call(conduit, PSCI_SYSTEM_OFF, [0; 3]);
    arch::halt()
}

/// SYSTEM_OFF through the recorded conduit (SMC if none was recorded yet).
pub fn system_off() -> ! {
    system_off_via(CONDUIT.get().copied().unwrap_or(PsciConduit::Smc))
}
