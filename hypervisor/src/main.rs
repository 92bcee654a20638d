//! The EL2 hypervisor binary. On `aarch64-unknown-none` the entry point is
//! the boot assembly in the library's arch layer (`_start`, named by
//! `linker/hypervisor.ld`), so this file only pulls the library in. On the
//! host there is nothing to run: it says how to build the real image.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate hypervisor;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "the hypervisor runs at EL2 on bare metal; build it with\n  \
         cargo build -p hypervisor --target aarch64-unknown-none --release\n\
         and boot it with the lab: cargo run -p lab -- scenario hv_boot"
    );
    std::process::exit(2);
}
