// sramlink guest entry: arm64 Image header, bring the boot CPU to EL1, stacks, BSS, then Rust.
//
// Included by src/arch/aarch64/boot.rs with global_asm!; names in braces are Rust constants.
// Entered with the MMU off, x0 = physical address of the device tree (arm64 boot protocol).

.section .text._start, "ax"
.global _start
_start:
    // arm64 Linux Image header (Linux Documentation/arch/arm64/booting.rst), 64 bytes.
    b       .L_entry                    // code0: branch over the header
    .long   0                           // code1
    .quad   {TEXT_OFFSET}               // text_offset: loaded at a 2 MiB-aligned base + this
    .quad   __image_size                // image_size: _start to the end of BSS and stacks
    .quad   {IMAGE_FLAGS}               // flags: LE, 4 KiB pages, 2 MiB base near DRAM start
    .quad   0                           // res2
    .quad   0                           // res3
    .quad   0                           // res4
    .ascii  "ARM\x64"                   // magic, at offset 0x38
    .long   0                           // res5: no PE/COFF header

.L_entry:
    mov     x19, x0                     // keep the DTB address for Rust (callee-saved register)

    // The kernel is linked at one address (static relocation model: vtables and function
    // pointers are absolute). If a loader ignored text_offset and put it elsewhere, no Rust
    // code can run safely: park rather than jump into garbage.
    adr     x1, _start                  // where we run
    ldr     x2, =_start                 // where we are linked
    cmp     x1, x2
    b.ne    .L_park

    // Only the boot CPU runs the kernel. QEMU and Xen start just CPU 0 (the others wait for
    // PSCI CPU_ON); any other CPU that arrives here parks.
    mrs     x1, mpidr_el1
    ldr     x2, ={MPIDR_AFFINITY_MASK}
    and     x1, x1, x2
    cmp     x1, #{BOOT_CPU_AFFINITY}
    b.ne    .L_park

    mrs     x20, CurrentEL
    lsr     x20, x20, #2                // x20 = exception level at entry, reported by Rust
    cmp     x20, #2
    b.eq    .L_from_el2
    cmp     x20, #1
    b.eq    .L_at_el1
    b       .L_park                     // EL3 entry is not supported

.L_from_el2:
    // Entered at EL2 (QEMU virtualization=on): configure EL2 to stay out of the way, then
    // return to EL1 where the kernel runs, as under Xen.
    ldr     x1, ={HCR_EL2_VALUE}        // RW: EL1 is AArch64; no stage 2, no traps
    msr     hcr_el2, x1
    mrs     x1, cnthctl_el2
    orr     x1, x1, #3                  // EL1PCTEN | EL1PCEN: EL1 may use the counters/timers
    msr     cnthctl_el2, x1
    msr     cntvoff_el2, xzr            // virtual counter = physical counter
    mrs     x1, midr_el1
    msr     vpidr_el2, x1               // EL1 reads of MIDR/MPIDR see the real values
    mrs     x1, mpidr_el1
    msr     vmpidr_el2, x1
    ldr     x1, ={CPTR_EL2_VALUE}       // no FP/SIMD trap to EL2 (RES1 bits only)
    msr     cptr_el2, x1
    msr     hstr_el2, xzr
    ldr     x1, ={SCTLR_EL1_VALUE}      // EL1 MMU and caches off until Rust enables them
    msr     sctlr_el1, x1
    ldr     x1, ={SPSR_EL2_VALUE}       // return to EL1h with D, A, I and F masked
    msr     spsr_el2, x1
    adr     x1, .L_at_el1
    msr     elr_el2, x1
    eret

.L_at_el1:
    msr     daifset, #0xf               // masked; IRQs are taken only in cpu::wait_for_interrupt
    ldr     x1, ={SCTLR_EL1_VALUE}      // known state: MMU, caches, alignment checks off
    msr     sctlr_el1, x1
    ldr     x1, ={CPACR_EL1_VALUE}      // FPEN: FP/SIMD at EL1 (compiled Rust uses them)
    msr     cpacr_el1, x1
    adrp    x1, __exception_vectors
    add     x1, x1, :lo12:__exception_vectors
    msr     vbar_el1, x1
    isb                                 // the system register writes above take effect here

    // Two stacks: exceptions run on SP_EL1, everything else on SP_EL0 (EL1t). A fault on the
    // boot stack's guard page then still has a good stack to be reported from.
    adrp    x1, __exception_stack_end_exclusive
    add     x1, x1, :lo12:__exception_stack_end_exclusive
    mov     sp, x1                      // SPSel = 1 here: this is SP_EL1
    adrp    x1, __boot_stack_end_exclusive
    add     x1, x1, :lo12:__boot_stack_end_exclusive
    msr     sp_el0, x1
    msr     spsel, #0

    // Zero BSS (16-byte aligned by the linker script). The MMU is off, so these are
    // Device-nGnRnE stores: aligned, which is all such memory requires.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end_exclusive
    add     x2, x2, :lo12:__bss_end_exclusive
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:
    mov     x0, x19                     // dtb address
    mov     x1, x20                     // entry exception level
    bl      _start_rust                 // never returns

.L_park:
    wfe
    b       .L_park
