//! Links the bare-metal binary with `linker/hypervisor.ld`; host builds
//! (unit tests, `cargo check`) use the default link.
//!
//! The script path is read from the environment at run time, not baked in
//! with `env!`: a build-script binary compiled in one checkout can be reused
//! by another that shares the target directory.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let script = manifest_dir.join("../linker/hypervisor.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
}
