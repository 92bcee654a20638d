//! virtio devices over the MMIO transport (virtio 1.2, 4.2). For now the
//! transport's identification registers and the empty slot every unused
//! `virtio,mmio` node of a guest DT needs.

pub mod mmio;
