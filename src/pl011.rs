//! PL011 UART driver (transmit only), also for the SBSA generic UART subset (Xen's vpl011).
//!
//! Register map and bits from the Arm PrimeCell UART (PL011) Technical Reference Manual
//! (DDI 0183G, section 3.2). The SBSA generic UART (Arm DEN 0094, appendix B) has only DR, FR
//! and the interrupt registers: no baud rate, line or control registers.

use core::fmt;
use core::ptr::NonNull;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

use sramlink::devicetree::UartKind;

register_bitfields! {
    u32,

    /// Flag Register, UARTFR (TRM 3.3.3).
    FR [
        /// Transmit FIFO full (or, FIFO disabled, the holding register full).
        TXFF OFFSET(5) NUMBITS(1) [],
        /// UART busy transmitting.
        BUSY OFFSET(3) NUMBITS(1) []
    ],

    /// Line Control Register, UARTLCR_H (TRM 3.3.7).
    LCR_H [
        /// Word length.
        WLEN OFFSET(5) NUMBITS(2) [
            EightBit = 0b11
        ],
        /// FIFOs enabled.
        FEN OFFSET(4) NUMBITS(1) []
    ],

    /// Control Register, UARTCR (TRM 3.3.8).
    CR [
        /// Receive enable.
        RXE OFFSET(9) NUMBITS(1) [],
        /// Transmit enable.
        TXE OFFSET(8) NUMBITS(1) [],
        /// UART enable.
        UARTEN OFFSET(0) NUMBITS(1) []
    ],

    /// Interrupt Clear Register, UARTICR (TRM 3.3.13).
    ICR [
        /// All interrupt clear bits.
        ALL OFFSET(0) NUMBITS(11) []
    ]
}

register_structs! {
    #[allow(non_snake_case)]
    Registers {
        (0x00 => dr: ReadWrite<u32>),
        (0x04 => _reserved0),
        (0x18 => fr: ReadOnly<u32, FR::Register>),
        (0x1c => _reserved1),
        (0x2c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x30 => cr: ReadWrite<u32, CR::Register>),
        (0x34 => _reserved2),
        (0x44 => icr: WriteOnly<u32, ICR::Register>),
        (0x48 => @END),
    }
}

/// One PL011 or SBSA UART.
pub struct Pl011 {
    registers: NonNull<Registers>,
    kind: UartKind,
}

// SAFETY: the registers are MMIO shared by design; `Pl011` only does single-register volatile
// accesses through `&self`. Whole lines are serialized by the console lock; the unlocked
// emergency path can at worst interleave characters.
unsafe impl Send for Pl011 {}
// SAFETY: as for `Send`.
unsafe impl Sync for Pl011 {}

impl Pl011 {
    /// A driver for the UART at `base`.
    ///
    /// # Safety
    ///
    /// `base` is the register window of a UART of `kind`, mapped as Device memory (or the MMU
    /// is off) for as long as the driver is used, and nothing else programs it.
    pub const unsafe fn new(base: NonNull<u8>, kind: UartKind) -> Self {
        Self {
            registers: base.cast(),
            kind,
        }
    }

    fn registers(&self) -> &Registers {
        // SAFETY: `new`'s contract: the window is mapped and valid for the driver's life.
        unsafe { self.registers.as_ref() }
    }

    /// Makes sure a PL011 transmits: if firmware has not enabled it, enable it with 8-bit words
    /// and FIFOs. The baud rate is left as firmware set it (QEMU ignores it). The SBSA UART has
    /// no control registers and is always on, so it is left alone.
    pub fn init(&self) {
        if self.kind != UartKind::Pl011 || self.registers().cr.is_set(CR::UARTEN) {
            return;
        }
        let registers = self.registers();
        registers.icr.write(ICR::ALL::SET);
        registers
            .lcr_h
            .write(LCR_H::WLEN::EightBit + LCR_H::FEN::SET);
        registers
            .cr
            .write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    pub fn write_byte(&self, byte: u8) {
        let registers = self.registers();
        while registers.fr.is_set(FR::TXFF) {
            core::hint::spin_loop();
        }
        registers.dr.set(u32::from(byte));
    }

    /// Waits until the last byte has left the shift register (before powering off).
    pub fn flush(&self) {
        while self.registers().fr.is_set(FR::BUSY) {
            core::hint::spin_loop();
        }
    }
}

/// `core::fmt` output to a UART, `\n` sent as `\r\n`.
pub struct Writer<'a>(pub &'a Pl011);

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                self.0.write_byte(b'\r');
            }
            self.0.write_byte(byte);
        }
        Ok(())
    }
}
