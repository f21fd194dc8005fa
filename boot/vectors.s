// sramlink exception vectors: IRQs and the guarded SMCCC probe return; everything else is fatal.
//
// Normal execution uses SP_EL0 (EL1t), so its exceptions arrive in the "current EL with SP0"
// group and are handled on SP_EL1, the separate exception stack. Those entries save the
// caller-saved registers in a frame on that stack and call `sramlink_exception(kind, frame)`,
// which either returns (an IRQ was handled, or the probe's `hvc` was undefined and is skipped)
// and the frame is restored and `eret` resumes, or reports the exception and stops the guest.
// ELR_EL1/SPSR_EL1 need no saving: the handler runs with IRQs masked (set on entry) and any
// exception inside it is taken in the "current EL with SPx" group, which parks silently.

.equ FRAME_BYTES, 22 * 8                // x0-x18, x29, x30 and one pad word: 16-byte aligned
.equ FP_BYTES, 32 * 16 + 16             // q0-q31, FPSR and FPCR: compiled Rust may use SIMD

.macro entry kind
.balign 0x80
    sub     sp, sp, #FRAME_BYTES
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       __exception_entry
.endm

.macro nested
.balign 0x80
    b       __exception_nested
.endm

.section .text.vectors, "ax"
.balign 0x800
.global __exception_vectors
__exception_vectors:
    entry 0                             // current EL, SP0: synchronous
    entry 1                             // current EL, SP0: IRQ
    entry 2                             // current EL, SP0: FIQ
    entry 3                             // current EL, SP0: SError
    nested                              // current EL, SPx: synchronous
    nested                              // current EL, SPx: IRQ
    nested                              // current EL, SPx: FIQ
    nested                              // current EL, SPx: SError
    entry 8                             // lower EL, AArch64: synchronous (no EL0 exists)
    entry 9                             // lower EL, AArch64: IRQ
    entry 10                            // lower EL, AArch64: FIQ
    entry 11                            // lower EL, AArch64: SError
    entry 12                            // lower EL, AArch32: synchronous
    entry 13                            // lower EL, AArch32: IRQ
    entry 14                            // lower EL, AArch32: FIQ
    entry 15                            // lower EL, AArch32: SError

// x0 = kind, x0/x1 of the interrupted code already saved at [sp].
__exception_entry:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    str     x30, [sp, #160]
    mov     x1, sp                      // the frame, for the handler to read and change
    sub     sp, sp, #FP_BYTES
    stp     q0, q1, [sp, #0]
    stp     q2, q3, [sp, #32]
    stp     q4, q5, [sp, #64]
    stp     q6, q7, [sp, #96]
    stp     q8, q9, [sp, #128]
    stp     q10, q11, [sp, #160]
    stp     q12, q13, [sp, #192]
    stp     q14, q15, [sp, #224]
    stp     q16, q17, [sp, #256]
    stp     q18, q19, [sp, #288]
    stp     q20, q21, [sp, #320]
    stp     q22, q23, [sp, #352]
    stp     q24, q25, [sp, #384]
    stp     q26, q27, [sp, #416]
    stp     q28, q29, [sp, #448]
    stp     q30, q31, [sp, #480]
    mrs     x2, fpsr
    mrs     x3, fpcr
    add     x4, sp, #512
    stp     x2, x3, [x4]
    bl      sramlink_exception          // returns only when execution may resume
    add     x4, sp, #512
    ldp     x2, x3, [x4]
    msr     fpsr, x2
    msr     fpcr, x3
    ldp     q0, q1, [sp, #0]
    ldp     q2, q3, [sp, #32]
    ldp     q4, q5, [sp, #64]
    ldp     q6, q7, [sp, #96]
    ldp     q8, q9, [sp, #128]
    ldp     q10, q11, [sp, #160]
    ldp     q12, q13, [sp, #192]
    ldp     q14, q15, [sp, #224]
    ldp     q16, q17, [sp, #256]
    ldp     q18, q19, [sp, #288]
    ldp     q20, q21, [sp, #320]
    ldp     q22, q23, [sp, #352]
    ldp     q24, q25, [sp, #384]
    ldp     q26, q27, [sp, #416]
    ldp     q28, q29, [sp, #448]
    ldp     q30, q31, [sp, #480]
    add     sp, sp, #FP_BYTES
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x29, [sp, #144]
    ldr     x30, [sp, #160]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME_BYTES
    eret

__exception_nested:
    wfe
    b       __exception_nested

// The probes: `hvc #0` (SMCCC) and `hvc #0xea1` (Xen) with the registers as the caller set
// them. Where nothing at EL2 serves `hvc` it is undefined; `sramlink_exception` recognises
// these addresses, sets x17 to 1 and resumes after the `hvc`.
.section .text, "ax"
.balign 4
.global __sramlink_hvc_probe
__sramlink_hvc_probe:
    hvc     #0
    ret
.global __sramlink_xen_probe
__sramlink_xen_probe:
    hvc     #0xea1
    ret
