//! Decoding of data-abort syndromes into MMIO accesses.
