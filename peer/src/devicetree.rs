//! Finds the shared region in the device tree Linux booted with, read as a blob.
//!
//! Linux exposes the flattened device tree it was given (by Xen, for dom0) at
//! [`SYS_FIRMWARE_FDT`]; this module reads that blob and interprets it with
//! `sramlink-devicetree`, the crate the guest uses on the blob in its `x0`: the same checks
//! before anything walks it, the same `reg` decoding with the parent's cells, the same
//! translation through every ancestor's `ranges`, the same region selection
//! (`/chosen/sramlink,region` among several enabled `mmio-sram` nodes). So both sides find
//! the region at the same address. Two things matter to the peer:
//!
//! - nodes whose `compatible` list contains `"mmio-sram"`: the region the guest also sees
//!   (disabled ones too, to name them when nothing else is left);
//! - the entries under `/reserved-memory`: ranges carved out of RAM, where the region may also
//!   be described (e.g. with `no-map`).
//!
//! A `--base/--size` range must equal an enabled `mmio-sram` node's `reg`; only a tree without
//! any enabled `mmio-sram` node lets it equal a `/reserved-memory` entry instead
//! ([`DeviceTreeRegions::check_range`]).
//!
//! `/proc/device-tree` (the live tree as files) is not read: every node and property the peer
//! needs is in the blob, whose nodes the kernel only ever adds to at run time through
//! overlays, and a region added that way would be one Xen never mapped into the guest. The
//! one case the blob cannot serve is a kernel that does not publish it: without sysfs, or
//! when the blob changed after the kernel checked it at boot (it then logs "not creating
//! '/sys/firmware/fdt': CRC check failed"). There `dtc -I fs -O dtb -o fdt.dtb
//! /proc/device-tree` makes the blob from the live tree, and `--device-tree fdt.dtb` reads it
//! (the error message says so), rather than this program keeping a second reader.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use sramlink_devicetree::{
    DeviceTree, DtError, MAX_REGION_CANDIDATES, MMIO_SRAM, RegionCandidate, check_dtb_at,
    strip_nops,
};

pub use sramlink_devicetree::PhysRange;

use crate::error::PeerError;

/// Where Linux exposes the device tree blob it booted with (root only, mode 0400).
pub const SYS_FIRMWARE_FDT: &str = "/sys/firmware/fdt";

/// One `reg` entry of a node, with the node's path (`/sram@7f000000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRange {
    /// Path of the node relative to the tree root, starting with `/`.
    pub path: String,
    /// The decoded `reg` entry, translated to a CPU physical address.
    pub range: PhysRange,
    /// The node and its ancestors have `status` absent, `"okay"` or `"ok"` (Xen writes
    /// `"disabled"` into the nodes it keeps from dom0, e.g. with `xen,passthrough`).
    pub enabled: bool,
}

impl fmt::Display for NodeRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disabled = if self.enabled { "" } else { ", disabled" };
        write!(
            formatter,
            "{} ({}{disabled})",
            self.range.base_size(),
            self.path
        )
    }
}

/// What the peer needs to know from the device tree.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTreeRegions {
    /// Every `mmio-sram` node: the enabled ones in tree order, then the disabled ones.
    pub sram: Vec<NodeRange>,
    /// Every `reg` entry of every enabled child of `/reserved-memory`.
    pub reserved: Vec<NodeRange>,
    /// The region as the guest would select it from the same tree.
    region: Result<NodeRange, DtError>,
}

impl DeviceTreeRegions {
    /// Reads the blob at `path` (normally [`SYS_FIRMWARE_FDT`]).
    pub fn scan(path: &Path) -> Result<Self, PeerError> {
        let blob = match fs::read(path) {
            Ok(blob) => blob,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(PeerError::region(format!(
                    "no device tree at {}: pass --device-tree FILE naming a device-tree blob \
                     (a kernel that does not publish /sys/firmware/fdt still has \
                     /proc/device-tree: `dtc -I fs -O dtb -o fdt.dtb /proc/device-tree` makes \
                     one), or map a file with --file PATH --offset N --size N",
                    path.display()
                )));
            }
            Err(error) => return Err(read_error(path, &error)),
        };
        Self::from_blob(blob).map_err(|error| {
            PeerError::region(format!("device tree {}: {}", path.display(), error.message))
        })
    }

    /// Interprets a device tree blob.
    pub fn from_blob(mut blob: Vec<u8>) -> Result<Self, PeerError> {
        // Linux overwrites /chosen/rng-seed (and kaslr-seed) with FDT_NOPs in the blob it
        // publishes; they mean nothing, and the parser mishandles them between properties.
        strip_nops(&mut blob);
        // The blob's address in this process means nothing: offsets are from its start.
        let blob = check_dtb_at(&blob, 0).map_err(dt_error)?;
        let tree = DeviceTree::read_checked(blob).map_err(dt_error)?;
        // RAM nodes are the guest's business; a reserved-memory entry or a depth the walk
        // cannot follow would leave this list incomplete.
        if let Some(problem) = &tree.problem_outside_memory {
            return Err(dt_error(problem.clone()));
        }
        // Every node must be listed for `check_range` to be right.
        if tree.region_count > tree.regions.len()
            || tree.disabled_region_count > tree.disabled_regions.len()
        {
            return Err(PeerError::region(format!(
                "the device tree has {} enabled and {} disabled \"{MMIO_SRAM}\" nodes; at most \
                 {MAX_REGION_CANDIDATES} of each are read",
                tree.region_count, tree.disabled_region_count
            )));
        }
        let node = |candidate: &RegionCandidate, enabled| {
            candidate
                .node()
                .map(|node| NodeRange {
                    path: node.path.to_string(),
                    range: node.range,
                    enabled,
                })
                .map_err(dt_error)
        };
        let enabled = tree.regions.iter().map(|candidate| node(candidate, true));
        let disabled = tree
            .disabled_regions
            .iter()
            .map(|candidate| node(candidate, false));
        // A region node whose reg cannot be used is an error even when another one would do:
        // the tree is not what the configuration says.
        let sram = enabled.chain(disabled).collect::<Result<Vec<_>, _>>()?;
        let reserved = tree
            .reserved
            .iter()
            .map(|entry| NodeRange {
                path: entry.path.to_string(),
                range: entry.range,
                enabled: true,
            })
            .collect();
        let region = tree.region().map(|node| NodeRange {
            path: node.path.to_string(),
            range: node.range,
            enabled: true,
        });
        Ok(Self {
            sram,
            reserved,
            region,
        })
    }

    /// The `mmio-sram` range to use when neither `--file` nor `--base` was given: the one the
    /// guest selects. Disabled nodes are skipped (and named in the error when nothing else is
    /// left).
    pub fn discover(&self) -> Result<NodeRange, PeerError> {
        match &self.region {
            Ok(node) => Ok(node.clone()),
            Err(DtError::NoRegion) if !self.sram.is_empty() => Err(PeerError::region(format!(
                "every \"{MMIO_SRAM}\" node in the device tree is disabled ({}): the range was \
                 not given to this domain (xen,passthrough?); --base ADDR --size N is accepted only \
                 for a range equal to a /reserved-memory entry (reserved-memory: {})",
                list(&self.sram),
                list(&self.reserved)
            ))),
            Err(DtError::NoRegion) => Err(PeerError::region(format!(
                "no node with compatible \"{MMIO_SRAM}\" in the device tree; pass --base ADDR --size N \
                 equal to a /reserved-memory entry (reserved-memory ranges: {})",
                list(&self.reserved)
            ))),
            Err(DtError::AmbiguousRegion { count, .. }) => Err(PeerError::region(format!(
                "{count} \"{MMIO_SRAM}\" ranges in the device tree, cannot choose: {}; pass --base ADDR \
                 --size N equal to one of them, or name one with /chosen/sramlink,region",
                list(&self.enabled_sram())
            ))),
            Err(error) => Err(dt_error(error.clone())),
        }
    }

    /// Reads the blob at `path` and checks `range` against it ([`Self::check_range`]). A
    /// missing tree is an error, not a pass: without it nothing says the range is the shared
    /// region rather than random RAM.
    pub fn check_range_at(path: &Path, range: &PhysRange) -> Result<RangeMatch, PeerError> {
        if !path.exists() {
            return Err(PeerError::region(format!(
                "cannot check --base/--size {}: no device tree at {} to compare it with; \
                 pass --device-tree FILE naming a device-tree blob that describes the region \
                 (or map a file with --file PATH --offset N --size N)",
                range.base_size(),
                path.display()
            )));
        }
        Self::scan(path)?.check_range(range)
    }

    /// Accepts `range` only if it **equals** the `reg` of an enabled `mmio-sram` node, so that
    /// a wrong address never maps random memory. Only when the tree has no enabled `mmio-sram`
    /// node at all may it instead equal a `/reserved-memory` entry (the returned
    /// [`RangeMatch::reserved_fallback`] says so). Sub-ranges are refused either way; every
    /// error lists the ranges that do exist.
    pub fn check_range(&self, range: &PhysRange) -> Result<RangeMatch, PeerError> {
        let enabled = self.enabled_sram();
        if !enabled.is_empty() {
            if let Some(node) = enabled.iter().find(|node| node.range == *range) {
                return Ok(RangeMatch {
                    node: node.clone(),
                    reserved_fallback: false,
                });
            }
            let inside = enabled
                .iter()
                .find(|node| node.range.contains_range(range))
                .map(|node| format!("; it lies inside {node} but must equal it"))
                .unwrap_or_default();
            return Err(PeerError::region(format!(
                "refusing to map {}: --base/--size must equal the reg of an enabled \
                 \"{MMIO_SRAM}\" node of the device tree{inside} (mmio-sram: {}; /reserved-memory \
                 entries are not accepted while an enabled \"{MMIO_SRAM}\" node exists: {})",
                range.base_size(),
                list(&self.sram),
                list(&self.reserved)
            )));
        }
        if let Some(node) = self.reserved.iter().find(|node| node.range == *range) {
            return Ok(RangeMatch {
                node: node.clone(),
                reserved_fallback: true,
            });
        }
        let inside = self
            .reserved
            .iter()
            .find(|node| node.range.contains_range(range))
            .map(|node| format!("; it lies inside {node} but must equal it"))
            .unwrap_or_default();
        Err(PeerError::region(format!(
            "refusing to map {}: the device tree has no enabled \"{MMIO_SRAM}\" node \
             (mmio-sram: {}), so --base/--size must equal a /reserved-memory entry instead \
             (fallback){inside} (reserved-memory: {})",
            range.base_size(),
            list(&self.sram),
            list(&self.reserved)
        )))
    }

    fn enabled_sram(&self) -> Vec<NodeRange> {
        self.sram
            .iter()
            .filter(|node| node.enabled)
            .cloned()
            .collect()
    }
}

/// The device-tree entry a `--base/--size` range was accepted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeMatch {
    /// The entry whose `reg` equals the range.
    pub node: NodeRange,
    /// The entry is a `/reserved-memory` child, accepted only because the tree has no
    /// enabled `mmio-sram` node.
    pub reserved_fallback: bool,
}

impl fmt::Display for RangeMatch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reserved_fallback {
            write!(
                formatter,
                "{} accepted as the /reserved-memory entry {} (fallback: the device tree has \
                 no enabled \"{MMIO_SRAM}\" node)",
                self.node.range.base_size(),
                self.node.path
            )
        } else {
            write!(
                formatter,
                "{} accepted as the \"{MMIO_SRAM}\" node {}",
                self.node.range.base_size(),
                self.node.path
            )
        }
    }
}

fn list(nodes: &[NodeRange]) -> String {
    if nodes.is_empty() {
        return "none".to_string();
    }
    nodes
        .iter()
        .map(NodeRange::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_error(path: &Path, error: &io::Error) -> PeerError {
    let hint = if error.kind() == io::ErrorKind::IsADirectory {
        " (--device-tree takes a blob such as /sys/firmware/fdt, not a /proc/device-tree \
         directory)"
    } else if error.kind() == io::ErrorKind::PermissionDenied {
        " (Linux lets only root read /sys/firmware/fdt)"
    } else {
        ""
    };
    PeerError::region(format!(
        "cannot read device tree at {}: {error}{hint}",
        path.display()
    ))
}

fn dt_error(error: DtError) -> PeerError {
    PeerError::region(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// A fake device tree, written as a blob (with `vm-fdt`) into a temporary file each time
    /// it is scanned; nodes are created with their ancestors, children written in name order.
    struct FakeTree {
        dir: tempfile::TempDir,
        /// Node path ("" for the root) to its properties.
        nodes: std::cell::RefCell<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
    }

    impl FakeTree {
        /// A tree whose root sets #address-cells = <2>, #size-cells = <2>.
        fn new() -> Self {
            let tree = Self::empty();
            tree.cells("", 2, 2);
            tree
        }

        /// A tree whose root sets no cell counts (the defaults, 2 and 1, apply).
        fn empty() -> Self {
            let tree = Self {
                dir: tempfile::tempdir().expect("tempdir"),
                nodes: Default::default(),
            };
            tree.node("");
            tree
        }

        fn node(&self, path: &str) -> String {
            let path = path.trim_end_matches('/').to_string();
            let mut nodes = self.nodes.borrow_mut();
            let mut ancestor = String::new();
            nodes.entry(String::new()).or_default();
            for part in path.split('/').filter(|part| !part.is_empty()) {
                ancestor = format!("{ancestor}/{part}");
                nodes.entry(ancestor.clone()).or_default();
            }
            path
        }

        fn property(&self, node: &str, name: &str, value: &[u8]) {
            let node = self.node(node);
            self.nodes
                .borrow_mut()
                .get_mut(&node)
                .expect("node")
                .insert(name.to_string(), value.to_vec());
        }

        fn cells(&self, node: &str, address: u32, size: u32) {
            self.property(node, "#address-cells", &address.to_be_bytes());
            self.property(node, "#size-cells", &size.to_be_bytes());
        }

        fn reg(&self, node: &str, cells: &[u32]) {
            let bytes: Vec<u8> = cells.iter().flat_map(|cell| cell.to_be_bytes()).collect();
            self.property(node, "reg", &bytes);
        }

        fn write_node(&self, writer: &mut vm_fdt::FdtWriter, path: &str, name: &str) {
            let nodes = self.nodes.borrow();
            let handle = writer.begin_node(name).expect("node");
            for (property, value) in &nodes[path] {
                writer.property(property, value).expect("property");
            }
            let prefix = format!("{path}/");
            let children: Vec<&String> = nodes
                .keys()
                .filter(|child| {
                    child
                        .strip_prefix(&prefix)
                        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
                })
                .collect();
            for child in children {
                let name = &child[prefix.len()..];
                self.write_node(writer, child, name);
            }
            writer.end_node(handle).expect("end node");
        }

        /// The tree as a blob file.
        fn path(&self) -> PathBuf {
            let mut writer = vm_fdt::FdtWriter::new().expect("writer");
            self.write_node(&mut writer, "", "");
            let path = self.dir.path().join("fdt");
            fs::write(&path, writer.finish().expect("blob")).expect("write blob");
            path
        }

        fn scan(&self) -> Result<DeviceTreeRegions, PeerError> {
            DeviceTreeRegions::scan(&self.path())
        }
    }

    const REGION: PhysRange = PhysRange::from_base_size(0x7f00_0000, 0x100_0000).unwrap();

    /// The bare-QEMU layout: an `mmio-sram` node plus a `no-map` reserved-memory entry.
    fn qemu_tree() -> FakeTree {
        let tree = FakeTree::new();
        tree.property("/sram@7f000000", "compatible", b"mmio-sram\0");
        tree.reg("/sram@7f000000", &[0, 0x7f00_0000, 0, 0x100_0000]);
        tree.cells("/reserved-memory", 2, 2);
        tree.property("/reserved-memory", "ranges", b"");
        tree.reg(
            "/reserved-memory/shm@7f000000",
            &[0, 0x7f00_0000, 0, 0x100_0000],
        );
        tree.property("/reserved-memory/shm@7f000000", "no-map", b"");
        tree.property(
            "/pl011@9000000",
            "compatible",
            b"arm,pl011\0arm,primecell\0",
        );
        tree.reg("/pl011@9000000", &[0, 0x900_0000, 0, 0x1000]);
        tree
    }

    #[test]
    fn finds_the_region_and_reserved_memory() {
        let regions = qemu_tree().scan().expect("scan");
        let found = regions.discover().expect("discover");
        assert_eq!(found.path, "/sram@7f000000");
        assert_eq!(found.range, REGION);
        assert_eq!(regions.reserved.len(), 1);
        assert_eq!(regions.reserved[0].path, "/reserved-memory/shm@7f000000");
        assert_eq!(regions.reserved[0].range, REGION);
    }

    #[test]
    fn uses_the_parent_cells_of_a_nested_node() {
        let tree = FakeTree::new();
        tree.property("/passthrough", "compatible", b"simple-bus\0");
        tree.cells("/passthrough", 1, 1);
        tree.property(
            "/passthrough/sram@7f000000",
            "compatible",
            b"foo,bar\0mmio-sram\0",
        );
        tree.reg("/passthrough/sram@7f000000", &[0x7f00_0000, 0x100_0000]);
        let found = tree.scan().expect("scan").discover().expect("discover");
        assert_eq!(found.path, "/passthrough/sram@7f000000");
        assert_eq!(found.range, REGION);
    }

    #[test]
    fn default_cells_are_two_and_one() {
        let tree = FakeTree::empty();
        tree.property("/sram@7f000000", "compatible", b"mmio-sram\0");
        tree.reg("/sram@7f000000", &[0, 0x7f00_0000, 0x100_0000]);
        let regions = tree.scan().expect("scan");
        assert_eq!(regions.discover().expect("discover").range, REGION);
    }

    #[test]
    fn reg_that_does_not_fit_the_cells_is_named_precisely() {
        // The seed's domU snippet: #size-cells = <1> with a four-cell reg.
        let tree = FakeTree::new();
        tree.cells("/passthrough", 2, 1);
        tree.property("/passthrough/sram@7f000000", "compatible", b"mmio-sram\0");
        tree.reg(
            "/passthrough/sram@7f000000",
            &[0, 0x7f00_0000, 0, 0x100_0000],
        );
        let error = tree.scan().expect_err("four cells with 2+1 must fail");
        assert!(
            error.message.contains("/passthrough/sram@7f000000"),
            "{error}"
        );
        assert!(error.message.contains("16 bytes (4 cells)"), "{error}");
        // The parent's cell counts, as the shared crate words them for both sides.
        assert!(
            error
                .message
                .contains("#address-cells = <2>, #size-cells = <1>"),
            "{error}"
        );
    }

    #[test]
    fn no_node_is_an_error_listing_reserved_memory() {
        let tree = FakeTree::new();
        tree.cells("/reserved-memory", 2, 2);
        tree.reg(
            "/reserved-memory/shm@7f000000",
            &[0, 0x7f00_0000, 0, 0x100_0000],
        );
        let error = tree.scan().expect("scan").discover().expect_err("no node");
        assert!(error.message.contains("no node with compatible"), "{error}");
        assert!(error.message.contains("0x7f000000+0x1000000"), "{error}");
    }

    #[test]
    fn several_nodes_are_an_error_listing_them() {
        let tree = qemu_tree();
        tree.property("/sram@50000000", "compatible", b"mmio-sram\0");
        tree.reg("/sram@50000000", &[0, 0x5000_0000, 0, 0x1000]);
        let error = tree
            .scan()
            .expect("scan")
            .discover()
            .expect_err("two nodes");
        assert!(error.message.contains("/sram@50000000"), "{error}");
        assert!(error.message.contains("/sram@7f000000"), "{error}");
    }

    #[test]
    fn disabled_nodes_are_skipped() {
        let tree = qemu_tree();
        tree.property("/sram@50000000", "compatible", b"mmio-sram\0");
        tree.property("/sram@50000000", "status", b"disabled\0");
        tree.reg("/sram@50000000", &[0, 0x5000_0000, 0, 0x1000]);
        tree.property("/sram@7f000000", "status", b"okay\0");
        let regions = tree.scan().expect("scan");
        assert_eq!(regions.sram.len(), 2);
        assert_eq!(regions.discover().expect("one enabled").range, REGION);
        tree.property("/sram@7f000000", "status", b"disabled\0");
        let error = tree
            .scan()
            .expect("scan")
            .discover()
            .expect_err("all disabled");
        assert!(error.message.contains("disabled"), "{error}");
        assert!(
            error.message.contains("/sram@7f000000, disabled"),
            "{error}"
        );
    }

    #[test]
    fn missing_tree_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = DeviceTreeRegions::scan(&dir.path().join("absent")).expect_err("absent");
        assert!(error.message.contains("no device tree"), "{error}");
    }

    /// Only a `/reserved-memory` entry, no `mmio-sram` node (the fallback case).
    fn reserved_only_tree() -> FakeTree {
        let tree = FakeTree::new();
        tree.cells("/reserved-memory", 2, 2);
        tree.reg(
            "/reserved-memory/shm@7f000000",
            &[0, 0x7f00_0000, 0, 0x100_0000],
        );
        tree
    }

    const SUBRANGE: PhysRange = PhysRange::from_base_size(0x7f80_0000, 0x1000).unwrap();

    #[test]
    fn check_range_accepts_the_exact_node() {
        let accepted = qemu_tree().scan().expect("scan").check_range(&REGION);
        let accepted = accepted.expect("exact mmio-sram node");
        assert_eq!(accepted.node.path, "/sram@7f000000");
        assert!(!accepted.reserved_fallback);
        assert!(!accepted.to_string().contains("fallback"), "{accepted}");
    }

    #[test]
    fn check_range_refuses_a_subrange_of_the_node() {
        // No reserved-memory at all, so only the mmio-sram rule can apply.
        let tree = FakeTree::new();
        tree.property("/sram@7f000000", "compatible", b"mmio-sram\0");
        tree.reg("/sram@7f000000", &[0, 0x7f00_0000, 0, 0x100_0000]);
        let error = tree
            .scan()
            .expect("scan")
            .check_range(&SUBRANGE)
            .expect_err("sub-range of mmio-sram");
        assert!(
            error.message.contains("refusing to map 0x7f800000+0x1000"),
            "{error}"
        );
        assert!(
            error
                .message
                .contains("inside 0x7f000000+0x1000000 (/sram@7f000000) but must equal it"),
            "{error}"
        );
    }

    #[test]
    fn check_range_refuses_a_subrange_of_reserved_memory() {
        // With an mmio-sram node (the reserved entry is not even eligible) ...
        let error = qemu_tree()
            .scan()
            .expect("scan")
            .check_range(&SUBRANGE)
            .expect_err("sub-range with an mmio-sram node");
        assert!(
            error.message.contains("/reserved-memory/shm@7f000000"),
            "{error}"
        );
        // ... and without one (the fallback applies, but only to the exact entry).
        let error = reserved_only_tree()
            .scan()
            .expect("scan")
            .check_range(&SUBRANGE)
            .expect_err("sub-range of reserved-memory");
        assert!(error.message.contains("fallback"), "{error}");
        assert!(
            error.message.contains(
                "inside 0x7f000000+0x1000000 (/reserved-memory/shm@7f000000) but must equal it"
            ),
            "{error}"
        );
    }

    #[test]
    fn check_range_accepts_exact_reserved_memory_only_without_an_enabled_node() {
        let accepted = reserved_only_tree()
            .scan()
            .expect("scan")
            .check_range(&REGION)
            .expect("exact reserved-memory entry, no mmio-sram node");
        assert_eq!(accepted.node.path, "/reserved-memory/shm@7f000000");
        assert!(accepted.reserved_fallback);
        assert!(accepted.to_string().contains("fallback"), "{accepted}");

        // An enabled mmio-sram node elsewhere takes the fallback away.
        let tree = reserved_only_tree();
        tree.property("/sram@50000000", "compatible", b"mmio-sram\0");
        tree.reg("/sram@50000000", &[0, 0x5000_0000, 0, 0x1000]);
        let error = tree
            .scan()
            .expect("scan")
            .check_range(&REGION)
            .expect_err("reserved-memory while an mmio-sram node is enabled");
        assert!(
            error.message.contains("0x50000000+0x1000 (/sram@50000000)"),
            "{error}"
        );
        assert!(
            error
                .message
                .contains("0x7f000000+0x1000000 (/reserved-memory/shm@7f000000)"),
            "{error}"
        );

        // A disabled one does not.
        tree.property("/sram@50000000", "status", b"disabled\0");
        let accepted = tree
            .scan()
            .expect("scan")
            .check_range(&REGION)
            .expect("only disabled mmio-sram nodes");
        assert!(accepted.reserved_fallback);
    }

    #[test]
    fn check_range_refuses_a_disabled_node_without_reserved_memory() {
        let tree = FakeTree::new();
        tree.property("/sram@7f000000", "compatible", b"mmio-sram\0");
        tree.property("/sram@7f000000", "status", b"disabled\0");
        tree.reg("/sram@7f000000", &[0, 0x7f00_0000, 0, 0x100_0000]);
        let error = tree
            .scan()
            .expect("scan")
            .check_range(&REGION)
            .expect_err("disabled node");
        assert!(
            error.message.contains("/sram@7f000000, disabled"),
            "{error}"
        );
        assert!(error.message.contains("reserved-memory: none"), "{error}");
    }

    #[test]
    fn check_range_refuses_other_memory_and_names_what_exists() {
        let regions = qemu_tree().scan().expect("scan");
        let wrong = PhysRange::from_base_size(0x4000_0000, 0x100_0000).unwrap();
        let error = regions.check_range(&wrong).expect_err("random RAM");
        assert!(
            error
                .message
                .contains("refusing to map 0x40000000+0x1000000"),
            "{error}"
        );
        assert!(
            error
                .message
                .contains("0x7f000000+0x1000000 (/sram@7f000000)"),
            "{error}"
        );
        assert!(
            error
                .message
                .contains("0x7f000000+0x1000000 (/reserved-memory/shm@7f000000)"),
            "{error}"
        );
        let straddling = PhysRange::from_base_size(0x7ff0_0000, 0x20_0000).unwrap();
        assert!(regions.check_range(&straddling).is_err());
        let larger = PhysRange::from_base_size(0x7f00_0000, 0x200_0000).unwrap();
        assert!(regions.check_range(&larger).is_err());
    }

    #[test]
    fn check_range_without_a_tree_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let absent = dir.path().join("absent");
        let error = DeviceTreeRegions::check_range_at(&absent, &REGION).expect_err("no tree");
        assert_eq!(error.kind, crate::error::ErrorKind::Region);
        assert!(error.message.contains("cannot check"), "{error}");
        assert!(
            error.message.contains(&absent.display().to_string()),
            "{error}"
        );
        assert!(error.message.contains("--device-tree FILE"), "{error}");
        // The same tree, once it exists, is read and the range accepted.
        let tree = qemu_tree();
        let accepted =
            DeviceTreeRegions::check_range_at(&tree.path(), &REGION).expect("tree exists");
        assert_eq!(accepted.node.path, "/sram@7f000000");
    }

    #[test]
    fn a_node_without_reg_is_an_error() {
        let tree = FakeTree::new();
        tree.property("/sram", "compatible", b"mmio-sram\0");
        let error = tree.scan().expect_err("no reg");
        assert!(error.message.contains("has no reg"), "{error}");
    }

    #[test]
    fn a_directory_or_a_damaged_blob_is_a_clear_error() {
        // The old interface took /proc/device-tree; say what is expected now.
        let tree = qemu_tree();
        let error = DeviceTreeRegions::scan(tree.dir.path()).expect_err("a directory");
        assert!(error.message.contains("takes a blob"), "{error}");
        // Damaged: the same checks as the guest's, with the offset from the blob's start.
        let mut blob = fs::read(tree.path()).expect("blob");
        blob[0] = 0xde;
        let path = tree.dir.path().join("damaged");
        fs::write(&path, &blob).expect("write");
        let error = DeviceTreeRegions::scan(&path).expect_err("bad magic");
        assert!(
            error
                .message
                .ends_with("damaged: no device tree at 0x0: magic 0xde0dfeed, expected 0xd00dfeed"),
            "{error}"
        );
    }

    #[test]
    fn chosen_sramlink_region_picks_the_guests_region() {
        let tree = qemu_tree();
        tree.property("/sram@50000000", "compatible", b"mmio-sram\0");
        tree.reg("/sram@50000000", &[0, 0x5000_0000, 0, 0x1000]);
        tree.property("/chosen", "sramlink,region", b"/sram@7f000000\0");
        let found = tree.scan().expect("scan").discover().expect("chosen");
        assert_eq!(found.path, "/sram@7f000000");
        assert_eq!(found.range, REGION);
    }

    #[test]
    fn more_region_nodes_than_are_read_is_an_error_not_a_partial_list() {
        let tree = qemu_tree();
        for index in 0..MAX_REGION_CANDIDATES as u32 {
            let node = format!("/sram@{:x}", 0x5000_0000 + index * 0x1000);
            tree.property(&node, "compatible", b"mmio-sram\0");
            tree.reg(&node, &[0, 0x5000_0000 + index * 0x1000, 0, 0x1000]);
        }
        let error = tree.scan().expect_err("five enabled nodes");
        assert!(
            error.message.contains("5 enabled and 0 disabled"),
            "{error}"
        );
    }

    #[test]
    fn a_property_linux_turned_into_nops_does_not_hide_the_region() {
        // What dom0's /sys/firmware/fdt held under Xen: /chosen/rng-seed overwritten with
        // FDT_NOPs between two properties, which the layout check alone refuses.
        let tree = qemu_tree();
        tree.property("/chosen", "bootargs", b"console=hvc0\0");
        tree.property("/chosen", "rng-seed", &[7; 8]);
        tree.property("/chosen", "stdout-path", b"/pl011@9000000\0");
        let mut blob = fs::read(tree.path()).expect("blob");
        // Properties are written in name order: bootargs, rng-seed, stdout-path.
        let seed = blob
            .windows(8)
            .position(|window| window == [7; 8])
            .expect("rng-seed value")
            - 12;
        for word in blob[seed..seed + 20].chunks_exact_mut(4) {
            word.copy_from_slice(&4u32.to_be_bytes());
        }
        let path = tree.dir.path().join("nopped");
        fs::write(&path, &blob).expect("write");
        let regions = DeviceTreeRegions::scan(&path).expect("NOPs are skipped");
        assert_eq!(regions.discover().expect("region").range, REGION);
    }
}
