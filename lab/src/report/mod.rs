//! What the lab reports about runs, all folded from the run event stream:
//! per-console transcripts and their stable part (snapshots), and the boot
//! timeline.

pub mod timeline;
pub mod transcript;
