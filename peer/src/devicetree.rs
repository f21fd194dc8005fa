//! Finds the shared region in a `/proc/device-tree`-style directory tree.
//!
//! Linux exposes the flattened device tree it booted with as directories (nodes) and files
//! (properties, raw big-endian bytes). This module reads that form, so the host tests build a
//! fake tree in a temporary directory. Two things matter to the peer:
//!
//! - nodes whose `compatible` list contains `"mmio-sram"`: the region the guest also sees
//!   (with several, `/chosen/sramlink,region = "/path"` picks one, as in the guest and the
//!   sramlink dom0 module);
//! - the entries under `/reserved-memory`: ranges carved out of RAM, where the region may also
//!   be described (e.g. with `no-map`).
//!
//! A `--base/--size` range must equal an enabled `mmio-sram` node's `reg`; only a tree without
//! any enabled `mmio-sram` node lets it equal a `/reserved-memory` entry instead
//! ([`DeviceTreeRegions::check_range`]).
//!
//! `reg` is decoded with the **parent** node's `#address-cells` / `#size-cells` (defaults 2
//! and 1 as in the devicetree specification); a `reg` whose length does not fit those cell
//! counts is reported precisely rather than guessed at.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use crate::error::PeerError;

/// Where the kernel exposes the device tree it booted with.
pub const PROC_DEVICE_TREE: &str = "/proc/device-tree";

/// The `compatible` string that marks the shared region.
pub const MMIO_SRAM: &str = "mmio-sram";

/// A physical address range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl PhysRange {
    /// One past the last byte (saturating at `u64::MAX`).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Whether `inner` lies entirely inside `self`.
    pub fn contains(&self, inner: &PhysRange) -> bool {
        inner.base >= self.base && inner.end() <= self.end()
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:#x}+{:#x}", self.base, self.size)
    }
}

/// One `reg` entry of a node, with the node's path (`/sram@7f000000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRange {
    /// Path of the node relative to the tree root, starting with `/`.
    pub path: String,
    /// The decoded `reg` entry.
    pub range: PhysRange,
    /// The node's `status` is absent, `"okay"` or `"ok"` (Xen writes `"disabled"` into the
    /// nodes it keeps from dom0, e.g. with `xen,passthrough`).
    pub enabled: bool,
}

impl fmt::Display for NodeRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disabled = if self.enabled { "" } else { ", disabled" };
        write!(formatter, "{} ({}{disabled})", self.range, self.path)
    }
}

/// What the peer needs to know from the device tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceTreeRegions {
    /// Every `reg` entry of every `mmio-sram` node, in tree-walk order.
    pub sram: Vec<NodeRange>,
    /// Every `reg` entry of every child of `/reserved-memory`.
    pub reserved: Vec<NodeRange>,
    /// `/chosen/sramlink,region`: the path of the node to use when there are several.
    pub chosen_region: Option<String>,
}

impl DeviceTreeRegions {
    /// Reads the tree rooted at `root` (normally [`PROC_DEVICE_TREE`]).
    pub fn scan(root: &Path) -> Result<Self, PeerError> {
        if !root.is_dir() {
            return Err(PeerError::region(format!(
                "no device tree at {}: pass --device-tree DIR naming one, or map a file with \
                 --file PATH --offset N --size N",
                root.display()
            )));
        }
        let mut regions = Self::default();
        let root_cells = CellCounts::of_node(root)?;
        walk(root, "", root_cells, &mut regions)?;
        if let Some(value) = read_property(&root.join("chosen").join("sramlink,region"))? {
            let path = value.split(|&byte| byte == 0).next().unwrap_or_default();
            regions.chosen_region = Some(String::from_utf8_lossy(path).into_owned());
        }
        let reserved_dir = root.join("reserved-memory");
        if reserved_dir.is_dir() {
            let cells = CellCounts::of_node(&reserved_dir)?;
            for child in sorted_child_nodes(&reserved_dir)? {
                let child_dir = reserved_dir.join(&child);
                let path = format!("/reserved-memory/{child}");
                // Dynamically allocated entries (`size` + `alloc-ranges`) have no `reg`.
                if let Some(reg) = read_property(&child_dir.join("reg"))? {
                    for range in decode_reg(&reg, cells, &path)? {
                        regions.reserved.push(NodeRange {
                            path: path.clone(),
                            range,
                            enabled: true,
                        });
                    }
                }
            }
        }
        Ok(regions)
    }

    /// The `mmio-sram` range to use when neither `--file` nor `--base` was given: the node
    /// `/chosen/sramlink,region` names, else the single enabled one. Disabled nodes are
    /// skipped (and named in the error when nothing else is left).
    pub fn discover(&self) -> Result<NodeRange, PeerError> {
        let enabled = self.enabled_sram();
        if let Some(wanted) = &self.chosen_region {
            return enabled
                .iter()
                .find(|node| node.path == *wanted)
                .cloned()
                .ok_or_else(|| {
                    PeerError::region(format!(
                        "/chosen/sramlink,region = \"{wanted}\" names no enabled \"{MMIO_SRAM}\" \
                         node (mmio-sram: {})",
                        list(&self.sram)
                    ))
                });
        }
        match enabled.as_slice() {
            [only] => Ok(only.clone()),
            [] if !self.sram.is_empty() => Err(PeerError::region(format!(
                "every \"{MMIO_SRAM}\" node in the device tree is disabled ({}): the range was \
                 not given to this domain (xen,passthrough?); --base ADDR --size N is accepted only \
                 for a range equal to a /reserved-memory entry (reserved-memory: {})",
                list(&self.sram),
                list(&self.reserved)
            ))),
            [] => Err(PeerError::region(format!(
                "no node with compatible \"{MMIO_SRAM}\" in the device tree; pass --base ADDR --size N \
                 equal to a /reserved-memory entry (reserved-memory ranges: {})",
                list(&self.reserved)
            ))),
            several => Err(PeerError::region(format!(
                "{} \"{MMIO_SRAM}\" ranges in the device tree, cannot choose: {}; pass --base ADDR \
                 --size N equal to one of them, or set /chosen/sramlink,region = \"/path\"",
                several.len(),
                list(several)
            ))),
        }
    }

    /// Reads the tree at `root` and checks `range` against it ([`Self::check_range`]). A
    /// missing tree is an error, not a pass: without it nothing says the range is the shared
    /// region rather than random RAM.
    pub fn check_range_at(root: &Path, range: &PhysRange) -> Result<RangeMatch, PeerError> {
        if !root.is_dir() {
            return Err(PeerError::region(format!(
                "cannot check --base/--size {range}: no device tree at {} to compare it with; \
                 pass --device-tree DIR naming a device-tree directory that describes the region \
                 (or map a file with --file PATH --offset N --size N)",
                root.display()
            )));
        }
        Self::scan(root)?.check_range(range)
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
                .find(|node| node.range.contains(range))
                .map(|node| format!("; it lies inside {node} but must equal it"))
                .unwrap_or_default();
            return Err(PeerError::region(format!(
                "refusing to map {range}: --base/--size must equal the reg of an enabled \
                 \"{MMIO_SRAM}\" node of the device tree{inside} (mmio-sram: {}; /reserved-memory \
                 entries are not accepted while an enabled \"{MMIO_SRAM}\" node exists: {})",
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
            .find(|node| node.range.contains(range))
            .map(|node| format!("; it lies inside {node} but must equal it"))
            .unwrap_or_default();
        Err(PeerError::region(format!(
            "refusing to map {range}: the device tree has no enabled \"{MMIO_SRAM}\" node \
             (mmio-sram: {}), so --base/--size must equal a /reserved-memory entry instead \
             (fallback){inside} (reserved-memory: {})",
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
                self.node.range, self.node.path
            )
        } else {
            write!(
                formatter,
                "{} accepted as the \"{MMIO_SRAM}\" node {}",
                self.node.range, self.node.path
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

/// A node's `#address-cells` / `#size-cells`, which govern its children's `reg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CellCounts {
    address: u32,
    size: u32,
}

impl CellCounts {
    fn of_node(dir: &Path) -> Result<Self, PeerError> {
        Ok(Self {
            address: read_u32_property(&dir.join("#address-cells"))?.unwrap_or(2),
            size: read_u32_property(&dir.join("#size-cells"))?.unwrap_or(1),
        })
    }
}

/// Visits the children of `dir` (whose own cells are `cells`), recording `mmio-sram` nodes.
fn walk(
    dir: &Path,
    dir_path: &str,
    cells: CellCounts,
    regions: &mut DeviceTreeRegions,
) -> Result<(), PeerError> {
    for child in sorted_child_nodes(dir)? {
        let child_dir = dir.join(&child);
        let child_path = format!("{dir_path}/{child}");
        if let Some(compatible) = read_property(&child_dir.join("compatible"))?
            && compatible_contains(&compatible, MMIO_SRAM)
        {
            let reg = read_property(&child_dir.join("reg"))?.ok_or_else(|| {
                PeerError::region(format!(
                    "device-tree node {child_path} is \"{MMIO_SRAM}\" but has no reg property"
                ))
            })?;
            let enabled = read_property(&child_dir.join("status"))?.is_none_or(|status| {
                matches!(
                    status.strip_suffix(b"\0").unwrap_or(&status),
                    b"okay" | b"ok"
                )
            });
            for range in decode_reg(&reg, cells, &child_path)? {
                regions.sram.push(NodeRange {
                    path: child_path.clone(),
                    range,
                    enabled,
                });
            }
        }
        let child_cells = CellCounts::of_node(&child_dir)?;
        walk(&child_dir, &child_path, child_cells, regions)?;
    }
    Ok(())
}

/// Names of the subdirectories (child nodes) of `dir`, sorted; symlinks are not followed.
fn sorted_child_nodes(dir: &Path) -> Result<Vec<String>, PeerError> {
    let entries = fs::read_dir(dir).map_err(|error| read_error(dir, &error))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| read_error(dir, &error))?;
        let file_type = entry
            .file_type()
            .map_err(|error| read_error(&entry.path(), &error))?;
        if file_type.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn read_error(path: &Path, error: &io::Error) -> PeerError {
    PeerError::region(format!(
        "cannot read device tree at {}: {error}",
        path.display()
    ))
}

/// Reads a property file; `None` when the property does not exist.
fn read_property(path: &Path) -> Result<Option<Vec<u8>>, PeerError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(read_error(path, &error)),
    }
}

fn read_u32_property(path: &Path) -> Result<Option<u32>, PeerError> {
    match read_property(path)? {
        None => Ok(None),
        Some(bytes) => match <[u8; 4]>::try_from(bytes.as_slice()) {
            Ok(cell) => Ok(Some(u32::from_be_bytes(cell))),
            Err(_) => Err(PeerError::region(format!(
                "device-tree property {} is {} bytes long, expected one 4-byte cell",
                path.display(),
                bytes.len()
            ))),
        },
    }
}

/// Whether a `compatible` value (NUL-separated strings) lists `wanted`.
fn compatible_contains(value: &[u8], wanted: &str) -> bool {
    value
        .split(|&byte| byte == 0)
        .any(|entry| entry == wanted.as_bytes())
}

/// Decodes a `reg` value of big-endian cells into ranges, with the parent's cell counts.
fn decode_reg(reg: &[u8], cells: CellCounts, node_path: &str) -> Result<Vec<PhysRange>, PeerError> {
    if !(1..=2).contains(&cells.address) || !(1..=2).contains(&cells.size) {
        return Err(PeerError::region(format!(
            "device-tree node {node_path}: parent has #address-cells = {} and #size-cells = {}; \
             only 1 or 2 cells each are supported",
            cells.address, cells.size
        )));
    }
    let entry_cells = (cells.address + cells.size) as usize;
    let entry_bytes = entry_cells * 4;
    if reg.is_empty() || reg.len() % entry_bytes != 0 {
        return Err(PeerError::region(format!(
            "device-tree node {node_path}: reg is {} bytes ({} cells), not a whole number of \
             <address size> entries of {} + {} cells as the parent's #address-cells/#size-cells say",
            reg.len(),
            reg.len() as f64 / 4.0,
            cells.address,
            cells.size
        )));
    }
    let read_cells = |bytes: &[u8]| {
        bytes.chunks_exact(4).fold(0u64, |value, cell| {
            let cell = u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]);
            (value << 32) | u64::from(cell)
        })
    };
    let address_bytes = cells.address as usize * 4;
    Ok(reg
        .chunks_exact(entry_bytes)
        .map(|entry| PhysRange {
            base: read_cells(&entry[..address_bytes]),
            size: read_cells(&entry[address_bytes..]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fake `/proc/device-tree` in a temporary directory.
    struct FakeTree {
        dir: tempfile::TempDir,
    }

    impl FakeTree {
        fn new() -> Self {
            let tree = Self {
                dir: tempfile::tempdir().expect("tempdir"),
            };
            tree.cells("", 2, 2);
            tree
        }

        fn node(&self, path: &str) -> PathBuf {
            let dir = self.dir.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).expect("create node");
            dir
        }

        fn property(&self, node: &str, name: &str, value: &[u8]) {
            fs::write(self.node(node).join(name), value).expect("write property");
        }

        fn cells(&self, node: &str, address: u32, size: u32) {
            self.property(node, "#address-cells", &address.to_be_bytes());
            self.property(node, "#size-cells", &size.to_be_bytes());
        }

        fn reg(&self, node: &str, cells: &[u32]) {
            let bytes: Vec<u8> = cells.iter().flat_map(|cell| cell.to_be_bytes()).collect();
            self.property(node, "reg", &bytes);
        }

        fn scan(&self) -> Result<DeviceTreeRegions, PeerError> {
            DeviceTreeRegions::scan(self.dir.path())
        }
    }

    const REGION: PhysRange = PhysRange {
        base: 0x7f00_0000,
        size: 0x100_0000,
    };

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
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("sram@7f000000");
        fs::create_dir(&node).expect("mkdir");
        fs::write(node.join("compatible"), b"mmio-sram\0").expect("write");
        let reg: Vec<u8> = [0u32, 0x7f00_0000, 0x100_0000]
            .iter()
            .flat_map(|cell| cell.to_be_bytes())
            .collect();
        fs::write(node.join("reg"), reg).expect("write");
        let regions = DeviceTreeRegions::scan(dir.path()).expect("scan");
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
        assert!(error.message.contains("2 + 1 cells"), "{error}");
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
    fn chosen_region_picks_one_of_several() {
        let tree = qemu_tree();
        tree.property("/sram@50000000", "compatible", b"mmio-sram\0");
        tree.reg("/sram@50000000", &[0, 0x5000_0000, 0, 0x1000]);
        tree.property("/chosen", "sramlink,region", b"/sram@7f000000\0");
        let found = tree.scan().expect("scan").discover().expect("chosen");
        assert_eq!(found.path, "/sram@7f000000");
        assert_eq!(found.range, REGION);
        tree.property("/chosen", "sramlink,region", b"/sram@60000000\0");
        let error = tree
            .scan()
            .expect("scan")
            .discover()
            .expect_err("no such node");
        assert!(
            error
                .message
                .contains("/chosen/sramlink,region = \"/sram@60000000\" names no enabled"),
            "{error}"
        );
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

    const SUBRANGE: PhysRange = PhysRange {
        base: 0x7f80_0000,
        size: 0x1000,
    };

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
        let wrong = PhysRange {
            base: 0x4000_0000,
            size: 0x100_0000,
        };
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
        let straddling = PhysRange {
            base: 0x7ff0_0000,
            size: 0x20_0000,
        };
        assert!(regions.check_range(&straddling).is_err());
        let larger = PhysRange {
            base: 0x7f00_0000,
            size: 0x200_0000,
        };
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
        assert!(error.message.contains("--device-tree DIR"), "{error}");
        // The same tree, once it exists, is read and the range accepted.
        let tree = qemu_tree();
        let accepted =
            DeviceTreeRegions::check_range_at(tree.dir.path(), &REGION).expect("tree exists");
        assert_eq!(accepted.node.path, "/sram@7f000000");
    }

    #[test]
    fn a_node_without_reg_is_an_error() {
        let tree = FakeTree::new();
        tree.property("/sram", "compatible", b"mmio-sram\0");
        let error = tree.scan().expect_err("no reg");
        assert!(error.message.contains("has no reg"), "{error}");
    }
}
