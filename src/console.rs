//! The console: the device tree's UART behind a lock, and the `print!`/`println!` macros.

use core::fmt::{self, Write};
use core::ptr::NonNull;

use spin::{Mutex, Once};

use sramlink::devicetree::Uart;

use crate::pl011::{Pl011, Writer};

struct Console {
    uart: Pl011,
    /// Held while one `print!` writes, so lines do not interleave.
    lock: Mutex<()>,
}

static CONSOLE: Once<Console> = Once::new();

/// Sets up the console on `uart`. Call once, with the MMU on and the UART mapped (`Once` and
/// `Mutex` use exclusive accesses, which need Normal memory to work everywhere).
///
/// # Safety
///
/// The UART's register window is mapped as Device memory for the rest of the kernel's life.
pub unsafe fn init(uart: &Uart) {
    let Some(base) = NonNull::new(uart.registers.start() as *mut u8) else {
        return;
    };
    CONSOLE.call_once(|| {
        // SAFETY: forwarded from this function's contract; the device tree says what it is.
        let uart = unsafe { Pl011::new(base, uart.kind) };
        uart.init();
        Console {
            uart,
            lock: Mutex::new(()),
        }
    });
}

/// Writes to the console (nothing if there is none). Used by the macros.
pub fn print(arguments: fmt::Arguments<'_>) {
    if let Some(console) = CONSOLE.get() {
        let _guard = console.lock.lock();
        let _ = Writer(&console.uart).write_fmt(arguments);
    }
}

/// Writes to the console even if the lock is held: for the panic handler and exception
/// reports. Only one CPU runs and nothing is interrupt-driven, so a held lock belongs to the
/// code that was interrupted by the fault, which will never resume.
pub fn emergency(arguments: fmt::Arguments<'_>) {
    if let Some(console) = CONSOLE.get() {
        let _guard = console.lock.try_lock();
        let _ = Writer(&console.uart).write_fmt(arguments);
        console.uart.flush();
    }
}

/// Waits until everything printed has been sent.
pub fn flush() {
    if let Some(console) = CONSOLE.get() {
        console.uart.flush();
    }
}

/// Prints to the console.
#[allow(unused_macros)]
macro_rules! print {
    ($($argument:tt)*) => ($crate::console::print(format_args!($($argument)*)));
}

/// Prints a line to the console.
macro_rules! println {
    () => ($crate::console::print(format_args!("\n")));
    ($($argument:tt)*) => ($crate::console::print(format_args!("{}\n", format_args!($($argument)*))));
}
