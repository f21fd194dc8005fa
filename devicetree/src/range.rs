//! Physical address ranges: half-open `[start, end)` intervals with overflow-checked construction.

use core::fmt;

/// A half-open physical address range `[start, end)`.
///
/// Invariant: `start <= end`. Constructors check it and reject ranges whose end would overflow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PhysRange {
    start: u64,
    end: u64,
}

impl PhysRange {
    /// The empty range at address 0.
    pub const EMPTY: PhysRange = PhysRange { start: 0, end: 0 };

    /// `[start, end)`, or `None` when `end < start`.
    pub const fn new(start: u64, end: u64) -> Option<Self> {
        if end < start {
            None
        } else {
            Some(Self { start, end })
        }
    }

    /// `[base, base + size)`, or `None` when the end overflows 64 bits.
    pub const fn from_base_size(base: u64, size: u64) -> Option<Self> {
        match base.checked_add(size) {
            Some(end) => Some(Self { start: base, end }),
            None => None,
        }
    }

    /// First address of the range.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// First address after the range.
    pub const fn end(&self) -> u64 {
        self.end
    }

    /// Number of bytes in the range.
    pub const fn size(&self) -> u64 {
        self.end - self.start
    }

    /// True when the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// True when `address` lies inside the range.
    pub const fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    /// True when `inner` lies entirely inside `self`.
    pub const fn contains_range(&self, inner: &PhysRange) -> bool {
        self.start <= inner.start && inner.end <= self.end
    }

    /// The range shown as `0xBASE+0xSIZE`.
    pub const fn base_size(self) -> BaseSize {
        BaseSize(self)
    }

    /// True when the two ranges share at least one byte (an empty range overlaps nothing).
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }

    /// The smallest range of whole `granule`-sized blocks covering `self` (`granule` a power of
    /// two), or `None` when rounding the end up overflows.
    pub const fn round_out(&self, granule: u64) -> Option<PhysRange> {
        let mask = granule - 1;
        match self.end.checked_add(mask) {
            Some(end) => Some(PhysRange {
                start: self.start & !mask,
                end: end & !mask,
            }),
            None => None,
        }
    }

    /// The parts of `self` left after removing `hole`: up to two ranges (below, above).
    pub fn subtract(&self, hole: &PhysRange) -> (Option<PhysRange>, Option<PhysRange>) {
        if !self.overlaps(hole) {
            return (Some(*self), None);
        }
        let below = (self.start < hole.start).then_some(PhysRange {
            start: self.start,
            end: hole.start,
        });
        let above = (hole.end < self.end).then_some(PhysRange {
            start: hole.end,
            end: self.end,
        });
        (below, above)
    }
}

/// A range shown as `0xBASE+0xSIZE`, as the peer's messages and report write it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BaseSize(pub PhysRange);

impl fmt::Display for BaseSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}+{:#x}", self.0.start(), self.0.size())
    }
}

impl fmt::Display for PhysRange {
    /// `0xSTART-0xEND` with an exclusive end, as in the boot log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::PhysRange;

    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    #[test]
    fn construction_rejects_inverted_and_overflowing_ranges() {
        assert!(PhysRange::new(2, 1).is_none());
        assert!(PhysRange::from_base_size(u64::MAX, 2).is_none());
        assert_eq!(
            PhysRange::from_base_size(0x1000, 0x2000),
            Some(range(0x1000, 0x3000))
        );
    }

    #[test]
    fn overlap_is_strict_on_half_open_ends() {
        assert!(!range(0, 0x1000).overlaps(&range(0x1000, 0x2000)));
        assert!(range(0, 0x1001).overlaps(&range(0x1000, 0x2000)));
        assert!(!range(0x1000, 0x1000).overlaps(&range(0, 0x2000)));
    }

    #[test]
    fn subtract_splits_around_a_hole() {
        let ram = range(0x4000_0000, 0x8000_0000);
        assert_eq!(
            ram.subtract(&range(0x7f00_0000, 0x8000_0000)),
            (Some(range(0x4000_0000, 0x7f00_0000)), None)
        );
        assert_eq!(
            ram.subtract(&range(0x5000_0000, 0x5000_1000)),
            (
                Some(range(0x4000_0000, 0x5000_0000)),
                Some(range(0x5000_1000, 0x8000_0000))
            )
        );
        assert_eq!(ram.subtract(&range(0, 0x1000)), (Some(ram), None));
        assert_eq!(ram.subtract(&range(0, u64::MAX)), (None, None));
    }

    #[test]
    fn round_out_covers_partial_pages() {
        assert_eq!(
            range(0x1001, 0x1002).round_out(0x1000),
            Some(range(0x1000, 0x2000))
        );
        assert_eq!(
            range(0x1000, 0x2000).round_out(0x1000),
            Some(range(0x1000, 0x2000))
        );
        assert_eq!(range(0, u64::MAX).round_out(0x1000), None);
    }

    #[test]
    fn base_size_display_and_containment() {
        let region = range(0x7f00_0000, 0x8000_0000);
        assert_eq!(
            std::format!("{}", region.base_size()),
            "0x7f000000+0x1000000"
        );
        assert!(region.contains_range(&range(0x7f80_0000, 0x7f80_1000)));
        assert!(region.contains_range(&region));
        assert!(!region.contains_range(&range(0x7ff0_0000, 0x8010_0000)));
    }

    #[test]
    fn display_uses_exclusive_end() {
        assert_eq!(
            std::format!("{}", range(0x7f00_0000, 0x8000_0000)),
            "0x7f000000-0x80000000"
        );
    }
}
