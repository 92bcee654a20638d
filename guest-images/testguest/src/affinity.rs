//! MPIDR affinity in the encodings the GICv3 wants: GICR_TYPER's packed
//! form, GICD_IROUTER's routing value, and an ICC_SGI1R_EL1 target.

/// Aff3.Aff2.Aff1.Aff0 as GICR_TYPER[63:32] packs it.
pub fn packed(mpidr: u64) -> u64 {
    (((mpidr >> 32) & 0xFF) << 24) | (mpidr & 0xFF_FFFF)
}

/// GICD_IROUTER routing to this affinity: Aff3 [39:32], Aff2..0 [23:0];
/// also the affinity bits alone (no U, MT or RES1 bits), for comparisons.
pub fn route(mpidr: u64) -> u64 {
    (mpidr & 0xFF_0000_0000) | (mpidr & 0xFF_FFFF)
}

/// ICC_SGI1R_EL1 sending SGI `intid` to the CPU with `mpidr`: Aff3
/// [55:48], RS [47:44], Aff2 [39:32], INTID [27:24], Aff1 [23:16],
/// TargetList [15:0] (bit Aff0 mod 16 of range RS = Aff0 / 16).
pub fn sgi1r(intid: u32, mpidr: u64) -> u64 {
    let aff0 = mpidr & 0xFF;
    let aff1 = (mpidr >> 8) & 0xFF;
    let aff2 = (mpidr >> 16) & 0xFF;
    let aff3 = (mpidr >> 32) & 0xFF;
    (aff3 << 48)
        | ((aff0 / 16) << 44)
        | (aff2 << 32)
        | (u64::from(intid & 0xF) << 24)
        | (aff1 << 16)
        | (1 << (aff0 % 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        // MPIDR_EL1 of QEMU's CPU 1: RES1 bit 31 set, Aff0 = 1.
        let cpu1 = 0x8000_0001;
        assert_eq!(packed(cpu1), 1);
        assert_eq!(route(cpu1), 1);
        let far = 0x0000_0012_0003_0421; // Aff3 0x12, Aff2 0x03, Aff1 0x04, Aff0 0x21
        assert_eq!(packed(far), 0x1203_0421);
        assert_eq!(route(far), 0x12_0003_0421);
        // SGI 5 to Aff0 0x21: RS 2, target bit 1.
        assert_eq!(
            sgi1r(5, far),
            (0x12 << 48) | (2 << 44) | (0x03 << 32) | (5 << 24) | (0x04 << 16) | 0b10
        );
        assert_eq!(sgi1r(1, cpu1), (1 << 24) | 0b10);
    }
}
