//! Emulated devices: plain logic over a guest-memory trait, host-tested.
