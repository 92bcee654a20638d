//! Decoding of data aborts on emulated MMIO into typed accesses.
//!
//! With ESR_EL2.ISS.ISV = 1 the syndrome says everything (width, register,
//! sign extension, direction: Arm ARM D24.2.40, ISS encoding for an
//! exception from a Data Abort). With ISV = 0 (writeback forms, and others
//! the hardware does not describe) the exit handler fetches the faulting
//! instruction at ELR_EL2 and `decode_instruction` decodes the single-register
//! load/store forms of the A64 "Loads and Stores" group (Arm ARM C4.1.94):
//! unsigned immediate, pre/post-indexed and unscaled/unprivileged immediate,
//! and register offset, for LDR/STR/LDRB/STRB/LDRH/STRH/LDRSB/LDRSH/LDRSW.
//! Pairs (LDP/STP), SIMD&FP registers, exclusives and atomics are refused
//! (`Unsupported`): no driver we run uses them on device memory, and the
//! exit handler answers with an external abort.
#![forbid(unsafe_code)]

use core::fmt;

use super::context::SPSR_AARCH32;
use super::esr::{DataAbort, Esr};

use crate::devices::AccessWidth;

/// Whether the guest reads or writes the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

/// A base-register update the instruction makes after the access: the exit
/// handler adds `offset` to X`base` (31 = SP) when it completes the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writeback {
    pub base: u8,
    pub offset: i64,
}

/// One decoded MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    pub direction: Direction,
    pub width: AccessWidth,
    /// The transfer register Rt; 31 is XZR/WZR (a store of zero, or a load
    /// whose result is discarded), never SP.
    pub register: u8,
    /// A load sign-extends the value (LDRSB/LDRSH/LDRSW).
    pub sign_extend: bool,
    /// Rt is an X register (ISS.SF): a sign-extended load fills 64 bits.
    pub register_64: bool,
    pub writeback: Option<Writeback>,
}

impl MmioAccess {
    /// The value a load puts in Rt, from the `width` bytes the device read.
    pub fn load_result(&self, raw: u64) -> u64 {
        let raw = raw & self.width.mask();
        let value = if self.sign_extend {
            let unused = 64 - self.width.bits();
            (((raw << unused) as i64) >> unused) as u64
        } else {
            raw
        };
        if self.register_64 {
            value
        } else {
            value & u64::from(u32::MAX)
        }
    }

    /// The bytes a store sends to the device, from Rt's value (pass 0 for
    /// register 31).
    pub fn store_value(&self, register_value: u64) -> u64 {
        register_value & self.width.mask()
    }
}

/// Why a data abort cannot be emulated as an MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The ESR is not a data abort (EC 0x24/0x25).
    NotDataAbort { ec: u8 },
    /// ISV = 0: decode the instruction at ELR_EL2 instead.
    NeedInstruction,
    /// ISV = 0 in AArch32 state: the instruction is A32 or T32, which the
    /// decoder does not read.
    AArch32,
    /// A cache maintenance or address translation instruction (ISS.CM):
    /// not an access; the handler may skip it.
    CacheMaintenance,
    /// The fault happened on a stage-1 table walk (ISS.S1PTW): the guest's
    /// page tables point at something that is not RAM.
    StageOneWalk,
    /// Not a load/store instruction at all.
    NotLoadStore { instruction: u32 },
    /// A load/store form we do not emulate (pairs, SIMD&FP, exclusives,
    /// atomics, prefetch) or an unallocated encoding.
    Unsupported {
        instruction: u32,
        what: &'static str,
    },
    /// Writeback to the transfer register (CONSTRAINED UNPREDICTABLE).
    WritebackToTransferRegister { instruction: u32 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NotDataAbort { ec } => write!(f, "ESR class {ec:#x} is not a data abort"),
            DecodeError::NeedInstruction => f.write_str("syndrome not valid (ISV=0)"),
            DecodeError::AArch32 => f.write_str("syndrome not valid (ISV=0) in AArch32 state"),
            DecodeError::CacheMaintenance => f.write_str("cache maintenance on device memory"),
            DecodeError::StageOneWalk => f.write_str("fault on a stage-1 table walk"),
            DecodeError::NotLoadStore { instruction } => {
                write!(f, "{instruction:#010x} is not a load/store")
            }
            DecodeError::Unsupported { instruction, what } => {
                write!(f, "{instruction:#010x}: {what} not emulated")
            }
            DecodeError::WritebackToTransferRegister { instruction } => {
                write!(f, "{instruction:#010x}: writeback to the transfer register")
            }
        }
    }
}

/// Decodes the syndrome of a data abort taken to EL2.
pub fn decode_syndrome(esr: u64) -> Result<MmioAccess, DecodeError> {
    let syndrome = Esr(esr);
    let Some(abort) = syndrome.data_abort() else {
        return Err(DecodeError::NotDataAbort { ec: syndrome.ec() });
    };
    if abort.stage1_walk {
        return Err(DecodeError::StageOneWalk);
    }
    if abort.cache_maintenance {
        return Err(DecodeError::CacheMaintenance);
    }
    if !abort.syndrome_valid {
        return Err(DecodeError::NeedInstruction);
    }
    Ok(described_access(&abort))
}

/// The access the syndrome of `abort` describes, when it does (ISV: the
/// caller checked).
pub fn described_access(abort: &DataAbort) -> MmioAccess {
    MmioAccess {
        direction: if abort.write {
            Direction::Write
        } else {
            Direction::Read
        },
        width: AccessWidth::from_log2(abort.size_log2),
        register: abort.register,
        sign_extend: abort.sign_extend,
        register_64: abort.register_64,
        writeback: None,
    }
}

/// The access a data abort taken with PSTATE `spsr` describes: from the
/// syndrome, or, when ISV = 0, from `instruction` (the word at ELR_EL2;
/// `None` if it could not be fetched, which yields `NeedInstruction`),
/// which is an A64 instruction only in AArch64 state.
pub fn decode(esr: u64, spsr: u64, instruction: Option<u32>) -> Result<MmioAccess, DecodeError> {
    match decode_syndrome(esr) {
        Err(DecodeError::NeedInstruction) if spsr & SPSR_AARCH32 != 0 => Err(DecodeError::AArch32),
        Err(DecodeError::NeedInstruction) => {
            instruction.map_or(Err(DecodeError::NeedInstruction), decode_instruction)
        }
        other => other,
    }
}

/// A64 load/store encoding classes (Arm ARM C4.1.94, "Load/store register").
mod insn {
    /// op0 bits [29:27] = 111 and [25:24] select "load/store register".
    pub const CLASS_MASK: u32 = 0x3B00_0000;
    pub const UNSIGNED_IMMEDIATE: u32 = 0x3900_0000;
    /// [25:24] = 00: immediate (bit 21 = 0) or register offset (bit 21 = 1).
    pub const OTHER: u32 = 0x3800_0000;
    pub const V: u32 = 1 << 26;
    pub const BIT21: u32 = 1 << 21;
    /// Load/store pair: bits [29:27] = 101, [25] = 0 (bits [24:23] pick the
    /// indexing mode).
    pub const PAIR_MASK: u32 = 0x3A00_0000;
    pub const PAIR: u32 = 0x2800_0000;
    /// Exclusives and ordered (LDXR, LDAR, ...): bits [29:24] = 001000.
    pub const EXCLUSIVE_MASK: u32 = 0x3F00_0000;
    pub const EXCLUSIVE: u32 = 0x0800_0000;
}

/// Decodes a single-register load/store instruction (ISV = 0 path).
pub fn decode_instruction(instruction: u32) -> Result<MmioAccess, DecodeError> {
    let unsupported = |what| Err(DecodeError::Unsupported { instruction, what });
    if instruction & insn::PAIR_MASK == insn::PAIR {
        return unsupported("load/store pair");
    }
    if instruction & insn::EXCLUSIVE_MASK == insn::EXCLUSIVE {
        return unsupported("exclusive or ordered load/store");
    }
    let class = instruction & insn::CLASS_MASK;
    if class != insn::UNSIGNED_IMMEDIATE && class != insn::OTHER {
        return Err(DecodeError::NotLoadStore { instruction });
    }
    if instruction & insn::V != 0 {
        return unsupported("SIMD&FP register");
    }
    let size = (instruction >> 30) as u8;
    let opc = (instruction >> 22) & 3;
    let rn = ((instruction >> 5) & 0x1F) as u8;
    let rt = (instruction & 0x1F) as u8;

    let writeback = if class == insn::UNSIGNED_IMMEDIATE {
        None
    } else if instruction & insn::BIT21 == 0 {
        // imm9 forms: [11:10] = 00 unscaled, 01 post-index, 10 unprivileged,
        // 11 pre-index.
        let imm9 = ((instruction >> 12) & 0x1FF) as i64;
        let offset = (imm9 << 55) >> 55;
        match (instruction >> 10) & 3 {
            0b01 | 0b11 => Some(Writeback { base: rn, offset }),
            _ => None,
        }
    } else if (instruction >> 10) & 3 == 0b10 {
        // Register offset: the offset register only forms the address.
        None
    } else {
        return unsupported("atomic memory operation");
    };
    if writeback.is_some() && rn == rt && rt != 31 {
        return Err(DecodeError::WritebackToTransferRegister { instruction });
    }

    // (size, opc) → direction, sign extension, 64-bit Rt (Arm ARM C6.2,
    // LDR/STR/LDRS* "size" and "opc" tables).
    let (direction, sign_extend, register_64) = match (size, opc) {
        (_, 0b00) => (Direction::Write, false, size == 3),
        (_, 0b01) => (Direction::Read, false, size == 3),
        (0..=2, 0b10) => (Direction::Read, true, true),
        (0 | 1, 0b11) => (Direction::Read, true, false),
        (3, 0b10) => return unsupported("prefetch (PRFM)"),
        _ => return unsupported("unallocated load/store encoding"),
    };
    Ok(MmioAccess {
        direction,
        width: AccessWidth::from_log2(size),
        register: rt,
        sign_extend,
        register_64,
        writeback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::{Byte, Double, Half, Word};
    use Direction::{Read, Write};

    fn access(
        direction: Direction,
        width: AccessWidth,
        register: u8,
        sign: bool,
        x: bool,
    ) -> MmioAccess {
        MmioAccess {
            direction,
            width,
            register,
            sign_extend: sign,
            register_64: x,
            writeback: None,
        }
    }

    /// Encodings written from the Arm ARM field tables and cross-checked
    /// with LLVM's assembler (`llvm-mc -triple=aarch64 -mattr=+lse
    /// -show-encoding`).
    fn table() -> Vec<(&'static str, u32, Result<MmioAccess, &'static str>)> {
        let wb = |base, offset, a: MmioAccess| MmioAccess {
            writeback: Some(Writeback { base, offset }),
            ..a
        };
        vec![
            (
                "ldr w1, [x2]",
                0xB940_0041,
                Ok(access(Read, Word, 1, false, false)),
            ),
            (
                "str x3, [x4, #8]",
                0xF900_0483,
                Ok(access(Write, Double, 3, false, true)),
            ),
            (
                "ldrb w5, [x6, #1]",
                0x3940_04C5,
                Ok(access(Read, Byte, 5, false, false)),
            ),
            (
                "strh w7, [x8, #2]",
                0x7900_0507,
                Ok(access(Write, Half, 7, false, false)),
            ),
            (
                "ldrsb x9, [x10]",
                0x3980_0149,
                Ok(access(Read, Byte, 9, true, true)),
            ),
            (
                "ldrsh w11, [x12]",
                0x79C0_018B,
                Ok(access(Read, Half, 11, true, false)),
            ),
            (
                "ldrsw x13, [x14, #4]",
                0xB980_05CD,
                Ok(access(Read, Word, 13, true, true)),
            ),
            (
                "ldr x15, [x16], #16",
                0xF841_060F,
                Ok(wb(16, 16, access(Read, Double, 15, false, true))),
            ),
            (
                "str w17, [x18, #-4]!",
                0xB81F_CE51,
                Ok(wb(18, -4, access(Write, Word, 17, false, false))),
            ),
            (
                "ldrb w28, [x29, #-3]!",
                0x385F_DFBC,
                Ok(wb(29, -3, access(Read, Byte, 28, false, false))),
            ),
            (
                "ldur w19, [x20, #-1]",
                0xB85F_F293,
                Ok(access(Read, Word, 19, false, false)),
            ),
            (
                "ldtr w0, [x1]",
                0xB840_0820,
                Ok(access(Read, Word, 0, false, false)),
            ),
            (
                "ldr w21, [x22, x23]",
                0xB877_6AD5,
                Ok(access(Read, Word, 21, false, false)),
            ),
            (
                "str x25, [x26, x27, lsl #3]",
                0xF83B_7B59,
                Ok(access(Write, Double, 25, false, true)),
            ),
            (
                "strb wzr, [x0]",
                0x3900_001F,
                Ok(access(Write, Byte, 31, false, false)),
            ),
            (
                "ldrh w24, [sp, #6]",
                0x7940_0FF8,
                Ok(access(Read, Half, 24, false, false)),
            ),
            ("ldp x0, x1, [x2]", 0xA940_0440, Err("load/store pair")),
            ("ldr q0, [x1]", 0x3DC0_0020, Err("SIMD&FP register")),
            (
                "ldxr w0, [x1]",
                0x885F_7C20,
                Err("exclusive or ordered load/store"),
            ),
            ("prfm pldl1keep, [x0]", 0xF980_0000, Err("prefetch (PRFM)")),
            (
                "ldadd w0, w1, [x2]",
                0xB820_0041,
                Err("atomic memory operation"),
            ),
        ]
    }

    #[test]
    fn decodes_instructions() {
        for (text, instruction, expected) in table() {
            let got = decode_instruction(instruction);
            match expected {
                Ok(access) => assert_eq!(got, Ok(access), "{text}"),
                Err(what) => assert_eq!(
                    got,
                    Err(DecodeError::Unsupported { instruction, what }),
                    "{text}"
                ),
            }
        }
    }

    #[test]
    fn refuses_non_load_stores_and_writeback_to_rt() {
        // nop, add x0, x1, #1
        for instruction in [0xD503_201F, 0x9100_0420] {
            assert_eq!(
                decode_instruction(instruction),
                Err(DecodeError::NotLoadStore { instruction })
            );
        }
        // ldr x1, [x1], #8 (Rn == Rt with writeback)
        let instruction = 0xF840_8421;
        assert_eq!(
            decode_instruction(instruction),
            Err(DecodeError::WritebackToTransferRegister { instruction })
        );
    }

    /// ESR_EL2 for a data abort from EL1 with the ISS fields of `access`,
    /// DFSC = translation fault, level 3.
    fn syndrome(access: &MmioAccess) -> u64 {
        let sas = access.width.bytes().trailing_zeros() as u64;
        let bit = |set: bool, bit: u32| u64::from(set) << bit;
        (0x24 << 26)
            | (1 << 25)
            | bit(true, 24)
            | (sas << 22)
            | bit(access.sign_extend, 21)
            | (u64::from(access.register) << 16)
            | bit(access.register_64, 15)
            | bit(access.direction == Write, 6)
            | 0x07
    }

    #[test]
    fn syndrome_and_instruction_agree() {
        for (text, instruction, _) in table() {
            let Ok(from_instruction) = decode_instruction(instruction) else {
                continue;
            };
            if from_instruction.writeback.is_some() {
                continue; // the hardware gives ISV = 0 for writeback forms
            }
            let esr = syndrome(&from_instruction);
            assert_eq!(
                decode_syndrome(esr),
                Ok(from_instruction),
                "{text}: ESR {esr:#x}"
            );
        }
    }

    #[test]
    fn syndrome_examples() {
        // str w1, [x0] from EL1 to an unmapped IPA: EC 0x24, IL, ISV, SAS=2,
        // SRT=1, WnR, DFSC 0x06 (translation fault, level 2).
        assert_eq!(
            decode_syndrome(0x9381_0046),
            Ok(access(Write, Word, 1, false, false))
        );
        // ISV clear.
        assert_eq!(
            decode_syndrome(0x9200_0007),
            Err(DecodeError::NeedInstruction)
        );
        // Cache maintenance (CM, WnR set as the architecture reports it).
        assert_eq!(
            decode_syndrome(0x9200_0147),
            Err(DecodeError::CacheMaintenance)
        );
        assert_eq!(decode_syndrome(0x9200_0087), Err(DecodeError::StageOneWalk));
        // An SVC syndrome.
        assert_eq!(
            decode_syndrome(0x5600_0000),
            Err(DecodeError::NotDataAbort { ec: 0x15 })
        );
    }

    #[test]
    fn decode_falls_back_to_the_instruction() {
        let post_index = 0xF841_060F; // ldr x15, [x16], #16
        let from_instruction = decode_instruction(post_index);
        let el1h = 0x3c5;
        assert_eq!(
            decode(0x9200_0007, el1h, Some(post_index)),
            from_instruction
        );
        assert_eq!(
            decode(0x9200_0007, el1h, None),
            Err(DecodeError::NeedInstruction)
        );
        assert_eq!(
            decode(0x9381_0046, el1h, Some(post_index)),
            Ok(access(Write, Word, 1, false, false)),
            "a valid syndrome wins"
        );
        assert_eq!(
            decode(0x9200_0147, el1h, Some(post_index)),
            Err(DecodeError::CacheMaintenance)
        );
    }

    /// An AArch32 guest (EL0 in a 32-bit process) faulting with ISV = 0:
    /// the word at its PC is an A32 or T32 instruction, which is never
    /// decoded as an A64 one.
    #[test]
    fn aarch32_state_is_not_decoded_as_a64() {
        let post_index = 0xF841_060F;
        let usr32 = 0x10;
        assert_eq!(
            decode(0x9200_0007, usr32, Some(post_index)),
            Err(DecodeError::AArch32)
        );
        // A valid syndrome describes an AArch32 access as well.
        assert_eq!(
            decode(0x9381_0046, usr32, None),
            Ok(access(Write, Word, 1, false, false))
        );
    }

    #[test]
    fn load_results_extend_as_the_register_says() {
        let ldrsb_w = access(Read, Byte, 0, true, false);
        let ldrsb_x = access(Read, Byte, 0, true, true);
        let ldrh = access(Read, Half, 0, false, false);
        let ldrsw = access(Read, Word, 0, true, true);
        assert_eq!(ldrsb_w.load_result(0x80), 0xFFFF_FF80);
        assert_eq!(ldrsb_x.load_result(0x80), 0xFFFF_FFFF_FFFF_FF80);
        assert_eq!(ldrsb_x.load_result(0x7F), 0x7F);
        assert_eq!(
            ldrh.load_result(0xABCD_8001),
            0x8001,
            "device bits past the width are dropped"
        );
        assert_eq!(ldrsw.load_result(0x8000_0000), 0xFFFF_FFFF_8000_0000);
        assert_eq!(
            access(Write, Half, 0, false, false).store_value(0x1234_5678),
            0x5678
        );
    }
}
