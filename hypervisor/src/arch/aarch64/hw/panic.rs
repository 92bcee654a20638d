//! The panic handler: `hypervisor panic at <file>:<line>: <message>` on the
//! console, then PSCI SYSTEM_OFF (so QEMU exits and the lab sees the end).

use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(loc) => crate::console::panic_print(format_args!(
            "hypervisor panic at {}:{}: {}\n",
            loc.file(),
            loc.line(),
            info.message()
        )),
        None => crate::console::panic_print(format_args!(
            "hypervisor panic at <unknown>: {}\n",
            info.message()
        )),
    }
    crate::power::system_off()
}
