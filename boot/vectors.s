// sramlink exception vectors: every exception is fatal; Rust reports it and stops the guest.
//
// Normal execution uses SP_EL0 (EL1t), so its exceptions arrive in the "current EL with SP0"
// group and are handled on SP_EL1, the separate exception stack. An exception in the "current
// EL with SPx" group therefore happened inside the handler itself (or in the first
// instructions of _start): reporting could fault again, so that CPU parks silently.

.macro report kind
.balign 0x80
    mov     x0, #\kind
    b       __exception_report
.endm

.macro nested
.balign 0x80
    b       __exception_nested
.endm

.section .text.vectors, "ax"
.balign 0x800
.global __exception_vectors
__exception_vectors:
    report 0                            // current EL, SP0: synchronous
    report 1                            // current EL, SP0: IRQ
    report 2                            // current EL, SP0: FIQ
    report 3                            // current EL, SP0: SError
    nested                              // current EL, SPx: synchronous
    nested                              // current EL, SPx: IRQ
    nested                              // current EL, SPx: FIQ
    nested                              // current EL, SPx: SError
    report 8                            // lower EL, AArch64: synchronous (no EL0 exists)
    report 9                            // lower EL, AArch64: IRQ
    report 10                           // lower EL, AArch64: FIQ
    report 11                           // lower EL, AArch64: SError
    report 12                           // lower EL, AArch32: synchronous
    report 13                           // lower EL, AArch32: IRQ
    report 14                           // lower EL, AArch32: FIQ
    report 15                           // lower EL, AArch32: SError

__exception_report:
    bl      sramlink_exception          // x0 = kind; never returns

__exception_nested:
    wfe
    b       __exception_nested
