//! Boot: the arm64 Image header, the primary CPU's entry (EL2 check, stack,
//! BSS, vectors, CPTR/SCTLR), the EL2 exception vectors, and the jump into
//! portable Rust (`crate::kmain`). Per-CPU stacks are laid out by the linker
//! script (`__hv_stacks_start`, [`STACK_SIZE`] each, CPU i at index i) so the
//! secondary entry of the SMP work only has to pick its slot.

use core::arch::global_asm;

use aarch64_cpu::registers::{Readable, ELR_EL2, ESR_EL2, FAR_EL2, SCTLR_EL2, SPSR_EL2};

use crate::addr::{PhysAddr, PhysRange};

/// Bytes of stack per physical CPU.
pub const STACK_SIZE: u64 = 64 * 1024;

/// Image header `flags`: little-endian, 4 KiB pages, 2 MiB-aligned base.
const IMAGE_FLAGS: u64 = 0b010;
/// Image header `text_offset`: where in a 2 MiB-aligned RAM base we load.
/// 2 MiB, not Linux's 0x80000: when TF-A boots us (BL33 preloaded at
/// 0x4020_0000), the first MiB of RAM holds the DTB it grew to 1 MiB.
const TEXT_OFFSET: u64 = 0x20_0000;
/// SCTLR_EL2's RES1 bits (non-VHE): 29, 28, 23, 22, 18, 16, 11, 5, 4.
const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
/// SCTLR_EL2 with the RES1 bits, instruction cache and SP alignment check
/// on, MMU and data cache off (turned on by `mmu::enable_mmu`).
const SCTLR_EL2_BOOT: u64 = SCTLR_EL2_RES1 | SCTLR_EL2::I::SET.value | SCTLR_EL2::SA::SET.value;
/// CPTR_EL2's RES1 bits (non-VHE): 13, 9 and 7:0. (aarch64-cpu defines
/// none of CPTR_EL2's trap fields but TAM.)
const CPTR_EL2_RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
/// CPTR_EL2.TZ: SVE instructions and registers trap.
const CPTR_EL2_TZ: u64 = 1 << 8;
/// CPTR_EL2.TSM (FEAT_SME; RES1 without it): SME traps.
const CPTR_EL2_TSM: u64 = 1 << 12;
/// CPTR_EL2 (non-VHE): FP/SIMD not trapped (TFP clear), SVE and SME
/// trapped: their state is not switched between vCPUs and `idregs` hides
/// them, so a guest that uses them anyway gets UNDEFINED.
pub(super) const CPTR_EL2_GUEST: u64 = CPTR_EL2_RES1 | CPTR_EL2_TZ | CPTR_EL2_TSM;

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       1f                      // code0
    .word   0                       // code1
    .quad   {text_offset}           // text_offset
    .quad   __hv_image_size         // image_size
    .quad   {flags}                 // flags
    .quad   0, 0, 0                 // res2-res4
    .ascii  "ARM\x64"               // magic
    .word   0                       // res5
1:
    mov     x19, x0                 // DTB
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    9f

    adrp    x1, __hv_stacks_start
    add     x1, x1, :lo12:__hv_stacks_start
    ldr     x2, ={stack_size}
    add     sp, x1, x2              // CPU 0: top of the first stack slot

    adrp    x1, __hv_bss_start
    add     x1, x1, :lo12:__hv_bss_start
    adrp    x2, __hv_bss_end
    add     x2, x2, :lo12:__hv_bss_end
2:  cmp     x1, x2
    b.hs    3f
    str     xzr, [x1], #8
    b       2b
3:
    adrp    x1, __hv_vectors
    add     x1, x1, :lo12:__hv_vectors
    msr     vbar_el2, x1
    ldr     x1, ={cptr}
    msr     cptr_el2, x1
    ldr     x1, ={sctlr}
    msr     sctlr_el2, x1
    isb
    mov     x0, x19
    bl      {entry}
9:  wfe
    b       9b

    // Secondary CPUs, started by the primary through PSCI CPU_ON with
    // x0 = CPU index: stack slot `index`, then the same EL2 set-up.
    .global __hv_secondary_entry
__hv_secondary_entry:
    mov     x19, x0
    adrp    x1, __hv_stacks_start
    add     x1, x1, :lo12:__hv_stacks_start
    ldr     x2, ={stack_size}
    add     x3, x19, #1
    madd    x1, x2, x3, x1
    mov     sp, x1
    adrp    x1, __hv_vectors
    add     x1, x1, :lo12:__hv_vectors
    msr     vbar_el2, x1
    ldr     x1, ={cptr}
    msr     cptr_el2, x1
    ldr     x1, ={sctlr}
    msr     sctlr_el2, x1
    isb
    mov     x0, x19
    bl      {secondary}
8:  wfe
    b       8b
    .ltorg
"#,
    text_offset = const TEXT_OFFSET,
    flags = const IMAGE_FLAGS,
    stack_size = const STACK_SIZE,
    cptr = const CPTR_EL2_GUEST,
    sctlr = const SCTLR_EL2_BOOT,
    entry = sym primary_entry,
    secondary = sym secondary_entry,
);

// The vector table: 16 entries of 0x80 bytes, 2 KiB aligned. Exceptions
// from a guest (lower EL, AArch64) push the guest's x0/x1 and go to
// `__hv_guest_exit` (in `guest.rs`) with the exit kind in x0; a trapped
// FP/SIMD access at EL2 goes to `__hv_fp_trap` (same file); every other
// entry hands its index to `unexpected_exception`.
global_asm!(
    r#"
    .section .text.vectors, "ax"
    .balign 2048
    .global __hv_vectors
__hv_vectors:
    .irp index, 0,1,2,3
    .balign 0x80
    mov     x0, #\index
    b       {unexpected}
    .endr
    // Current EL with SPx, synchronous: an FP/SIMD access trapped while a
    // guest's FP/SIMD state was live (`guest.rs`), or a bug.
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, esr_el2
    lsr     x0, x0, #26
    cmp     x0, #0x07
    b.eq    __hv_fp_trap
    ldp     x0, x1, [sp], #16
    mov     x0, #4
    b       {unexpected}
    .irp index, 5,6,7
    .balign 0x80
    mov     x0, #\index
    b       {unexpected}
    .endr
    .irp kind, 0,1,2,3
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x0, #\kind
    b       __hv_guest_exit
    .endr
    .irp index, 12,13,14,15
    .balign 0x80
    mov     x0, #\index
    b       {unexpected}
    .endr
"#,
    unexpected = sym unexpected_exception,
);

extern "C" {
    static __hv_image_start: u8;
    static __hv_image_end: u8;
    fn __hv_secondary_entry();
}

/// Where secondary CPUs enter (the PSCI CPU_ON entry point; the context
/// argument is the CPU index, below `platform::MAX_CPUS`, which matches
/// `HV_MAX_CPUS` in the linker script's stack area).
pub fn secondary_entry_point() -> PhysAddr {
    PhysAddr::new(to_u64((__hv_secondary_entry as *const ()).addr()))
}

extern "C" fn secondary_entry(cpu: usize) -> ! {
    crate::machine::boot_secondary(cpu)
}

/// Names of the vector-table groups, by entry index / 4.
const VECTOR_GROUPS: [&str; 4] = [
    "current EL with SP_EL0",
    "current EL with SP_EL2",
    "lower EL, AArch64",
    "lower EL, AArch32",
];
/// Names of the exception kinds, by entry index % 4.
const VECTOR_KINDS: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];

extern "C" fn unexpected_exception(index: u64) -> ! {
    let i = usize::try_from(index).unwrap_or(0) % 16;
    panic!(
        "unexpected EL2 exception: {} from {}: ESR_EL2 {:#x} ELR_EL2 {:#x} FAR_EL2 {:#x} SPSR_EL2 {:#x}",
        VECTOR_KINDS[i % 4],
        VECTOR_GROUPS[i / 4],
        ESR_EL2.get(),
        ELR_EL2.get(),
        FAR_EL2.get(),
        SPSR_EL2.get()
    );
}

/// Offset of `totalsize` in the FDT header.
const FDT_TOTALSIZE_OFFSET: usize = 4;
/// FDT header magic.
const FDT_MAGIC: u32 = 0xd00d_feed;
/// Largest DTB we accept (QEMU's is 1 MiB).
const FDT_MAX_SIZE: u32 = 2 * 1024 * 1024;

/// Where QEMU's `virt` leaves the DTB when firmware boots the machine (the
/// start of RAM; TF-A's `ARM_PRELOADED_DTB_BASE`): TF-A enters BL33 with
/// x0 = 0 (its MPIDR), not a DTB address.
const FIRMWARE_DTB: usize = 0x4000_0000;

extern "C" fn primary_entry(dtb: usize) -> ! {
    let dtb = if dtb == 0 { FIRMWARE_DTB } else { dtb };
    let image = PhysRange {
        start: PhysAddr::new(to_u64((&raw const __hv_image_start).addr())),
        end: PhysAddr::new(to_u64((&raw const __hv_image_end).addr())),
    };
    let dtb_ptr = dtb as *const u8;
    let header_ok = dtb != 0 && dtb.is_multiple_of(8);
    let (magic, size) = if header_ok {
        // SAFETY: the boot protocol puts the DTB at x0, 8-byte aligned, in
        // RAM; the two header words are read before anything else touches it.
        unsafe {
            (
                u32::from_be(core::ptr::read_volatile(dtb_ptr.cast::<u32>())),
                u32::from_be(core::ptr::read_volatile(
                    dtb_ptr.add(FDT_TOTALSIZE_OFFSET).cast::<u32>(),
                )),
            )
        }
    } else {
        (0, 0)
    };
    let blob: &'static [u8] = if magic == FDT_MAGIC && size <= FDT_MAX_SIZE {
        // SAFETY: the header says the blob spans `size` bytes from `dtb`;
        // the allocator reserves that range, so nothing writes it while the
        // hypervisor runs.
        unsafe { core::slice::from_raw_parts(dtb_ptr, usize::try_from(size).unwrap_or(0)) }
    } else {
        &[]
    };
    crate::kmain::boot_primary(PhysAddr::new(to_u64(dtb)), blob, image)
}

/// `usize` to `u64`: lossless on AArch64.
fn to_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}
