//! Test blobs: a chained front end to `vm-fdt`'s writer, splices for layouts it will not write.
//!
//! `vm-fdt` writes only well-formed trees (its layout: header, reservation map at 0x28 with its
//! terminator, structure block at 0x38, then strings, names interned in first-use order). The
//! layout checks must also see what it refuses to write — `FDT_NOP` tokens, a property after a
//! child node, more than 64 levels — so those are spliced into its output here, fixing the
//! header's offsets and sizes.

use std::string::String;
use std::vec::Vec;

use vm_fdt::FdtWriterNode;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_NOP: u32 = 4;

/// Builds a DTB node by node: `begin`, properties, children, `end`, then `finish`.
pub struct FdtWriter {
    writer: vm_fdt::FdtWriter,
    open: Vec<FdtWriterNode>,
}

impl FdtWriter {
    pub fn new() -> Self {
        FdtWriter {
            writer: vm_fdt::FdtWriter::new().expect("vm-fdt writer"),
            open: Vec::new(),
        }
    }

    /// Opens a node; the root is `""`.
    pub fn begin(&mut self, name: &str) -> &mut Self {
        let node = self.writer.begin_node(name).expect("node name");
        self.open.push(node);
        self
    }

    /// Closes the innermost open node.
    pub fn end(&mut self) -> &mut Self {
        let node = self.open.pop().expect("a node to close");
        self.writer.end_node(node).expect("end node");
        self
    }

    /// A property with raw bytes.
    pub fn property(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.writer.property(name, value).expect("property");
        self
    }

    /// A property of big-endian cells.
    pub fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
        self.writer
            .property_array_u32(name, cells)
            .expect("property");
        self
    }

    /// A string-list property.
    pub fn strings(&mut self, name: &str, values: &[&str]) -> &mut Self {
        let values = values.iter().map(|value| String::from(*value)).collect();
        self.writer
            .property_string_list(name, values)
            .expect("property");
        self
    }

    /// A string property.
    pub fn string(&mut self, name: &str, value: &str) -> &mut Self {
        self.writer.property_string(name, value).expect("property");
        self
    }

    /// The finished blob.
    pub fn finish(&mut self) -> Vec<u8> {
        assert!(self.open.is_empty(), "unclosed node");
        let writer = std::mem::replace(
            &mut self.writer,
            vm_fdt::FdtWriter::new().expect("vm-fdt writer"),
        );
        writer.finish().expect("finished blob")
    }
}

fn header_word(blob: &[u8], index: usize) -> u32 {
    u32::from_be_bytes(blob[index * 4..index * 4 + 4].try_into().unwrap())
}

fn set_header_word(blob: &mut [u8], index: usize, value: u32) {
    blob[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
}

/// Inserts `words` at byte `offset` of the structure block (an offset from the blob's start),
/// growing the block and moving the strings block after it.
pub fn insert_words(blob: &mut Vec<u8>, offset: usize, words: &[u32]) {
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_be_bytes()).collect();
    let grow = bytes.len() as u32;
    blob.splice(offset..offset, bytes);
    // totalsize, off_dt_strings, size_dt_struct.
    for index in [1, 3, 9] {
        let value = header_word(blob, index);
        set_header_word(blob, index, value + grow);
    }
}

/// Inserts one `FDT_NOP` at byte `offset`.
pub fn insert_nop(blob: &mut Vec<u8>, offset: usize) {
    insert_words(blob, offset, &[FDT_NOP]);
}

/// Inserts an empty child node `name` (at most 3 bytes) at byte `offset`.
pub fn insert_empty_node(blob: &mut Vec<u8>, offset: usize, name: &str) {
    assert!(name.len() < 4, "one name word");
    let mut name_word = [0u8; 4];
    name_word[..name.len()].copy_from_slice(name.as_bytes());
    insert_words(
        blob,
        offset,
        &[FDT_BEGIN_NODE, u32::from_be_bytes(name_word), FDT_END_NODE],
    );
}

/// The offset of the `FDT_BEGIN_NODE` token of the first node called `name`.
pub fn node_offset(blob: &[u8], name: &str) -> usize {
    let mut pattern = FDT_BEGIN_NODE.to_be_bytes().to_vec();
    pattern.extend_from_slice(name.as_bytes());
    pattern.push(0);
    let start = header_word(blob, 2) as usize;
    start
        + blob[start..]
            .windows(pattern.len())
            .position(|window| window == pattern)
            .expect("node in the structure block")
}

/// The path of a test fixture under `testdata/`.
pub fn fixture(name: &str) -> String {
    std::format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}
