//! The layout of a flattened device tree blob (DTB), checked before the `fdt` crate reads it.
//!
//! `fdt` 0.1.5 trusts the blob. Header offsets or sizes pointing outside it, a property length
//! or name offset past its block, an unknown token, an unterminated or non-UTF-8 name, and
//! `FDT_NOP` tokens where its walkers do not skip them all make it panic (slice index out of
//! range, `assert_eq!(.., FDT_END_NODE, "bad node")`, `expect`, `unwrap`) rather than return an
//! error, and the guest would stop without saying why. Deep nesting makes it recurse without
//! bound. So the guest accepts only blobs on which every `fdt` call
//! [`crate::discover`] and [`crate::DeviceTree::read`] makes is total, and says precisely what is wrong with any
//! other:
//!
//! - [`Header::check`]: what the 40-byte header alone shows (version, every block inside
//!   `totalsize` and outside the header, alignment, structure and strings blocks disjoint);
//! - [`check_blocks`]: the memory reservation map is terminated inside the blob and overlaps
//!   neither block, and the structure block follows this grammar:
//!
//! ```text
//! block = NOP* root NOP* END                      (bytes after END are ignored)
//! root  = BEGIN_NODE "" NOP* PROP* (NOP | node)* END_NODE
//! node  = BEGIN_NODE name PROP* node* NOP* END_NODE   (at most MAX_NESTING levels deep)
//! ```
//!
//! Every name is NUL-terminated UTF-8 inside the structure block; every property's value lies
//! inside the structure block, and its name offset points at NUL-terminated UTF-8 inside the
//! strings block. The `FDT_NOP` placement is narrower than the Devicetree Specification's
//! (which allows a NOP between any two tokens) because `fdt`'s node skipper panics on a NOP
//! anywhere else, and its child iterator silently stops at one between properties. dtc and
//! libfdt's sequential writer (Xen's domU trees) leave no NOP; QEMU, loading a `-dtb`, turns the
//! root's `/memory*` and `/psci` nodes into NOPs (`fdt_nop_node`): both are accepted. Any other
//! placement is reported with its offset instead of being misread.

// Errors carry the node's path in a fixed-capacity string (no allocator), so they are larger
// than clippy likes; one is built at most once per boot.
#![allow(clippy::result_large_err)]

use core::fmt;

use heapless::Vec;

use crate::error::{DtError, NodePath};

/// Magic number at offset 0 of every DTB (big-endian).
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the (version 17) DTB header.
pub const FDT_HEADER_SIZE: usize = 40;
/// Oldest `version` accepted: 17 is the first whose header has `size_dt_struct`, which the
/// parser relies on.
pub const MIN_VERSION: u32 = 17;
/// Newest format understood: a blob's `last_comp_version` must not exceed it.
pub const MAX_LAST_COMP_VERSION: u32 = 17;
/// Deepest node nesting accepted in the structure block (`fdt` skips subtrees recursively).
pub const MAX_NESTING: usize = 64;

/// Largest DTB `totalsize` accepted: a sanity bound. The arm64 boot protocol asks for at most
/// 2 MiB, but QEMU pads the blob it passes (`totalsize` 0x204e20 was seen for a `-dtb` file).
pub const MAX_DTB_SIZE: usize = 16 * 1024 * 1024;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Size of one memory reservation entry (address, size: two big-endian 64-bit numbers).
const RESERVATION_ENTRY_SIZE: u64 = 16;

/// The header fields, as read (big-endian words, in header order).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Header {
    /// `magic`.
    pub magic: u32,
    /// `totalsize`.
    pub total_size: u32,
    /// `off_dt_struct`.
    pub off_dt_struct: u32,
    /// `off_dt_strings`.
    pub off_dt_strings: u32,
    /// `off_mem_rsvmap`.
    pub off_mem_rsvmap: u32,
    /// `version`.
    pub version: u32,
    /// `last_comp_version`.
    pub last_comp_version: u32,
    /// `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
    /// `size_dt_strings`.
    pub size_dt_strings: u32,
    /// `size_dt_struct`.
    pub size_dt_struct: u32,
}

/// A block of the blob, for messages: which one and where.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Block {
    /// `"structure block"`, `"strings block"` or `"memory reservation map"`.
    pub name: &'static str,
    /// First byte (offset from the blob's start).
    pub start: u64,
    /// First byte after it.
    pub end: u64,
}

impl Block {
    fn overlaps(&self, other: &Block) -> bool {
        self.start < self.end
            && other.start < other.end
            && self.start < other.end
            && other.start < self.end
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:#x}..{:#x}", self.name, self.start, self.end)
    }
}

impl Header {
    /// Reads the header's ten words.
    pub fn parse(bytes: &[u8; FDT_HEADER_SIZE]) -> Self {
        let word = |index: usize| {
            let at = index * 4;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Header {
            magic: word(0),
            total_size: word(1),
            off_dt_struct: word(2),
            off_dt_strings: word(3),
            off_mem_rsvmap: word(4),
            version: word(5),
            last_comp_version: word(6),
            boot_cpuid_phys: word(7),
            size_dt_strings: word(8),
            size_dt_struct: word(9),
        }
    }

    fn structure(&self) -> Block {
        Block {
            name: "structure block",
            start: self.off_dt_struct.into(),
            end: u64::from(self.off_dt_struct) + u64::from(self.size_dt_struct),
        }
    }

    fn strings(&self) -> Block {
        Block {
            name: "strings block",
            start: self.off_dt_strings.into(),
            end: u64::from(self.off_dt_strings) + u64::from(self.size_dt_strings),
        }
    }

    /// Everything the header alone shows, beyond the magic and the plausibility of `totalsize`
    /// (checked by [`dtb_total_size`]): a version this parser reads, and
    /// the memory reservation map's first entry and both other blocks after the header,
    /// aligned as the specification requires, inside `totalsize` and disjoint.
    pub fn check(&self) -> Result<(), LayoutError> {
        if self.version < MIN_VERSION || self.last_comp_version > MAX_LAST_COMP_VERSION {
            return Err(LayoutError::Version {
                version: self.version,
                last_comp_version: self.last_comp_version,
            });
        }
        let total_size = self.total_size;
        let blocks = [
            (
                "off_mem_rsvmap",
                self.off_mem_rsvmap,
                8,
                RESERVATION_ENTRY_SIZE as u32,
            ),
            ("off_dt_struct", self.off_dt_struct, 4, self.size_dt_struct),
            (
                "off_dt_strings",
                self.off_dt_strings,
                1,
                self.size_dt_strings,
            ),
        ];
        for (field, offset, alignment, size) in blocks {
            if (offset as usize) < FDT_HEADER_SIZE {
                return Err(LayoutError::InHeader { field, offset });
            }
            if offset % alignment != 0 {
                return Err(LayoutError::Misaligned {
                    field,
                    offset,
                    alignment,
                });
            }
            if u64::from(offset) + u64::from(size) > u64::from(total_size) {
                return Err(LayoutError::OutsideBlob {
                    field,
                    offset,
                    size,
                    total_size,
                });
            }
        }
        let (structure, strings) = (self.structure(), self.strings());
        if structure.overlaps(&strings) {
            return Err(LayoutError::Overlap(structure, strings));
        }
        Ok(())
    }
}

/// What is wrong with the structure block's tokens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StructureProblem {
    /// The block ends inside a token or before `FDT_END`.
    Ended,
    /// A token that cannot come here.
    UnexpectedToken {
        /// The token.
        token: u32,
        /// What could.
        expected: &'static str,
    },
    /// A token the parser cannot take after an earlier one in the same node.
    Misplaced {
        /// The token.
        token: u32,
        /// `"a child node"` or `"an FDT_NOP"`.
        after: &'static str,
    },
    /// The root node has a name.
    RootNamed,
    /// A node name without a NUL before the block's end.
    NameUnterminated,
    /// A node name that is not UTF-8.
    NameNotUtf8,
    /// A property value running past the block's end.
    PropertyTooLong {
        /// Its length.
        len: u32,
    },
    /// A property name offset outside the strings block.
    NameOffsetOutside {
        /// `nameoff`.
        name_offset: u32,
        /// `size_dt_strings`.
        strings_size: u32,
    },
    /// A property name without a NUL before the strings block's end.
    PropertyNameUnterminated {
        /// `nameoff`.
        name_offset: u32,
    },
    /// A property name that is not UTF-8.
    PropertyNameNotUtf8 {
        /// `nameoff`.
        name_offset: u32,
    },
    /// Nodes nest deeper than [`MAX_NESTING`].
    TooDeep,
}

/// The name of a structure token, for messages.
struct Token(u32);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            FDT_BEGIN_NODE => f.write_str("FDT_BEGIN_NODE"),
            FDT_END_NODE => f.write_str("FDT_END_NODE"),
            FDT_PROP => f.write_str("FDT_PROP"),
            FDT_NOP => f.write_str("FDT_NOP"),
            FDT_END => f.write_str("FDT_END"),
            other => write!(f, "unknown token {other:#x}"),
        }
    }
}

impl fmt::Display for StructureProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StructureProblem::Ended => f.write_str("the block ends before FDT_END"),
            StructureProblem::UnexpectedToken { token, expected } => {
                write!(f, "{} where {expected} must come", Token(token))
            }
            StructureProblem::Misplaced { token, after } => write!(
                f,
                "{} after {after} in the same node (unsupported: FDT_NOP is only accepted before \
                 a node's FDT_END_NODE and before or between the root's children, and \
                 properties come before child nodes)",
                Token(token)
            ),
            StructureProblem::RootNamed => f.write_str("the root node has a name"),
            StructureProblem::NameUnterminated => {
                f.write_str("node name has no NUL before the block's end")
            }
            StructureProblem::NameNotUtf8 => f.write_str("node name is not UTF-8"),
            StructureProblem::PropertyTooLong { len } => {
                write!(
                    f,
                    "property value of {len:#x} bytes runs past the block's end"
                )
            }
            StructureProblem::NameOffsetOutside {
                name_offset,
                strings_size,
            } => write!(
                f,
                "property name offset {name_offset:#x} is outside the {strings_size:#x}-byte \
                 strings block"
            ),
            StructureProblem::PropertyNameUnterminated { name_offset } => write!(
                f,
                "property name at strings offset {name_offset:#x} has no NUL before the \
                 strings block's end"
            ),
            StructureProblem::PropertyNameNotUtf8 { name_offset } => write!(
                f,
                "property name at strings offset {name_offset:#x} is not UTF-8"
            ),
            StructureProblem::TooDeep => write!(f, "nodes nest deeper than {MAX_NESTING} levels"),
        }
    }
}

/// Why a DTB's layout cannot be trusted (beyond a bad magic or `totalsize`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LayoutError {
    /// The blob is shorter than its header or than its `totalsize`.
    Truncated {
        /// Bytes there are.
        length: usize,
        /// Bytes there should be.
        needed: usize,
        /// `"header"` or `"totalsize"`.
        what: &'static str,
    },
    /// A format version this parser does not read.
    Version {
        /// `version`.
        version: u32,
        /// `last_comp_version`.
        last_comp_version: u32,
    },
    /// A block starts inside the header.
    InHeader {
        /// The header field giving its offset.
        field: &'static str,
        /// Its value.
        offset: u32,
    },
    /// A block offset is not aligned as the specification requires.
    Misaligned {
        /// The header field.
        field: &'static str,
        /// Its value.
        offset: u32,
        /// The alignment required.
        alignment: u32,
    },
    /// A block ends beyond `totalsize`.
    OutsideBlob {
        /// The header field giving its offset.
        field: &'static str,
        /// Its value.
        offset: u32,
        /// The block's size (for the memory reservation map: its terminating entry).
        size: u32,
        /// `totalsize`.
        total_size: u32,
    },
    /// Two blocks overlap.
    Overlap(Block, Block),
    /// The memory reservation map has no terminating (0, 0) entry before the next block or
    /// `totalsize`.
    ReservationsUnterminated {
        /// `off_mem_rsvmap`.
        offset: u32,
        /// The block that follows, or `"totalsize"`.
        before: &'static str,
        /// Where that block starts, or `totalsize`.
        limit: u64,
    },
    /// The structure block cannot be walked safely.
    Structure {
        /// Offset of the offending token or field from the blob's start.
        offset: usize,
        /// The node it is in (empty outside the root).
        path: NodePath,
        /// What is wrong.
        problem: StructureProblem,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Truncated {
                length,
                needed,
                what,
            } => write!(
                f,
                "dtb: blob is {length:#x} bytes, shorter than its {what} ({needed:#x} bytes)"
            ),
            LayoutError::Version {
                version,
                last_comp_version,
            } => write!(
                f,
                "dtb: version {version} (last_comp_version {last_comp_version}) is not \
                 supported: need version >= {MIN_VERSION} and last_comp_version <= \
                 {MAX_LAST_COMP_VERSION}"
            ),
            LayoutError::InHeader { field, offset } => write!(
                f,
                "dtb: {field} {offset:#x} points into the {FDT_HEADER_SIZE:#x}-byte header"
            ),
            LayoutError::Misaligned {
                field,
                offset,
                alignment,
            } => write!(
                f,
                "dtb: {field} {offset:#x} is not {alignment}-byte aligned"
            ),
            LayoutError::OutsideBlob {
                field,
                offset,
                size,
                total_size,
            } => write!(
                f,
                "dtb: {field} {offset:#x} + size {size:#x} exceeds totalsize {total_size:#x}"
            ),
            LayoutError::Overlap(first, second) => {
                write!(f, "dtb: {first} overlaps {second}")
            }
            LayoutError::ReservationsUnterminated {
                offset,
                before,
                limit,
            } => {
                write!(
                    f,
                    "dtb: memory reservation map at {offset:#x} has no terminating (0, 0) entry \
                     before "
                )?;
                if *before == "totalsize" {
                    write!(f, "totalsize {limit:#x}")
                } else {
                    write!(f, "the {before} at {limit:#x}")
                }
            }
            LayoutError::Structure {
                offset,
                path,
                problem,
            } => {
                write!(f, "dtb: structure block offset {offset:#x}")?;
                if !path.is_empty() {
                    write!(f, " (in {path})")?;
                }
                write!(f, ": {problem}")
            }
        }
    }
}

/// Checks what [`Header::check`] cannot see: the memory reservation map's extent and the
/// structure block's tokens (the module documentation has the grammar). `blob` is exactly
/// `totalsize` bytes whose header passed [`Header::check`].
pub fn check_blocks(blob: &[u8], header: &Header) -> Result<(), LayoutError> {
    let total_size = header.total_size as usize;
    let blob = blob.get(..total_size).ok_or(LayoutError::Truncated {
        length: blob.len(),
        needed: total_size,
        what: "totalsize",
    })?;
    check_reservations(blob, header)?;
    // Inside `totalsize` (`Header::check`); empty if the header was not checked after all.
    let block = |range: Block| {
        blob.get(range.start as usize..range.end as usize)
            .unwrap_or_default()
    };
    Walker {
        block: block(header.structure()),
        base: header.off_dt_struct as usize,
        strings: block(header.strings()),
        position: 0,
        path: NodePath::new(),
        path_lengths: Vec::new(),
    }
    .walk()
}

/// The memory reservation map (16-byte entries up to a (0, 0) one) must end before whatever
/// follows it: the next block, or `totalsize`.
fn check_reservations(blob: &[u8], header: &Header) -> Result<(), LayoutError> {
    let start = u64::from(header.off_mem_rsvmap);
    let first_entry = Block {
        name: "memory reservation map",
        start,
        end: start + RESERVATION_ENTRY_SIZE,
    };
    let mut limit = ("totalsize", blob.len() as u64);
    for block in [header.structure(), header.strings()] {
        if first_entry.overlaps(&block) {
            return Err(LayoutError::Overlap(first_entry, block));
        }
        if block.start < block.end && block.start > start && block.start < limit.1 {
            limit = (block.name, block.start);
        }
    }
    let terminated = blob
        .get(start as usize..limit.1 as usize)
        .unwrap_or_default()
        .chunks_exact(RESERVATION_ENTRY_SIZE as usize)
        .any(|entry| entry.iter().all(|byte| *byte == 0));
    if !terminated {
        return Err(LayoutError::ReservationsUnterminated {
            offset: header.off_mem_rsvmap,
            before: limit.0,
            limit: limit.1,
        });
    }
    Ok(())
}

/// Where a node's tokens have got to, for the grammar's ordering rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but (for the root) NOPs yet.
    Start,
    /// Properties.
    Properties,
    /// A child node was last.
    AfterChild,
    /// An `FDT_NOP` after properties or children, outside the root: only `FDT_NOP` and
    /// `FDT_END_NODE` may follow.
    AfterNop,
    /// An `FDT_NOP` after the root's properties or between its children: no property may
    /// follow.
    RootNop,
}

/// An iterative walk of the structure block (no recursion, whatever the nesting).
struct Walker<'a> {
    block: &'a [u8],
    /// The block's offset in the blob, for messages.
    base: usize,
    strings: &'a [u8],
    position: usize,
    path: NodePath,
    /// The length of `path` before each open node's name was appended.
    path_lengths: Vec<usize, MAX_NESTING>,
}

impl<'a> Walker<'a> {
    fn error(&self, at: usize, problem: StructureProblem) -> LayoutError {
        LayoutError::Structure {
            offset: self.base + at,
            path: self.path.clone(),
            problem,
        }
    }

    fn word(&mut self) -> Result<u32, LayoutError> {
        let bytes = self
            .block
            .get(self.position..)
            .and_then(|rest| rest.first_chunk::<4>())
            .ok_or_else(|| self.error(self.position, StructureProblem::Ended))?;
        self.position += 4;
        Ok(u32::from_be_bytes(*bytes))
    }

    /// A token; returns it and its offset in the block.
    fn token(&mut self) -> Result<(usize, u32), LayoutError> {
        let at = self.position;
        Ok((at, self.word()?))
    }

    /// The NUL-terminated, padded name after an `FDT_BEGIN_NODE`.
    fn name(&mut self) -> Result<&'a str, LayoutError> {
        let at = self.position;
        let rest = self.block.get(at..).unwrap_or_default();
        let length = rest
            .iter()
            .position(|byte| *byte == 0)
            .ok_or_else(|| self.error(at, StructureProblem::NameUnterminated))?;
        let name = core::str::from_utf8(&rest[..length])
            .map_err(|_| self.error(at, StructureProblem::NameNotUtf8))?;
        // Past the block's end only if the padding is missing: the next token is then `Ended`.
        self.position = at + (length + 1).next_multiple_of(4);
        Ok(name)
    }

    /// An `FDT_PROP`'s length, name offset and value.
    fn property(&mut self) -> Result<(), LayoutError> {
        let len = self.word()?;
        let name_offset_at = self.position;
        let name_offset = self.word()?;
        let value_at = self.position;
        if len as usize > self.block.len() - value_at {
            return Err(self.error(value_at, StructureProblem::PropertyTooLong { len }));
        }
        self.position = value_at + (len as usize).next_multiple_of(4);
        let name_error = |problem| self.error(name_offset_at, problem);
        let name = self
            .strings
            .get(name_offset as usize..)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                name_error(StructureProblem::NameOffsetOutside {
                    name_offset,
                    strings_size: self.strings.len() as u32,
                })
            })?;
        let length = name.iter().position(|byte| *byte == 0).ok_or_else(|| {
            name_error(StructureProblem::PropertyNameUnterminated { name_offset })
        })?;
        core::str::from_utf8(&name[..length])
            .map_err(|_| name_error(StructureProblem::PropertyNameNotUtf8 { name_offset }))?;
        Ok(())
    }

    fn enter(&mut self, name: &str) {
        // The path only names nodes in messages: a truncated one is still useful.
        let _ = self.path_lengths.push(self.path.len());
        if self.path.len() > 1 || self.path.is_empty() {
            let _ = self.path.push('/');
        }
        for character in name.chars() {
            if self.path.push(character).is_err() {
                break;
            }
        }
    }

    fn leave(&mut self) {
        let length = self.path_lengths.pop().unwrap_or(0);
        self.path.truncate(length);
    }

    fn walk(mut self) -> Result<(), LayoutError> {
        let (at, token) = loop {
            match self.token()? {
                (_, FDT_NOP) => {}
                found => break found,
            }
        };
        if token != FDT_BEGIN_NODE {
            return Err(self.error(
                at,
                StructureProblem::UnexpectedToken {
                    token,
                    expected: "the root node's FDT_BEGIN_NODE",
                },
            ));
        }
        if !self.name()?.is_empty() {
            return Err(self.error(at, StructureProblem::RootNamed));
        }
        self.enter("");
        // One phase per open node, the root first.
        let mut phases: Vec<Phase, MAX_NESTING> = Vec::new();
        let _ = phases.push(Phase::Start);
        while let Some(&phase) = phases.last() {
            let in_root = phases.len() == 1;
            let (at, token) = self.token()?;
            let misplaced = |after| StructureProblem::Misplaced { token, after };
            let next = match (token, phase) {
                (FDT_PROP, Phase::Start | Phase::Properties) => {
                    self.property()?;
                    Phase::Properties
                }
                (FDT_PROP, Phase::AfterChild) => {
                    return Err(self.error(at, misplaced("a child node")));
                }
                (FDT_PROP, Phase::AfterNop | Phase::RootNop)
                | (FDT_BEGIN_NODE, Phase::AfterNop) => {
                    return Err(self.error(at, misplaced("an FDT_NOP")));
                }
                (FDT_NOP, Phase::Start) if in_root => Phase::Start,
                (FDT_NOP, _) if in_root => Phase::RootNop,
                (FDT_NOP, _) => Phase::AfterNop,
                (FDT_BEGIN_NODE, _) => {
                    if phases.len() == MAX_NESTING {
                        return Err(self.error(at, StructureProblem::TooDeep));
                    }
                    let name = self.name()?;
                    self.enter(name);
                    // The parent's phase after this child, then the child's own.
                    if let Some(last) = phases.last_mut() {
                        *last = Phase::AfterChild;
                    }
                    let _ = phases.push(Phase::Start);
                    continue;
                }
                (FDT_END_NODE, _) => {
                    phases.pop();
                    self.leave();
                    continue;
                }
                _ => {
                    return Err(self.error(
                        at,
                        StructureProblem::UnexpectedToken {
                            token,
                            expected: "FDT_PROP, FDT_BEGIN_NODE, FDT_NOP or FDT_END_NODE",
                        },
                    ));
                }
            };
            if let Some(last) = phases.last_mut() {
                *last = next;
            }
        }
        loop {
            match self.token()? {
                (_, FDT_NOP) => {}
                (_, FDT_END) => return Ok(()),
                (at, token) => {
                    return Err(self.error(
                        at,
                        StructureProblem::UnexpectedToken {
                            token,
                            expected: "FDT_END after the root node",
                        },
                    ));
                }
            }
        }
    }
}

/// Checks the header at the start of a DTB found at `address` and returns its `totalsize`, the
/// number of bytes that may then be read: the magic, a plausible `totalsize`, and everything
/// else the header alone shows ([`Header::check`]: version, every block after the header and
/// inside `totalsize`, aligned, disjoint).
pub fn dtb_total_size(address: u64, header: &[u8; FDT_HEADER_SIZE]) -> Result<usize, DtError> {
    let header = Header::parse(header);
    if header.magic != FDT_MAGIC {
        return Err(DtError::BadMagic {
            address,
            found: header.magic,
        });
    }
    let total_size = header.total_size as usize;
    if !(FDT_HEADER_SIZE..=MAX_DTB_SIZE).contains(&total_size) {
        return Err(DtError::BadSize {
            address,
            total_size,
        });
    }
    header.check().map_err(DtError::Layout)?;
    Ok(total_size)
}

/// Checks a whole DTB before anything walks it: its header as [`dtb_total_size`] does (the
/// slice's address standing for the DTB's), that it holds `totalsize` bytes, and its memory
/// reservation map and structure block ([`check_blocks`]). Returns the blob cut to
/// `totalsize`, on which the `fdt` crate's walkers cannot panic.
pub fn check_dtb(blob: &[u8]) -> Result<&[u8], DtError> {
    check_dtb_at(blob, blob.as_ptr() as u64)
}

/// [`check_dtb`] for a blob read from elsewhere (e.g. a file), `address` standing for where it
/// was found in messages.
pub fn check_dtb_at(blob: &[u8], address: u64) -> Result<&[u8], DtError> {
    let header = blob
        .first_chunk::<FDT_HEADER_SIZE>()
        .ok_or(DtError::Layout(LayoutError::Truncated {
            length: blob.len(),
            needed: FDT_HEADER_SIZE,
            what: "header",
        }))?;
    let total_size = dtb_total_size(address, header)?;
    let blob = blob
        .get(..total_size)
        .ok_or(DtError::Layout(LayoutError::Truncated {
            length: blob.len(),
            needed: total_size,
            what: "totalsize",
        }))?;
    check_blocks(blob, &Header::parse(header)).map_err(DtError::Layout)?;
    Ok(blob)
}

/// Removes every `FDT_NOP` token from a blob's structure block, in place: the other tokens
/// move up, `FDT_END` follows the last of them and the freed bytes after it are zeroed (the
/// header is unchanged; bytes after `FDT_END` are ignored). Returns how many were removed.
///
/// `FDT_NOP` means nothing (the Devicetree Specification lets a reader skip it anywhere), but
/// `fdt` 0.1.5 mishandles it outside the places [`check_blocks`] accepts, and Linux leaves one
/// where it is not accepted: it overwrites `/chosen/rng-seed` (and on arm64 `kaslr-seed`) with
/// NOPs in the blob it then publishes at `/sys/firmware/fdt`. A reader that owns a writable
/// copy of the blob calls this before [`check_dtb`]. A blob whose header or tokens cannot be
/// walked is left untouched, for [`check_dtb`] to say precisely what is wrong with it.
pub fn strip_nops(blob: &mut [u8]) -> usize {
    let Some(header) = blob.first_chunk::<FDT_HEADER_SIZE>() else {
        return 0;
    };
    let header = Header::parse(header);
    if header.magic != FDT_MAGIC || header.check().is_err() {
        return 0;
    }
    let (start, end) = (
        header.off_dt_struct as usize,
        header.off_dt_struct as usize + header.size_dt_struct as usize,
    );
    if end > blob.len() {
        return 0;
    }
    // Pass 1, read only: the token boundaries are sound and there is something to remove.
    match nop_count(&blob[start..end]) {
        Some(0) | None => return 0,
        Some(_) => {}
    }
    // Pass 2: move every other token up over the NOPs.
    let block = &mut blob[start..end];
    let (mut read, mut write, mut removed) = (0, 0, 0);
    while let Some((token, length)) = token_at(block, read) {
        if token == FDT_NOP {
            removed += 1;
        } else {
            block.copy_within(read..read + length, write);
            write += length;
        }
        read += length;
        if token == FDT_END {
            break;
        }
    }
    block[write..].fill(0);
    removed
}

/// How many `FDT_NOP` tokens a structure block holds before its `FDT_END`, or `None` when its
/// tokens cannot be walked to an `FDT_END`.
fn nop_count(block: &[u8]) -> Option<usize> {
    let (mut at, mut nops) = (0, 0);
    loop {
        let (token, length) = token_at(block, at)?;
        match token {
            FDT_NOP => nops += 1,
            FDT_END => return Some(nops),
            _ => {}
        }
        at += length;
    }
}

/// The token at `at` of a structure block and its length in bytes (name or value and padding
/// included), or `None` when it is unknown or runs past the block.
fn token_at(block: &[u8], at: usize) -> Option<(u32, usize)> {
    let word = |offset: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            block.get(offset..offset.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let token = word(at)?;
    let length = match token {
        FDT_BEGIN_NODE => {
            let name = block.get(at + 4..)?;
            let name_length = name.iter().position(|byte| *byte == 0)? + 1;
            4 + name_length.next_multiple_of(4)
        }
        FDT_PROP => {
            let value_length = word(at + 4)? as usize;
            12usize.checked_add(value_length.checked_next_multiple_of(4)?)?
        }
        FDT_END_NODE | FDT_NOP | FDT_END => 4,
        _ => return None,
    };
    (at.checked_add(length)? <= block.len()).then_some((token, length))
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::string::{String, ToString};
    use std::vec::Vec;

    use super::*;
    use crate::testing::{FdtWriter, fixture, insert_empty_node, insert_nop};

    /// Header word indices.
    const TOTAL_SIZE: usize = 1;
    const OFF_DT_STRUCT: usize = 2;
    const OFF_DT_STRINGS: usize = 3;
    const OFF_MEM_RSVMAP: usize = 4;
    const VERSION: usize = 5;
    const LAST_COMP_VERSION: usize = 6;
    const SIZE_DT_STRUCT: usize = 9;

    /// Both checks, as `check_dtb` makes them after the magic and `totalsize` bound.
    fn check(blob: &[u8]) -> Result<(), String> {
        let header = Header::parse(blob.first_chunk().unwrap());
        header
            .check()
            .and_then(|()| check_blocks(blob, &header))
            .map_err(|error| error.to_string())
    }

    fn set_word(blob: &mut [u8], offset: usize, value: u32) {
        blob[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
    }

    fn set_header(blob: &mut [u8], index: usize, value: u32) {
        set_word(blob, index * 4, value);
    }

    /// Header 0x0..0x28, reservation map 0x28..0x38, then the structure block:
    ///
    /// ```text
    /// 0x38 BEGIN_NODE ""           0x40 PROP #address-cells = <2>  (len 0x44, nameoff 0x48)
    /// 0x50 BEGIN_NODE "chosen"     0x5c PROP bootargs = "x"        (len 0x60, nameoff 0x64)
    /// 0x6c END_NODE                0x70 END_NODE                   0x74 END
    /// ```
    /// and the strings block at 0x78: "#address-cells\0bootargs\0" (0x18 bytes).
    fn small_tree() -> Vec<u8> {
        let mut writer = FdtWriter::new();
        writer.begin("").cells("#address-cells", &[2]);
        writer.begin("chosen").string("bootargs", "x").end();
        writer.end();
        writer.finish()
    }

    #[test]
    fn good_blobs_pass() {
        assert_eq!(check(&small_tree()), Ok(()));
        assert_eq!(
            check(&std::fs::read(fixture("qemu-virt-sram.dtb")).unwrap()),
            Ok(())
        );
    }

    #[test]
    fn header_problems_are_named_with_their_numbers() {
        let with = |index, value| {
            let mut blob = small_tree();
            set_header(&mut blob, index, value);
            check(&blob).unwrap_err()
        };
        assert_eq!(
            with(VERSION, 16),
            "dtb: version 16 (last_comp_version 16) is not supported: need version >= 17 and \
             last_comp_version <= 17"
        );
        assert!(with(LAST_COMP_VERSION, 18).starts_with("dtb: version 17 (last_comp_version 18)"));
        assert_eq!(
            with(OFF_DT_STRINGS, 0x80),
            "dtb: off_dt_strings 0x80 + size 0x18 exceeds totalsize 0x90"
        );
        assert_eq!(
            with(SIZE_DT_STRUCT, u32::MAX),
            "dtb: off_dt_struct 0x38 + size 0xffffffff exceeds totalsize 0x90"
        );
        assert_eq!(
            with(OFF_DT_STRUCT, 0x10),
            "dtb: off_dt_struct 0x10 points into the 0x28-byte header"
        );
        assert_eq!(
            with(OFF_DT_STRUCT, 0x3a),
            "dtb: off_dt_struct 0x3a is not 4-byte aligned"
        );
        assert_eq!(
            with(OFF_MEM_RSVMAP, 0x2c),
            "dtb: off_mem_rsvmap 0x2c is not 8-byte aligned"
        );
        assert_eq!(
            with(OFF_MEM_RSVMAP, 0x88),
            "dtb: off_mem_rsvmap 0x88 + size 0x10 exceeds totalsize 0x90"
        );
        assert_eq!(
            with(OFF_DT_STRINGS, 0x70),
            "dtb: structure block 0x38..0x78 overlaps strings block 0x70..0x88"
        );
        // A header that claims more than the blob holds.
        let mut blob = small_tree();
        set_header(&mut blob, TOTAL_SIZE, 0x100);
        set_header(&mut blob, OFF_DT_STRINGS, 0xe0);
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: blob is 0x90 bytes, shorter than its totalsize (0x100 bytes)"
        );
    }

    #[test]
    fn reservation_map_must_end_before_the_other_blocks() {
        let mut blob = small_tree();
        blob[0x28] = 1; // first entry (1 << 56, 0): the map runs on into the structure block
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: memory reservation map at 0x28 has no terminating (0, 0) entry before the \
             structure block at 0x38"
        );
        // Starting inside the structure block.
        let mut blob = small_tree();
        set_header(&mut blob, OFF_MEM_RSVMAP, 0x40);
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: memory reservation map 0x40..0x50 overlaps structure block 0x38..0x78"
        );
        // Moved after the strings block: fine with its terminator, not without.
        let mut blob = small_tree();
        blob.extend_from_slice(&[0; 16]);
        set_header(&mut blob, TOTAL_SIZE, 0xa0);
        set_header(&mut blob, OFF_MEM_RSVMAP, 0x90);
        assert_eq!(check(&blob), Ok(()));
        blob[0x9f] = 1;
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: memory reservation map at 0x90 has no terminating (0, 0) entry before \
             totalsize 0xa0"
        );
    }

    #[test]
    fn structure_problems_give_offset_and_node() {
        let with_word = |offset, value| {
            let mut blob = small_tree();
            set_word(&mut blob, offset, value);
            check(&blob).unwrap_err()
        };
        assert_eq!(
            with_word(0x5c, 7),
            "dtb: structure block offset 0x5c (in /chosen): unknown token 0x7 where FDT_PROP, \
             FDT_BEGIN_NODE, FDT_NOP or FDT_END_NODE must come"
        );
        assert_eq!(
            with_word(0x60, 0x100),
            "dtb: structure block offset 0x68 (in /chosen): property value of 0x100 bytes runs \
             past the block's end"
        );
        assert_eq!(
            with_word(0x64, 0x18),
            "dtb: structure block offset 0x64 (in /chosen): property name offset 0x18 is \
             outside the 0x18-byte strings block"
        );
        assert_eq!(
            with_word(0x38, FDT_PROP),
            "dtb: structure block offset 0x38: FDT_PROP where the root node's FDT_BEGIN_NODE \
             must come"
        );
        assert_eq!(
            with_word(0x74, FDT_BEGIN_NODE),
            "dtb: structure block offset 0x74: FDT_BEGIN_NODE where FDT_END after the root \
             node must come"
        );
        assert_eq!(
            with_word(0x6c, FDT_END),
            "dtb: structure block offset 0x6c (in /chosen): FDT_END where FDT_PROP, \
             FDT_BEGIN_NODE, FDT_NOP or FDT_END_NODE must come"
        );
        // The root's name is the empty string.
        let mut blob = small_tree();
        blob[0x3c] = b'r';
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: structure block offset 0x38: the root node has a name"
        );
        // Invalid UTF-8 in a node name and in a property name.
        let mut blob = small_tree();
        blob[0x55] = 0xff;
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: structure block offset 0x54 (in /): node name is not UTF-8"
        );
        let mut blob = small_tree();
        blob[0x78 + 15] = 0xff;
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: structure block offset 0x64 (in /chosen): property name at strings offset \
             0xf is not UTF-8"
        );
        // The strings block cut inside "bootargs": no NUL after it.
        let mut blob = small_tree();
        set_header(&mut blob, 8, 0x14);
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: structure block offset 0x64 (in /chosen): property name at strings offset \
             0xf has no NUL before the strings block's end"
        );
        // The structure block cut inside "chosen", then before FDT_END.
        let mut blob = small_tree();
        set_header(&mut blob, SIZE_DT_STRUCT, 0x1c);
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: structure block offset 0x54 (in /): node name has no NUL before the block's end"
        );
        let mut blob = small_tree();
        set_header(&mut blob, SIZE_DT_STRUCT, 0x3c);
        assert_eq!(
            check(&blob).unwrap_err(),
            "dtb: structure block offset 0x74: the block ends before FDT_END"
        );
    }

    /// A root with `levels` nested nodes below it.
    fn nested(levels: usize) -> Vec<u8> {
        // vm-fdt writes at most 64 levels (the root and 63 below it); a 64th is spliced in.
        let written = levels.min(MAX_NESTING - 1);
        let mut writer = FdtWriter::new();
        writer.begin("");
        for level in 0..written {
            writer.begin(&std::format!("n{level}"));
        }
        for _ in 0..=written {
            writer.end();
        }
        let mut blob = writer.finish();
        for level in written..levels {
            // Inside the innermost node, right after its name: 0x38 + 8 (root) + level * 8.
            insert_empty_node(&mut blob, 0x38 + 8 + level * 8, &std::format!("n{level}"));
        }
        blob
    }

    #[test]
    fn nesting_is_bounded() {
        assert_eq!(check(&nested(MAX_NESTING - 1)), Ok(()));
        // Each level is 8 bytes (FDT_BEGIN_NODE, "nN\0" padded): n63 starts at 0x38 + 8 + 63 * 8.
        let message = check(&nested(MAX_NESTING)).unwrap_err();
        assert!(
            message.starts_with("dtb: structure block offset 0x238 (in /n0/n1/n2/")
                && message.ends_with("): nodes nest deeper than 64 levels"),
            "{message}"
        );
    }

    /// A root with a property, `/a` (two properties, children `/a/b` and `/a/c`) and `/d`,
    /// with `nops` written after the given `(node, position)` points.
    fn with_nops(nops: &[(&str, &str)]) -> Vec<u8> {
        let mut writer = FdtWriter::new();
        writer.begin("").cells("#address-cells", &[1]);
        writer.begin("a").cells("p", &[1]).cells("q", &[2]);
        writer.begin("b").end().begin("c").end().end();
        writer.begin("d").end().end();
        let mut blob = writer.finish();
        // Where each point is without NOPs (structure block from 0x38): BEGIN_NODE "" 0x38,
        // PROP 0x40, BEGIN_NODE "a" 0x50, PROP p 0x58, PROP q 0x68, "b" 0x78..0x84,
        // "c" 0x84..0x90, END_NODE (a) 0x90, "d" 0x94..0xa0, END_NODE (root) 0xa0, END 0xa4.
        let points = [
            (("", "before root"), 0x38),
            (("/", "before properties"), 0x40),
            (("/", "after properties"), 0x50),
            (("/a", "before properties"), 0x58),
            (("/a", "between properties"), 0x68),
            (("/a", "after properties"), 0x78),
            (("/a", "between children"), 0x84),
            (("/a", "after children"), 0x90),
            (("/", "between children"), 0x94),
            (("/", "after children"), 0xa0),
            (("", "after root"), 0xa4),
        ];
        // Insert from the back so that earlier offsets stay valid.
        for (at, offset) in points.into_iter().rev() {
            if nops.contains(&at) {
                insert_nop(&mut blob, offset);
            }
        }
        blob
    }

    /// Walks every node and property with `fdt` the way `discover` does.
    fn walk_with_fdt(blob: &[u8]) -> usize {
        fn visit(node: fdt::node::FdtNode<'_, '_>) -> usize {
            node.properties().count() + node.children().map(visit).sum::<usize>() + 1
        }
        let fdt = fdt::Fdt::new(blob).unwrap();
        visit(fdt.find_node("/").unwrap())
    }

    #[test]
    fn nops_are_accepted_where_the_parser_skips_them() {
        let plain = walk_with_fdt(&with_nops(&[]));
        assert_eq!(plain, 5 + 3);
        for at in [
            ("", "before root"),
            ("/", "before properties"),
            ("/", "after properties"),
            ("/", "between children"),
            ("/", "after children"),
            ("/a", "after children"),
            ("", "after root"),
        ] {
            let blob = with_nops(&[at]);
            assert_eq!(check(&blob), Ok(()), "{at:?}");
            // Nothing is lost, nothing panics.
            assert_eq!(walk_with_fdt(&blob), plain, "{at:?}");
        }
    }

    #[test]
    fn nops_elsewhere_are_rejected_as_fdt_panics_on_them() {
        for (at, offset, message) in [
            (
                ("/a", "before properties"),
                0x5c,
                "FDT_PROP after an FDT_NOP",
            ),
            (
                ("/a", "between properties"),
                0x6c,
                "FDT_PROP after an FDT_NOP",
            ),
            (
                ("/a", "after properties"),
                0x7c,
                "FDT_BEGIN_NODE after an FDT_NOP",
            ),
            (
                ("/a", "between children"),
                0x88,
                "FDT_BEGIN_NODE after an FDT_NOP",
            ),
        ] {
            let blob = with_nops(&[at]);
            assert_eq!(
                check(&blob).unwrap_err(),
                std::format!(
                    "dtb: structure block offset {offset:#x} (in /a): {message} in the same node \
                     (unsupported: FDT_NOP is only accepted before a node's FDT_END_NODE and \
                     before or between the root's children, and properties come before child \
                     nodes)"
                ),
                "{at:?}"
            );
            // Why: `fdt` 0.1.5 panics skipping `/a` (or, between properties, misses children).
            let walked = catch_unwind(AssertUnwindSafe(|| walk_with_fdt(&blob)));
            assert!(
                !matches!(walked, Ok(8)),
                "{at:?}: fdt coped; the check could allow this"
            );
        }
        // `/late` after the child `/a`: written the other way round, then the property's 16
        // bytes (0x40..0x50) moved after the node's 12 (0x50..0x5c).
        let mut writer = FdtWriter::new();
        writer.begin("").cells("late", &[1]).begin("a").end().end();
        let mut blob = writer.finish();
        blob[0x40..0x5c].rotate_left(16);
        let message = check(&blob).unwrap_err();
        assert!(
            message.ends_with(
                "(in /): FDT_PROP after a child node in the same node (unsupported: \
                 FDT_NOP is only accepted before a node's FDT_END_NODE and before or between the \
                 root's children, and properties come before child nodes)"
            ),
            "{message}"
        );
    }

    #[test]
    fn nops_between_properties_are_stripped_as_linux_leaves_them() {
        // /chosen as Linux publishes it: rng-seed (12 + 8 bytes) overwritten with 5 NOPs
        // between two properties.
        let mut writer = FdtWriter::new();
        writer.begin("").cells("#address-cells", &[1]);
        writer
            .begin("chosen")
            .string("bootargs", "x")
            .cells("rng-seed", &[1, 2]);
        writer.string("stdout-path", "/pl011").end().end();
        let mut blob = writer.finish();
        // small_tree's layout: /chosen's bootargs ends at 0x6c; rng-seed is 0x6c..0x80.
        for nop in blob[0x6c..0x80].chunks_exact_mut(4) {
            nop.copy_from_slice(&FDT_NOP.to_be_bytes());
        }
        let message = check(&blob).unwrap_err();
        assert!(message.contains("FDT_PROP after an FDT_NOP"), "{message}");
        let length = blob.len();
        assert_eq!(strip_nops(&mut blob), 5);
        assert_eq!(blob.len(), length);
        assert_eq!(check(&blob), Ok(()));
        // Nothing else is lost: both remaining properties are read.
        let fdt = fdt::Fdt::new(&blob).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(chosen.property("bootargs").unwrap().as_str(), Some("x"));
        assert_eq!(
            chosen.property("stdout-path").unwrap().as_str(),
            Some("/pl011")
        );
        assert!(chosen.property("rng-seed").is_none());
        // A second pass finds nothing; a blob without NOPs is left as it is.
        assert_eq!(strip_nops(&mut blob), 0);
        let mut plain = small_tree();
        assert_eq!(strip_nops(&mut plain), 0);
        assert_eq!(plain, small_tree());
    }

    #[test]
    fn unwalkable_blobs_are_left_for_the_check_to_report() {
        for damage in [
            |blob: &mut Vec<u8>| set_word(blob, 0x5c, 7), // unknown token
            |blob: &mut Vec<u8>| set_word(blob, 0x60, 0x100), // value past the block
            |blob: &mut Vec<u8>| blob[0] = 0xde,          // magic
            |blob: &mut Vec<u8>| set_header(blob, SIZE_DT_STRUCT, 0x3c), // no FDT_END
        ] {
            let mut blob = small_tree();
            insert_nop(&mut blob, 0x5c);
            damage(&mut blob);
            let before = blob.clone();
            assert_eq!(strip_nops(&mut blob), 0);
            assert_eq!(blob, before);
        }
        assert_eq!(strip_nops(&mut []), 0);
    }
}
