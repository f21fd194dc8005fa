//! The console: the device tree's UART behind a lock, and the `print!`/`println!` macros.
//!
//! The UART is recorded ([`record`]) as soon as the device tree is parsed, with the MMU still
//! off; the locked console ([`init`]) needs the MMU on. Until then, [`emergency`] (fatal
//! errors, panics, exception reports) drives the recorded UART through a stack-local driver.

use core::fmt::{self, Write};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::{Mutex, Once};

use sramlink::devicetree::{Uart, UartKind};

use crate::pl011::{Pl011, Writer};

struct Console {
    uart: Pl011,
    /// Held while one `print!` writes, so lines do not interleave.
    lock: Mutex<()>,
}

static CONSOLE: Once<Console> = Once::new();

/// The device tree's console UART: register base (0: none recorded) and [`UartKind`] code.
///
/// Only plain loads and stores (`Relaxed` `load`/`store` compile to `ldr`/`str`): they work with
/// the MMU off, where all memory is Device and exclusives cannot be relied on. Both live in
/// BSS, inside the image, so the data-cache invalidation done before the MMU goes on keeps the
/// values stored with the MMU off visible afterwards. Only the boot CPU runs; it stores the kind
/// before the base and reads them back only after, in program order: no ordering needed.
static UART_BASE: AtomicUsize = AtomicUsize::new(0);
static UART_KIND: AtomicUsize = AtomicUsize::new(0);

const PL011: usize = 0;
const SBSA_UART: usize = 1;

/// Records the console UART for [`init`] and [`emergency`]. Works with the MMU off or on.
///
/// # Safety
///
/// `uart` is the device tree's console, and from now on its register window stays accessible
/// as Device memory: the MMU is off, or it is on with the window mapped Device for good.
pub unsafe fn record(uart: &Uart) {
    let kind = match uart.kind {
        UartKind::Pl011 => PL011,
        UartKind::SbsaUart => SBSA_UART,
    };
    UART_KIND.store(kind, Ordering::Relaxed);
    UART_BASE.store(uart.registers.start() as usize, Ordering::Relaxed);
}

/// The UART [`record`] recorded, if any.
fn recorded() -> Option<(NonNull<u8>, UartKind)> {
    let base = NonNull::new(UART_BASE.load(Ordering::Relaxed) as *mut u8)?;
    let kind = match UART_KIND.load(Ordering::Relaxed) {
        SBSA_UART => UartKind::SbsaUart,
        _ => UartKind::Pl011,
    };
    Some((base, kind))
}

/// A driver for the recorded UART (`None` without one).
fn recorded_uart() -> Option<Pl011> {
    let (base, kind) = recorded()?;
    // Several drivers for it may exist (the console's and emergency ones): each access is a
    // single volatile register access, and the emergency ones only run when the code that
    // owned the console will never resume.
    // SAFETY: `record`'s contract: the window is the console UART's, accessible as Device
    // memory for the rest of the kernel's life.
    Some(unsafe { Pl011::new(base, kind) })
}

/// Sets up the locked console on the recorded UART (nothing without one). Call once.
///
/// # Safety
///
/// The MMU is on: `Once` and `Mutex` use exclusive accesses, which need Normal memory.
pub unsafe fn init() {
    if let Some(uart) = recorded_uart() {
        CONSOLE.call_once(|| {
            uart.init();
            Console {
                uart,
                lock: Mutex::new(()),
            }
        });
    }
}

/// Writes to the console (nothing if there is none). Used by the macros.
pub fn print(arguments: fmt::Arguments<'_>) {
    if let Some(console) = CONSOLE.get() {
        let _guard = console.lock.lock();
        let _ = Writer(&console.uart).write_fmt(arguments);
    }
}

/// Writes to the console even if the lock is held, and waits until it is sent: for fatal
/// errors, the panic handler and exception reports. Only one CPU runs and nothing is
/// interrupt-driven, so a held lock belongs to the code that was interrupted by the fault,
/// which will never resume.
///
/// Before [`init`] (MMU off, or just turned on), it drives the UART [`record`] recorded through
/// a stack-local driver, without locks or atomics beyond plain loads; before anything is
/// recorded (no readable device tree), it prints nothing.
pub fn emergency(arguments: fmt::Arguments<'_>) {
    // `Once::get` is a plain load-acquire, no exclusive: fine with the MMU off.
    if let Some(console) = CONSOLE.get() {
        let _guard = console.lock.try_lock();
        let _ = Writer(&console.uart).write_fmt(arguments);
        console.uart.flush();
    } else if let Some(uart) = recorded_uart() {
        uart.init();
        let _ = Writer(&uart).write_fmt(arguments);
        uart.flush();
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
