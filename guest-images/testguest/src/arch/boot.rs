//! Entry: the arm64 Image header QEMU's `-kernel` and the hypervisor's
//! "linux-image" loader look for, then `_start`, which sets up the stack,
//! FP/SIMD, BSS and the vector table before entering Rust with x0 = DTB;
//! `_secondary_start`, where PSCI CPU_ON starts the other CPUs, and
//! `_attack_secondary_start`, where the hostile guest starts its second.

use core::arch::global_asm;

/// arm64 Image header fields (Linux `Documentation/arch/arm64/booting.rst`).
const TEXT_OFFSET: u64 = 0x8_0000;
/// Little-endian, 4 KiB pages (bits 1-2 = 1), 2 MiB-aligned placement.
const IMAGE_FLAGS: u64 = 0b010;
/// "ARM\x64", little-endian.
const IMAGE_MAGIC: u32 = 0x644D_5241;
/// CPACR_EL1.FPEN = 0b11: no FP/SIMD traps at EL1/EL0 (Rust code uses
/// SIMD registers).
const CPACR_FPEN: u64 = 0b11 << 20;

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _image_header
_image_header:
    b       _start                  // code0
    .word   0                       // code1
    .quad   {text_offset}           // text_offset
    .quad   _image_size             // image_size (linker/testguest.ld)
    .quad   {flags}                 // flags
    .quad   0, 0, 0                 // res2..res4
    .word   {magic}                 // magic
    .word   0                       // res5

    .section .text, "ax"
    .global _start
_start:
    mov     x19, x0                 // the DTB, for testguest_main
    ldr     x1, ={cpacr}
    msr     cpacr_el1, x1
    isb
    adrp    x1, _stack_top
    add     x1, x1, :lo12:_stack_top
    mov     sp, x1
    adrp    x1, _bss_start
    add     x1, x1, :lo12:_bss_start
    adrp    x2, _bss_end
    add     x2, x2, :lo12:_bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  adrp    x1, testguest_vectors
    add     x1, x1, :lo12:testguest_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      testguest_main
3:  wfi
    b       3b

    // A secondary CPU from PSCI CPU_ON: x0 = its index (>= 1), which
    // `arch::secondary_entry` checked against the stack slots.
    .global _secondary_start
_secondary_start:
    mov     x19, x0
    ldr     x1, ={cpacr}
    msr     cpacr_el1, x1
    isb
    adrp    x1, _secondary_stacks
    add     x1, x1, :lo12:_secondary_stacks
    mov     x2, #{stack_size}
    madd    x1, x19, x2, x1         // top of slot index - 1
    mov     sp, x1
    adrp    x1, testguest_vectors
    add     x1, x1, :lo12:testguest_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      testguest_secondary
4:  wfi
    b       4b

    // The hostile guest's second CPU (`attacks`): x0 = its duty. It uses
    // the first secondary stack slot; the attacks start one at a time.
    .global _attack_secondary_start
_attack_secondary_start:
    mov     x19, x0
    ldr     x1, ={cpacr}
    msr     cpacr_el1, x1
    isb
    adrp    x1, _secondary_stacks
    add     x1, x1, :lo12:_secondary_stacks
    add     x1, x1, #{stack_size}
    mov     sp, x1
    adrp    x1, testguest_vectors
    add     x1, x1, :lo12:testguest_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      testguest_attack_secondary
5:  wfi
    b       5b
    "#,
    text_offset = const TEXT_OFFSET,
    flags = const IMAGE_FLAGS,
    magic = const IMAGE_MAGIC,
    cpacr = const CPACR_FPEN,
    stack_size = const super::SECONDARY_STACK_SIZE,
);
