//! The guest and the peer read one device tree and find the region at the same address.
//!
//! Before they shared `sramlink-devicetree`, the guest translated a region's `reg` through its
//! ancestors' `ranges` and the peer did not: under a bus with a non-identity `ranges`, the
//! peer would have mapped (or accepted `--base` at) the bus-local address.

use sramlink_devicetree::PhysRange;
use sramlink_peer::devicetree::DeviceTreeRegions;

/// QEMU virt-like root (2/2 cells, one RAM bank) with `/soc` mapping its child address 0 to
/// CPU 0x7000_0000 (a 256 MiB window), and the region at bus address 0x0f00_0000 in it.
fn tree_with_a_translating_bus() -> Vec<u8> {
    let mut writer = vm_fdt::FdtWriter::new().expect("writer");
    let root = writer.begin_node("").expect("root");
    writer.property_u32("#address-cells", 2).expect("cells");
    writer.property_u32("#size-cells", 2).expect("cells");
    let memory = writer.begin_node("memory@40000000").expect("memory");
    writer
        .property_string("device_type", "memory")
        .expect("type");
    writer
        .property_array_u32("reg", &[0, 0x4000_0000, 0, 0x1000_0000])
        .expect("reg");
    writer.end_node(memory).expect("end");
    let soc = writer.begin_node("soc").expect("soc");
    writer
        .property_string("compatible", "simple-bus")
        .expect("compatible");
    writer.property_u32("#address-cells", 1).expect("cells");
    writer.property_u32("#size-cells", 1).expect("cells");
    // <child-address parent-address(2 cells) length>
    writer
        .property_array_u32("ranges", &[0x0, 0x0, 0x7000_0000, 0x1000_0000])
        .expect("ranges");
    let sram = writer.begin_node("sram@f000000").expect("sram");
    writer
        .property_string("compatible", "mmio-sram")
        .expect("compatible");
    writer
        .property_array_u32("reg", &[0x0f00_0000, 0x100_0000])
        .expect("reg");
    writer.end_node(sram).expect("end");
    writer.end_node(soc).expect("end");
    writer.end_node(root).expect("end");
    writer.finish().expect("blob")
}

#[test]
fn a_region_behind_a_translating_bus_is_found_at_one_address_by_both_sides() {
    let blob = tree_with_a_translating_bus();
    let translated = PhysRange::from_base_size(0x7f00_0000, 0x100_0000).unwrap();
    let bus_local = PhysRange::from_base_size(0x0f00_0000, 0x100_0000).unwrap();

    // The guest, on the blob from x0.
    let guest = sramlink::devicetree::discover(&blob)
        .expect("usable tree")
        .region
        .expect("region");
    assert_eq!(guest.path, "/soc/sram@f000000");
    assert_eq!(guest.range, translated);

    // The peer, on the same blob read from a file as from /sys/firmware/fdt.
    let dir = tempfile::tempdir().expect("tempdir");
    let fdt = dir.path().join("fdt");
    std::fs::write(&fdt, &blob).expect("blob file");
    let regions = DeviceTreeRegions::scan(&fdt).expect("scan");
    let peer = regions.discover().expect("region");
    assert_eq!(peer.path, guest.path.as_str());
    assert_eq!(peer.range, guest.range);

    // --base/--size: the CPU address is the region; the bus-local one (what reading reg
    // without ranges gives) is refused.
    assert!(regions.check_range(&translated).is_ok());
    let error = regions
        .check_range(&bus_local)
        .expect_err("bus-local address");
    assert!(
        error
            .message
            .contains("refusing to map 0xf000000+0x1000000"),
        "{error}"
    );
    assert!(
        error
            .message
            .contains("0x7f000000+0x1000000 (/soc/sram@f000000)"),
        "{error}"
    );
}
