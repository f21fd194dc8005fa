//! The properties of one node that discovery looks at, read in one pass over the node.

use fdt::node::FdtNode;

use crate::cells::{Cells, be_u32};

/// Properties of a node the walk cares about.
pub(crate) struct NodeInfo<'a> {
    pub(crate) status_ok: bool,
    pub(crate) compatible: &'a [u8],
    pub(crate) device_type: Option<&'a str>,
    pub(crate) reg: Option<&'a [u8]>,
    pub(crate) ranges: Option<&'a [u8]>,
    pub(crate) cells: Cells,
    pub(crate) method: Option<&'a str>,
    pub(crate) cacheable: bool,
    pub(crate) interrupts: Option<&'a [u8]>,
}

impl<'a> NodeInfo<'a> {
    pub(crate) fn read(node: FdtNode<'_, 'a>) -> Self {
        let mut info = NodeInfo {
            status_ok: true,
            compatible: &[],
            device_type: None,
            reg: None,
            ranges: None,
            cells: Cells::DEFAULT,
            method: None,
            cacheable: false,
            interrupts: None,
        };
        let mut address_cells = None;
        let mut size_cells = None;
        for property in node.properties() {
            match property.name {
                "status" => info.status_ok = matches!(property.as_str(), Some("okay") | Some("ok")),
                "compatible" => info.compatible = property.value,
                "device_type" => info.device_type = property.as_str(),
                "reg" => info.reg = Some(property.value),
                "ranges" => info.ranges = Some(property.value),
                "#address-cells" => address_cells = be_u32(property.value),
                "#size-cells" => size_cells = be_u32(property.value),
                "method" => info.method = property.as_str(),
                "sramlink,cacheable" => info.cacheable = true,
                "interrupts" => info.interrupts = Some(property.value),
                _ => {}
            }
        }
        if address_cells.is_some() || size_cells.is_some() {
            info.cells = Cells {
                address: address_cells.unwrap_or(Cells::DEFAULT.address),
                size: size_cells.unwrap_or(Cells::DEFAULT.size),
                defaulted: false,
            };
        }
        info
    }

    pub(crate) fn is_compatible(&self, name: &str) -> bool {
        self.compatible
            .split(|byte| *byte == 0)
            .any(|entry| entry == name.as_bytes())
    }

    pub(crate) fn is_compatible_prefix(&self, prefix: &str) -> bool {
        self.compatible
            .split(|byte| *byte == 0)
            .any(|entry| entry.starts_with(prefix.as_bytes()))
    }
}
