//! Memory management: which host RAM is free ([`frames`]), the heap's
//! bookkeeping ([`heap`]) and the translation-table builder shared by the
//! hypervisor's own stage 1 and the guests' stage 2 ([`pagetable`]).
pub mod frames;
pub mod heap;
pub mod pagetable;
