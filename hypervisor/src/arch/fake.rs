//! Host stand-in for the EL2 hardware layer: the same names as
//! `aarch64::hw`, so portable code builds and its logic is unit-tested on the
//! host. None of it touches hardware; calls that only make sense on the real
//! machine panic with a message saying so.
#![forbid(unsafe_code)]

use super::aarch64::context::{El1SysRegs, ExitInfo, GuestRegs};
use crate::addr::{IntermediatePhysAddr, PhysAddr, PhysRange};
use crate::mm::frames::{FrameAllocator, Frames};
use crate::mm::pagetable::{TableMemory, TableRead};
use crate::platform::{PlatformInfo, PsciConduit};

/// Host builds have no UART: output is dropped, except that unit tests
/// see what their own thread wrote ([`take_uart_output`]).
pub fn uart_write(_base: PhysAddr, _bytes: &[u8]) {
    #[cfg(test)]
    UART_OUTPUT.with(|out| out.borrow_mut().extend_from_slice(_bytes));
}

/// Host builds have no list registers; unit tests see the invalid ones
/// among those their own thread wrote ([`gic_write_lr`]) as done.
pub fn gic_finished_lrs() -> u64 {
    #[cfg(test)]
    return LIST_REGISTERS.with(|lrs| {
        lrs.borrow()
            .iter()
            .enumerate()
            .filter(|(_, lr)| {
                super::aarch64::gic_lr::LrState::of(**lr)
                    == super::aarch64::gic_lr::LrState::Invalid
            })
            .fold(0, |mask, (n, _)| mask | 1 << n)
    });
    #[cfg(not(test))]
    0
}

#[cfg(test)]
std::thread_local! {
    static UART_OUTPUT: core::cell::RefCell<Vec<u8>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// What this thread wrote to the UART since the last call.
#[cfg(test)]
pub fn take_uart_output() -> Vec<u8> {
    UART_OUTPUT.with(|out| core::mem::take(&mut *out.borrow_mut()))
}

/// Host builds have no firmware.
pub fn psci_call(_conduit: PsciConduit, _function: u32, _args: [u64; 3]) -> u64 {
    panic!("PSCI call on the host: the hypervisor binary only runs on aarch64-unknown-none");
}

/// Host builds do not run at an exception level of their own.
pub fn current_el() -> u8 {
    0
}

/// Stops the calling thread for good.
pub fn halt() -> ! {
    panic!("halt on the host");
}

/// Host builds have no MMU to turn on.
pub fn enable_mmu(_root: PhysAddr) {
    panic!("enable_mmu on the host");
}

/// Host builds use the system allocator.
pub fn heap_init(_range: PhysRange) -> usize {
    0
}

/// Host stand-in for tables in host RAM; unusable without hardware (tests
/// use their own fake table memory).
pub struct IdentityTables<'a> {
    /// Where table pages would come from.
    pub frames: &'a mut FrameAllocator,
}

impl TableRead for IdentityTables<'_> {
    fn read(&self, _table: PhysAddr, _index: usize) -> u64 {
        0
    }
}

impl TableMemory for IdentityTables<'_> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        None
    }
    fn write(&mut self, _table: PhysAddr, _index: usize, _raw: u64) {
        panic!("writing translation tables on the host");
    }
}

/// Host stand-in for the stage-2 walker's table reads: there are no
/// tables on the host, so every walk faults.
pub struct TableReader;

impl TableRead for TableReader {
    fn read(&self, _table: PhysAddr, _index: usize) -> u64 {
        0
    }
}

/// Host builds have no EL3 below them.
pub fn has_el3() -> bool {
    false
}

/// Host builds have no firmware.
pub fn smc_call(_regs: [u64; 8]) -> [u64; 8] {
    panic!("SMC on the host: the hypervisor binary only runs on aarch64-unknown-none");
}

/// Host builds cannot reach host-physical pages.
pub fn frames_bytes(_frames: &Frames) -> &[u8] {
    &[]
}

/// Host builds cannot reach host-physical pages.
pub fn frames_bytes_mut(_frames: &mut Frames) -> &mut [u8] {
    &mut []
}

/// Host builds have no boot bundle in memory.
pub fn initrd_bytes(_platform: &PlatformInfo<'_>) -> &'static [u8] {
    &[]
}

/// Host builds have no fw_cfg: every read fails.
pub fn fw_cfg_read_into(
    _base: PhysAddr,
    _select: u16,
    _offset: usize,
    _dest: &mut [u8],
) -> Result<(), crate::boot::fw_cfg::FwCfgError> {
    Err(crate::boot::fw_cfg::FwCfgError::DmaFailed)
}

/// Host builds have no UART.
pub fn uart_enable_rx_irq(_base: PhysAddr) {}

/// Host builds have no UART input.
pub fn uart_read_byte(_base: PhysAddr) -> Option<u8> {
    None
}

/// Host builds have no RTC.
pub fn rtc_read_seconds(_base: PhysAddr) -> u32 {
    0
}

/// Host builds have no system counter.
pub fn counter() -> u64 {
    0
}

/// Host builds have no system counter.
pub fn counter_frequency() -> u64 {
    1
}

/// INTIDs from here up are special (spurious).
pub const SPURIOUS_INTID: u32 = 1020;

/// Host stand-in for the host GIC driver.
#[derive(Clone, Copy, Debug)]
pub struct HostGic;

impl HostGic {
    /// There is no GIC on the host.
    pub fn init(_dist: PhysRange, _redist: PhysRange, _primary: bool) -> Option<Self> {
        None
    }

    /// There is no GIC on the host.
    pub fn enable(&self, _intid: u32) {}
}

/// Host builds take no interrupts.
pub fn gic_ack() -> u32 {
    SPURIOUS_INTID
}

/// Host builds take no interrupts.
pub fn gic_eoi(_intid: u32) {}

/// Host builds take no interrupts.
pub fn gic_deactivate(_intid: u32) {}

/// Host builds have no list registers.
pub fn gic_lr_count() -> usize {
    0
}

/// Host builds have no list registers; unit tests read back what their
/// own thread wrote ([`gic_write_lr`]).
pub fn gic_read_lr(_n: usize) -> u64 {
    #[cfg(test)]
    return LIST_REGISTERS.with(|lrs| lrs.borrow().get(_n).copied().unwrap_or(0));
    #[cfg(not(test))]
    0
}

/// Host builds have no list registers; unit tests keep what their own
/// thread writes, as the hardware would, and can play the guest with
/// [`set_lr_state`].
pub fn gic_write_lr(_n: usize, _value: u64) {
    #[cfg(test)]
    LIST_REGISTERS.with(|lrs| {
        if let Some(lr) = lrs.borrow_mut().get_mut(_n) {
            *lr = _value;
        }
    });
}

#[cfg(test)]
std::thread_local! {
    static LIST_REGISTERS: core::cell::RefCell<[u64; 16]> = const { core::cell::RefCell::new([0; 16]) };
}

/// Plays the guest's CPU interface in unit tests: list register `n` moves
/// to `state` (an acknowledge, an EOI), as the hardware would move it.
#[cfg(test)]
pub fn set_lr_state(n: usize, state: super::aarch64::gic_lr::LrState) {
    let mut lr = super::aarch64::gic_lr::ListRegister::decode(gic_read_lr(n));
    lr.state = state;
    gic_write_lr(n, lr.encode());
}

/// Host builds have no virtual CPU interface.
pub fn gic_set_ich_hcr(_value: u64) {}

/// Host builds run no guests.
pub fn run_guest(_regs: &mut GuestRegs) -> ExitInfo {
    panic!("running a guest on the host");
}

/// Host builds run no guests.
pub fn init_virtualization() {}

/// Host builds run no guests: no FP/SIMD state is ever live.
pub fn fp_flush() {}

/// Host builds run no guests.
pub fn load_stage2(_root: PhysAddr, _vmid: u16) {}

/// Host builds run no guests.
pub fn load_el1(_regs: &El1SysRegs) {}

/// Host builds run no guests.
pub fn save_el1(_regs: &mut El1SysRegs) {}

/// Copies `src` into the start of `dst` (guest RAM being loaded).
/// Host stand-in: a plain fill.
pub fn zero_guest_ram(dst: &mut [u8]) {
    dst.fill(0);
}

pub fn copy_to_guest_ram(dst: &mut [u8], src: &[u8]) {
    let len = src.len().min(dst.len());
    dst[..len].copy_from_slice(&src[..len]);
}

/// Host builds have no instruction cache to maintain.
pub fn sync_icache() {}

/// The VTCR_EL2 value (meaningless on the host).
pub fn vtcr_el2() -> u64 {
    0
}

/// Host builds have no guest stage 1 to walk.
pub fn guest_va_to_ipa(_va: u64) -> Option<IntermediatePhysAddr> {
    None
}

/// The register effect of taking an exception at EL1, as on hardware with
/// VBAR_EL1 = 0 (the EL1 syndrome registers are not modelled).
pub fn inject_sync_exception(regs: &mut GuestRegs, _esr: u64, _far: u64, vector_offset: u64) {
    regs.pc = vector_offset;
    regs.pstate = super::aarch64::context::SPSR_EL1H_MASKED;
}

/// Host builds have no other CPUs to signal.
pub fn gic_send_sgi(_intid: u32, _mpidr: u64) {}

/// Host builds have no other CPUs to wake.
pub fn send_event() {}

/// Host builds share no memory with a guest CPU.
pub fn memory_barrier() {}

/// Host builds share no memory with a guest CPU.
pub fn read_barrier() {}

/// Host builds have no events to wait for.
pub fn wait_for_event() {}

/// Host builds start no secondary CPUs.
pub fn secondary_entry_point() -> PhysAddr {
    PhysAddr::new(0)
}

/// Host builds have no guest ID registers to read.
pub fn read_id_register(_crm: u8, _op2: u8) -> u64 {
    0
}

/// Host builds run no guests.
pub fn set_wfx_trap(_trap: bool) {}

/// Host builds have no caches to maintain.
pub fn dc_clean_invalidate_set_way(_set_way: u64) {}

/// Host builds have no EL2 timer.
pub fn hyp_timer_arm_at(_deadline: u64) {}

/// Host builds have no EL2 timer.
pub fn hyp_timer_disarm() {}

/// Host builds have no EL1 timers.
pub fn guest_timers_disable() {}

/// Host builds have no EL1 timers: they read as off.
pub fn guest_timer_ctls() -> (u64, u64) {
    (0, 0)
}

/// Host builds have no interrupts to wait for.
pub fn wait_for_interrupt() {}
