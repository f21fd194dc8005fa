//! Errors: bad regions, bad headers and protocol violations by the other side.

use core::fmt;

use crate::region::{Direction, Role};

/// Something about the region or the other side's shared values is wrong.
///
/// The `Display` text is meant for a console line (`sramlink: error: {error}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// An address or length is not aligned as required.
    Misaligned {
        /// What is misaligned.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The required alignment.
        align: u64,
    },
    /// The region cannot hold what is asked of it.
    RegionTooSmall {
        /// Bytes available.
        len: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// A geometry (ring placement or size) breaks a rule of the ABI.
    BadGeometry {
        /// Which rule.
        reason: &'static str,
        /// Ring concerned (0 or 1), if any.
        ring: Option<u8>,
        /// The offending value.
        value: u64,
    },
    /// The magic number is not `"SRAMLINK"` (not created yet, or not a sramlink region).
    BadMagic {
        /// The value found at offset 0.
        found: u64,
    },
    /// The major version is not the one this crate implements.
    VersionMismatch {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// A header field holds an impossible value.
    BadHeader {
        /// The field's name in `docs/ABI.md`.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A state word holds a value that is not Offline, Ready or Stopped.
    BadState {
        /// Whose state word.
        role: Role,
        /// The value found.
        value: u32,
    },
    /// A shared index written by the other side is impossible (misaligned, going backwards,
    /// or claiming more bytes than the ring holds).
    BadIndex {
        /// The ring.
        ring: Direction,
        /// `"producer"` or `"consumer"`.
        which: &'static str,
        /// The value read.
        value: u32,
        /// The last value known good (this side's reference point).
        previous: u32,
    },
    /// The header was re-created (a new guest boot) since this side attached: the magic is
    /// gone or the generation changed. Nothing of the old header may be used or written.
    Restarted {
        /// The generation this side attached to.
        attached: u32,
        /// The generation found now (`None`: no valid magic).
        found: Option<u32>,
    },
    /// The region's creator maps it with other memory attributes than this side.
    AttributeMismatch {
        /// The creator's mapping, as its `flags` record it.
        creator: &'static str,
        /// This side's mapping.
        ours: &'static str,
    },
    /// A session word written by the other side is impossible (ABI §5.7).
    BadSession {
        /// The word's name in `docs/ABI.md`.
        field: &'static str,
        /// The value read.
        value: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A record header in a ring is invalid.
    BadRecord {
        /// The ring.
        ring: Direction,
        /// Offset of the record in the data area.
        offset: u32,
        /// Its `len` field.
        len: u32,
        /// Its `kind` field.
        kind: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Misaligned { what, value, align } => {
                write!(f, "{what} {value:#x} is not a multiple of {align:#x}")
            }
            Error::RegionTooSmall { len, needed } => write!(
                f,
                "shared region of {len:#x} bytes is too small (needs at least {needed:#x})"
            ),
            Error::BadGeometry {
                reason,
                ring: Some(ring),
                value,
            } => write!(f, "bad ring geometry: ring {ring}: {reason} ({value:#x})"),
            Error::BadGeometry {
                reason,
                ring: None,
                value,
            } => write!(f, "bad ring geometry: {reason} ({value:#x})"),
            Error::BadMagic { found } => write!(
                f,
                "bad magic {found:#018x} at offset 0 (expected {:#018x}, \"SRAMLINK\")",
                crate::layout::MAGIC
            ),
            Error::VersionMismatch { major, minor } => write!(
                f,
                "ABI version mismatch: region has {major}.{minor}, this side speaks {}.{}",
                crate::layout::VERSION_MAJOR,
                crate::layout::VERSION_MINOR
            ),
            Error::BadHeader { field, value } => {
                write!(f, "bad region header: {field} = {value:#x}")
            }
            Error::BadState { role, value } => {
                write!(f, "bad {role} state word {value:#x} (expected 0, 1 or 2)")
            }
            Error::BadIndex {
                ring,
                which,
                value,
                previous,
            } => write!(
                f,
                "protocol error on ring {ring}: bad {which} index {value:#x} (previous {previous:#x})"
            ),
            Error::Restarted {
                attached,
                found: Some(found),
            } => write!(
                f,
                "the guest re-created the region (generation {attached:#x} -> {found:#x}): \
                 it restarted, and nothing of the old session survives"
            ),
            Error::Restarted {
                attached,
                found: None,
            } => write!(
                f,
                "the region header of generation {attached:#x} is gone (magic cleared): the \
                 guest is restarting"
            ),
            Error::AttributeMismatch { creator, ours } => write!(
                f,
                "memory attributes differ: the guest maps the region {creator} (header flags \
                 bit 0) but this side maps it {ours}; mismatched cacheability loses coherency \
                 on hardware (docs/ABI.md §1.1)"
            ),
            Error::BadSession {
                field,
                value,
                reason,
            } => write!(
                f,
                "protocol error: session word {field} = {value:#x}: {reason}"
            ),
            Error::BadRecord {
                ring,
                offset,
                len,
                kind,
                reason,
            } => write!(
                f,
                "protocol error on ring {ring}: bad record at data offset {offset:#x} \
                 (len {len:#x}, kind {kind}): {reason}"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// Why [`crate::Producer::send`] or [`crate::Producer::reserve`] did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Not enough free space right now; try again after the consumer released some.
    Full,
    /// The message can never fit: `len > max`.
    TooLarge {
        /// Requested payload length.
        len: usize,
        /// [`crate::Producer::max_message_len`].
        max: usize,
    },
    /// The other side broke the protocol (or the region is bad).
    Protocol(Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full => write!(f, "ring full"),
            SendError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            SendError::Protocol(error) => error.fmt(f),
        }
    }
}

impl core::error::Error for SendError {}

impl From<Error> for SendError {
    fn from(error: Error) -> Self {
        SendError::Protocol(error)
    }
}

/// Why [`crate::Consumer::recv`] did not return a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// The next message has `needed` bytes, more than the buffer; it stays in the ring.
    BufferTooSmall {
        /// Length of the pending message.
        needed: usize,
    },
    /// The other side broke the protocol (or the region is bad).
    Protocol(Error),
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::BufferTooSmall { needed } => {
                write!(f, "receive buffer too small for a {needed}-byte message")
            }
            RecvError::Protocol(error) => error.fmt(f),
        }
    }
}

impl core::error::Error for RecvError {}

impl From<Error> for RecvError {
    fn from(error: Error) -> Self {
        RecvError::Protocol(error)
    }
}
