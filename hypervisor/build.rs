//! Links the bare-metal binary with `linker/hypervisor.ld`; host builds
//! (unit tests, `cargo check`) use the default link.
fn main() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../linker/hypervisor.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
}
