//! Architecture layer: the one place that chooses an implementation by
//! target (Hubris-style). Portable code calls the names re-exported here:
//!
//! - platform: `uart_*`, `rtc_read_seconds`, `fw_cfg_read_into`, `counter*`, `psci_call`,
//!   `smc_call`, `has_el3`, `current_el`, `halt`, events/interrupt waits,
//!   `secondary_entry_point`, `memory_barrier`/`read_barrier` (ordering
//!   against guest CPUs);
//! - memory: `enable_mmu`, `IdentityTables` (a `mm::pagetable::TableMemory`
//!   over host RAM), `TableReader` (walks tables built earlier),
//!   `frames_bytes*`, `initrd_bytes`, `heap_init`;
//! - host GIC: `HostGic`, `gic_*` (acknowledge, EOI, SGIs, list registers);
//! - guests: `init_virtualization`, `load_stage2`, `run_guest`, `fp_flush`,
//!   `save_el1`/`load_el1`, `inject_sync_exception`, `guest_va_to_ipa`,
//!   `read_id_register`, `set_wfx_trap`, `dc_clean_invalidate_set_way`, `hyp_timer_*`, `guest_timer_ctls`,
//!   `guest_timers_disable`.
//!
//! On the bare-metal target these are the EL2 implementations in
//! `aarch64::hw`; on the host (unit tests, `cargo check`) a fake backend
//! stands in, so portable code compiles and is tested without hardware.
//! The AArch64 encodings and decoders (`aarch64::pte`, `esr`, `gic_lr`,
//! `idregs`, `context`, `mmio_decode`) are plain logic and build everywhere.
pub mod aarch64;

#[cfg(target_os = "none")]
pub use aarch64::hw::*;

#[cfg(not(target_os = "none"))]
mod fake;
#[cfg(not(target_os = "none"))]
pub use fake::*;
