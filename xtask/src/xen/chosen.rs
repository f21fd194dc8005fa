//! The `/chosen` dom0less nodes (Xen, dom0 and domU command lines, one node per module) written
//! from an ImageBuilder config and the placed modules, as `uboot-script-gen` writes them.

use super::config::cells2;
use super::layout::{Module, ModuleKind};
use crate::imagebuilder::Config;

/// A DTS string literal.
fn dts_string(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// The `/chosen` dom0less nodes for `config` and the placed `modules`, as ImageBuilder's
/// `uboot-script-gen` writes them with `fdt set`. A domU's `DOMU_CMD[i]` becomes `bootargs` of
/// its kernel module node, as ImageBuilder does: Xen takes a domU's command line from the
/// `bootargs` of a module node under the `xen,domain` node, not from the domain node itself.
pub fn chosen_fragment(config: &Config, modules: &[Module]) -> String {
    let module_node = |module: &Module, compatible: &str, indent: &str, bootargs: Option<&str>| {
        let bootargs = bootargs
            .map(|args| format!("{indent}    bootargs = {};\n", dts_string(args)))
            .unwrap_or_default();
        format!(
            "{indent}module@{addr:x} {{\n\
             {indent}    compatible = {compatible};\n\
             {indent}    reg = <{addr_cells} {size_cells}>;\n\
             {bootargs}\
             {indent}}};\n",
            addr = module.addr,
            addr_cells = cells2(module.addr),
            size_cells = cells2(module.size),
        )
    };
    let mut text = String::from("/ {\n    chosen {\n");
    text += "        #address-cells = <0x2>;\n        #size-cells = <0x2>;\n";
    text += &format!(
        "        xen,xen-bootargs = {};\n",
        dts_string(&config.xen_cmd)
    );
    text += &format!(
        "        xen,dom0-bootargs = {};\n",
        dts_string(&config.dom0_bootargs())
    );
    for module in modules {
        match module.kind {
            ModuleKind::Dom0Kernel => {
                text += &module_node(
                    module,
                    "\"multiboot,kernel\", \"multiboot,module\"",
                    "        ",
                    None,
                );
            }
            ModuleKind::Dom0Ramdisk => {
                text += &module_node(
                    module,
                    "\"multiboot,ramdisk\", \"multiboot,module\"",
                    "        ",
                    None,
                );
            }
            _ => {}
        }
    }
    let has_dom0 = config.dom0_kernel.is_some();
    for (index, domu) in config.domus.iter().enumerate() {
        text += &format!("\n        domU{index} {{\n");
        text += "            compatible = \"xen,domain\";\n";
        text += "            #address-cells = <0x2>;\n            #size-cells = <0x2>;\n";
        text += &format!("            memory = <{}>;\n", cells2(domu.mem_mib * 1024));
        text += &format!("            cpus = <{:#x}>;\n", domu.vcpus);
        text += if domu.vuart_pl011 {
            "            vpl011 = \"pl011\";\n"
        } else {
            "            vpl011;\n"
        };
        if domu.is_enhanced(has_dom0) {
            text += "            xen,enhanced = \"enabled\";\n";
        }
        for module in modules {
            let (compatible, bootargs) = match module.kind {
                ModuleKind::DomUKernel(i) if i == index => (
                    "\"multiboot,kernel\", \"multiboot,module\"",
                    Some(domu.cmd.as_str()),
                ),
                ModuleKind::DomUDtb(i) if i == index => {
                    ("\"multiboot,device-tree\", \"multiboot,module\"", None)
                }
                _ => continue,
            };
            text += &module_node(module, compatible, "            ", bootargs);
        }
        text += "        };\n";
    }
    text += "    };\n};\n";
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagebuilder;

    #[test]
    fn chosen_nodes_carry_exact_sizes_and_bootargs() {
        let config = imagebuilder::parse(
            "MEMORY_START=0x40000000\nMEMORY_END=0xc0000000\nDEVICE_TREE=v.dtb\nXEN=xen\n\
             XEN_CMD=\"console=dtuart dom0_mem=512M\"\nDOM0_KERNEL=k\nDOM0_RAMDISK=r\n\
             DOM0_CMD=\"console=hvc0 rdinit=/init\"\nNUM_DOMUS=1\nDOMU_KERNEL[0]=g\n\
             DOMU_PASSTHROUGH_DTB[0]=d.dtb\nDOMU_MEM[0]=256\nDOMU_ENHANCED[0]=0\n\
             DOMU_CMD[0]=\"sramlink.idle=wfe\"\n",
        )
        .expect("config");
        let modules = vec![
            Module {
                kind: ModuleKind::Dom0Kernel,
                path: "k".into(),
                addr: 0x5000_0000,
                size: 0x1f6_da00,
            },
            Module {
                kind: ModuleKind::DomUKernel(0),
                path: "g".into(),
                addr: 0x5300_0000,
                size: 0x138,
            },
            Module {
                kind: ModuleKind::DomUDtb(0),
                path: "d".into(),
                addr: 0x5280_0000,
                size: 0x190,
            },
        ];
        let chosen = chosen_fragment(&config, &modules);
        assert!(chosen.contains("xen,xen-bootargs = \"console=dtuart dom0_mem=512M\";"));
        assert!(
            chosen.contains("xen,dom0-bootargs = \"console=hvc0 rdinit=/init root=/dev/ram0\";")
        );
        assert!(chosen.contains("reg = <0x0 0x50000000 0x0 0x1f6da00>;"));
        assert!(chosen.contains("memory = <0x0 0x40000>;"));
        assert!(chosen.contains("vpl011;"));
        assert!(!chosen.contains("xen,enhanced"));
        let domu = chosen.split("domU0 {").nth(1).expect("domU node");
        assert!(domu.contains("\"multiboot,device-tree\", \"multiboot,module\";\n                reg = <0x0 0x52800000 0x0 0x190>;"));
        assert!(domu.contains("\"multiboot,kernel\", \"multiboot,module\";\n                reg = <0x0 0x53000000 0x0 0x138>;\n                bootargs = \"sramlink.idle=wfe\";\n            };"));
        // Only the domU's kernel module carries DOMU_CMD.
        assert_eq!(
            chosen.matches("bootargs = \"sramlink.idle=wfe\"").count(),
            1
        );
        let mut without = config.clone();
        without.domus[0].cmd = crate::imagebuilder::DEFAULT_DOMU_CMD.to_string();
        assert!(!chosen_fragment(&without, &modules).contains("sramlink.idle"));
        assert_eq!(dts_string("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
    }
}
