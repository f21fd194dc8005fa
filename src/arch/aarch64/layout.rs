//! Where `linker.ld` placed the image's parts, read from its symbols.

use sramlink::memory_map::ImageLayout;
use sramlink_devicetree::PhysRange;

unsafe extern "C" {
    static __image_start: u8;
    static __text_end_exclusive: u8;
    static __rodata_end_exclusive: u8;
    static __boot_stack_guard_start: u8;
    static __boot_stack_start: u8;
    static __exception_stack_guard_start: u8;
    static __exception_stack_start: u8;
    static __image_end_exclusive: u8;
}

fn range(start: *const u8, end: *const u8) -> PhysRange {
    // The linker script's ASSERTs order these symbols; an inverted pair cannot link.
    PhysRange::new(start as u64, end as u64).unwrap_or(PhysRange::EMPTY)
}

/// The image layout. Addresses are physical: the image runs identity-mapped.
pub fn image() -> ImageLayout {
    ImageLayout {
        image: range(&raw const __image_start, &raw const __image_end_exclusive),
        text: range(&raw const __image_start, &raw const __text_end_exclusive),
        rodata: range(
            &raw const __text_end_exclusive,
            &raw const __rodata_end_exclusive,
        ),
        guards: [
            range(
                &raw const __boot_stack_guard_start,
                &raw const __boot_stack_start,
            ),
            range(
                &raw const __exception_stack_guard_start,
                &raw const __exception_stack_start,
            ),
        ],
    }
}
