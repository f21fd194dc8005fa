//! A tiny flattened-device-tree writer for host tests (DTB version 17, no memory reservations).

use std::string::String;
use std::vec::Vec;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Builds a DTB node by node: `begin`, properties, children, `end`, then `finish`.
#[derive(Default)]
pub struct FdtWriter {
    structure: Vec<u8>,
    strings: Vec<u8>,
    depth: usize,
}

impl FdtWriter {
    pub fn new() -> Self {
        Self::default()
    }

    fn word(&mut self, value: u32) {
        self.structure.extend_from_slice(&value.to_be_bytes());
    }

    fn pad(&mut self) {
        while self.structure.len() % 4 != 0 {
            self.structure.push(0);
        }
    }

    /// Opens a node; the root is `""`.
    pub fn begin(&mut self, name: &str) -> &mut Self {
        self.word(FDT_BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
        self.depth += 1;
        self
    }

    /// Closes the innermost open node.
    pub fn end(&mut self) -> &mut Self {
        self.word(FDT_END_NODE);
        self.depth -= 1;
        self
    }

    /// An `FDT_NOP` token (what libfdt's `fdt_nop_node`/`fdt_nop_property` leave behind).
    pub fn nop(&mut self) -> &mut Self {
        self.word(FDT_NOP);
        self
    }

    /// A property with raw bytes.
    pub fn property(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let name_offset =
            match self.strings.windows(name.len() + 1).position(|window| {
                window[..name.len()] == *name.as_bytes() && window[name.len()] == 0
            }) {
                Some(offset) => offset,
                None => {
                    let offset = self.strings.len();
                    self.strings.extend_from_slice(name.as_bytes());
                    self.strings.push(0);
                    offset
                }
            };
        self.word(FDT_PROP);
        self.word(value.len() as u32);
        self.word(name_offset as u32);
        self.structure.extend_from_slice(value);
        self.pad();
        self
    }

    /// A property of big-endian cells.
    pub fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
        let bytes: Vec<u8> = cells.iter().flat_map(|cell| cell.to_be_bytes()).collect();
        self.property(name, &bytes)
    }

    /// A string-list property.
    pub fn strings(&mut self, name: &str, values: &[&str]) -> &mut Self {
        let mut bytes = Vec::new();
        for value in values {
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(0);
        }
        self.property(name, &bytes)
    }

    /// A string property.
    pub fn string(&mut self, name: &str, value: &str) -> &mut Self {
        self.strings(name, &[value])
    }

    /// The finished blob.
    pub fn finish(&mut self) -> Vec<u8> {
        assert_eq!(self.depth, 0, "unclosed node");
        self.word(FDT_END);
        let header_size = 40;
        let reservations_offset = header_size;
        let reservations_size = 16; // one terminating (0, 0) entry
        let structure_offset = reservations_offset + reservations_size;
        let strings_offset = structure_offset + self.structure.len();
        let total = strings_offset + self.strings.len();
        let mut blob = Vec::with_capacity(total);
        for word in [
            0xd00d_feed,
            total as u32,
            structure_offset as u32,
            strings_offset as u32,
            reservations_offset as u32,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ] {
            blob.extend_from_slice(&u32::to_be_bytes(word));
        }
        blob.extend_from_slice(&[0; 16]);
        blob.extend_from_slice(&self.structure);
        blob.extend_from_slice(&self.strings);
        blob
    }
}

/// The path of a test fixture under `src/testdata`.
pub fn fixture(name: &str) -> String {
    std::format!("{}/src/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}
