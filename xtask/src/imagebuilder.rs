//! Reads ImageBuilder configuration files (`xen-config/*.config`) the way `uboot-script-gen`
//! sees them: shell assignments `VAR=value`, `VAR="value"`, `VAR[0]=value`, comments.
//!
//! ImageBuilder `source`s its config with bash. We accept the subset a config needs and refuse
//! the rest with the line number, instead of guessing: no variable expansion (`$X`), no command
//! substitution, no commands. Variables we do not interpret are kept in [`Config::other`], so a
//! board config with extra ImageBuilder options still parses.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// One parsed assignment: `NAME=value` or `NAME[index]=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Variable name (`DOMU_KERNEL`).
    pub name: String,
    /// Array index for `NAME[index]=…`, `None` for a plain variable.
    pub index: Option<usize>,
    /// The value with quotes removed.
    pub value: String,
    /// 1-based line number in the file.
    pub line: usize,
}

/// A syntax error with its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses shell assignments, one per line, in order. Blank lines and `#` comments (whole-line
/// or after the value) are skipped.
pub fn parse_assignments(text: &str) -> Result<Vec<Assignment>, ParseError> {
    let mut assignments = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = number + 1;
        let error = |message: String| ParseError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed
            .strip_prefix("export ")
            .unwrap_or(trimmed)
            .trim_start();
        let Some((left, right)) = trimmed.split_once('=') else {
            return Err(error(format!(
                "expected an assignment NAME=value, found {trimmed:?}"
            )));
        };
        let (name, index) = parse_target(left).map_err(error)?;
        let value = parse_value(right).map_err(error)?;
        assignments.push(Assignment {
            name,
            index,
            value,
            line,
        });
    }
    Ok(assignments)
}

/// `NAME` or `NAME[index]`.
fn parse_target(left: &str) -> Result<(String, Option<usize>), String> {
    let (name, index) = match left.split_once('[') {
        Some((name, rest)) => {
            let Some(index) = rest.strip_suffix(']') else {
                return Err(format!("unclosed array index in {left:?}"));
            };
            let index = index
                .parse::<usize>()
                .map_err(|_| format!("array index in {left:?} is not a number"))?;
            (name, Some(index))
        }
        None => (left, None),
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{name:?} is not a shell variable name"));
    }
    Ok((name.to_string(), index))
}

/// The right-hand side: a sequence of bare, `"double"` and `'single'` quoted pieces, up to
/// whitespace or a comment.
fn parse_value(right: &str) -> Result<String, String> {
    let mut value = String::new();
    let mut chars = right.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next() {
                    None => return Err("unterminated double quote".to_string()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(escaped @ ('"' | '\\' | '$' | '`')) => value.push(escaped),
                        Some(other) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => return Err("unterminated double quote".to_string()),
                    },
                    Some('$' | '`') => {
                        return Err(
                            "variable expansion and command substitution are not supported; \
                             write the value literally"
                                .to_string(),
                        );
                    }
                    Some(other) => value.push(other),
                }
            },
            '\'' => loop {
                match chars.next() {
                    None => return Err("unterminated single quote".to_string()),
                    Some('\'') => break,
                    Some(other) => value.push(other),
                }
            },
            '\\' => match chars.next() {
                Some(escaped) => value.push(escaped),
                None => {
                    return Err(
                        "a trailing backslash (line continuation) is not supported".to_string()
                    );
                }
            },
            '$' | '`' => {
                return Err(
                    "variable expansion and command substitution are not supported; \
                     write the value literally"
                        .to_string(),
                );
            }
            ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                return Err(format!("{c:?} is not allowed: one assignment per line"));
            }
            c if c.is_whitespace() => {
                let rest: String = chars.collect();
                let rest = rest.trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
                return Err(format!(
                    "unexpected text after the value: {rest:?} (quote values with spaces)"
                ));
            }
            other => value.push(other),
        }
    }
    Ok(value)
}

/// Parses `0x…` (hex) or decimal numbers, as the shell's arithmetic would.
pub fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// One dom0less domU (`DOMU_*[i]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomU {
    /// `DOMU_KERNEL[i]`: the kernel Image file.
    pub kernel: String,
    /// `DOMU_RAMDISK[i]`.
    pub ramdisk: Option<String>,
    /// `DOMU_PASSTHROUGH_DTB[i]`: the partial device tree (compiled).
    pub passthrough_dtb: Option<String>,
    /// `DOMU_MEM[i]` in MiB, required here: ImageBuilder's README promises a 512 MiB default
    /// and its releases up to `xlnx_rel_v2022.2` apply it, but since `xlnx_rel_v2023.1` (the
    /// `DOMU_STATIC_MEM` change) `uboot-script-gen` turns an unset value into 0, a domU Xen
    /// cannot build. Requiring it gives the same result with every version.
    pub mem_mib: u64,
    /// `DOMU_VCPUS[i]`, default 1.
    pub vcpus: u32,
    /// `DOMU_ENHANCED[i]`: `xen,enhanced = "enabled"` (PV interfaces). ImageBuilder's default
    /// is on when there is a dom0 kernel.
    pub enhanced: Option<bool>,
    /// `DOMU_VUART_PL011[i]` = 1: `vpl011 = "pl011"` instead of the SBSA UART default.
    pub vuart_pl011: bool,
    /// `DOMU_CMD[i]`: the domU's command line, written as `bootargs` of its kernel module node
    /// (where ImageBuilder puts it and Xen reads it; Xen gives it to the guest as
    /// `/chosen/bootargs`). Unset or empty, it is [`DEFAULT_DOMU_CMD`], as ImageBuilder writes.
    pub cmd: String,
}

/// The command line `uboot-script-gen` gives a domU whose `DOMU_CMD[i]` is unset or empty (the
/// sramlink guest ignores `console=`: its console is the one `stdout-path` names).
pub const DEFAULT_DOMU_CMD: &str = "console=ttyAMA0";

/// The variables of an ImageBuilder config that the launcher interprets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `MEMORY_START`: first byte of RAM.
    pub memory_start: u64,
    /// `MEMORY_END`: end of RAM (exclusive).
    pub memory_end: u64,
    /// `DEVICE_TREE`: the host DTB file.
    pub device_tree: String,
    /// `XEN`: the hypervisor binary.
    pub xen: String,
    /// `XEN_CMD`: Xen's command line (`xen,xen-bootargs`).
    pub xen_cmd: String,
    /// `DOM0_KERNEL`.
    pub dom0_kernel: Option<String>,
    /// `DOM0_RAMDISK`.
    pub dom0_ramdisk: Option<String>,
    /// `DOM0_CMD`: dom0's command line (`xen,dom0-bootargs`).
    pub dom0_cmd: Option<String>,
    /// `DOMU_*[0..NUM_DOMUS]`.
    pub domus: Vec<DomU>,
    /// Every other variable (`UBOOT_SCRIPT`, ImageBuilder options we do not use), by name;
    /// array elements as `NAME[i]`.
    pub other: BTreeMap<String, String>,
}

/// Reads and interprets a config file.
pub fn load(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in ImageBuilder config {}", path.display()))
}

/// Interprets config text.
pub fn parse(text: &str) -> Result<Config> {
    let assignments = parse_assignments(text)?;
    let mut scalars: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut arrays: BTreeMap<String, BTreeMap<usize, (String, usize)>> = BTreeMap::new();
    for assignment in assignments {
        match assignment.index {
            None => {
                scalars.insert(assignment.name, (assignment.value, assignment.line));
            }
            Some(index) => {
                arrays
                    .entry(assignment.name)
                    .or_default()
                    .insert(index, (assignment.value, assignment.line));
            }
        }
    }

    let mut take = |name: &str| scalars.remove(name);
    let number = |name: &str, entry: Option<(String, usize)>| -> Result<Option<u64>> {
        match entry {
            None => Ok(None),
            Some((value, line)) => match parse_number(&value) {
                Some(n) => Ok(Some(n)),
                None => bail!("line {line}: {name}={value:?} is not a number (hex 0x… or decimal)"),
            },
        }
    };
    let required = |name: &str, entry: Option<(String, usize)>| -> Result<(String, usize)> {
        entry.with_context(|| format!("{name} is not set"))
    };

    let memory_start =
        number("MEMORY_START", take("MEMORY_START"))?.context("MEMORY_START is not set")?;
    let memory_end = number("MEMORY_END", take("MEMORY_END"))?.context("MEMORY_END is not set")?;
    if memory_end <= memory_start {
        bail!("MEMORY_END ({memory_end:#x}) must be above MEMORY_START ({memory_start:#x})");
    }
    let device_tree = required("DEVICE_TREE", take("DEVICE_TREE"))?.0;
    let xen = required("XEN", take("XEN"))?.0;
    let xen_cmd = required("XEN_CMD", take("XEN_CMD"))?.0;
    let dom0_kernel = take("DOM0_KERNEL").map(|(value, _)| value);
    let dom0_ramdisk = take("DOM0_RAMDISK").map(|(value, _)| value);
    let dom0_cmd = take("DOM0_CMD").map(|(value, _)| value);
    let num_domus = number("NUM_DOMUS", take("NUM_DOMUS"))?.unwrap_or(0);
    let num_domus = usize::try_from(num_domus).context("NUM_DOMUS is too large")?;

    let mut element = |name: &str, index: usize| -> Option<(String, usize)> {
        arrays
            .get_mut(name)
            .and_then(|values| values.remove(&index))
    };
    let mut domus = Vec::with_capacity(num_domus);
    for i in 0..num_domus {
        let kernel = element("DOMU_KERNEL", i)
            .with_context(|| format!("NUM_DOMUS={num_domus} but DOMU_KERNEL[{i}] is not set"))?
            .0;
        let mem_mib =
            number(&format!("DOMU_MEM[{i}]"), element("DOMU_MEM", i))?.with_context(|| {
                format!(
                    "DOMU_MEM[{i}] is not set (ImageBuilder's default depends on its version: \
                     512 MiB up to xlnx_rel_v2022.2, 0 MiB since xlnx_rel_v2023.1); set the \
                     domU's RAM in MiB"
                )
            })?;
        if mem_mib == 0 {
            bail!("DOMU_MEM[{i}] is 0 MiB");
        }
        let vcpus = number(&format!("DOMU_VCPUS[{i}]"), element("DOMU_VCPUS", i))?.unwrap_or(1);
        let vcpus = u32::try_from(vcpus)
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("DOMU_VCPUS[{i}]={vcpus} is out of range"))?;
        let flag = |name: &str, entry: Option<(String, usize)>| -> Result<Option<bool>> {
            match entry {
                None => Ok(None),
                Some((value, line)) => match value.as_str() {
                    "1" => Ok(Some(true)),
                    "0" => Ok(Some(false)),
                    _ => bail!("line {line}: {name}[{i}]={value:?} must be 0 or 1"),
                },
            }
        };
        let enhanced = flag("DOMU_ENHANCED", element("DOMU_ENHANCED", i))?;
        let vuart_pl011 =
            flag("DOMU_VUART_PL011", element("DOMU_VUART_PL011", i))?.unwrap_or(false);
        domus.push(DomU {
            kernel,
            ramdisk: element("DOMU_RAMDISK", i).map(|(value, _)| value),
            passthrough_dtb: element("DOMU_PASSTHROUGH_DTB", i).map(|(value, _)| value),
            mem_mib,
            vcpus,
            enhanced,
            vuart_pl011,
            cmd: element("DOMU_CMD", i)
                .map(|(value, _)| value)
                .filter(|value| !value.is_empty())
                .unwrap_or_else(|| DEFAULT_DOMU_CMD.to_string()),
        });
    }
    for (name, values) in &arrays {
        if name.starts_with("DOMU_")
            && let Some((index, (_, line))) = values.iter().find(|(index, _)| **index >= num_domus)
        {
            bail!("line {line}: {name}[{index}] is set but NUM_DOMUS is {num_domus}");
        }
    }

    let mut other: BTreeMap<String, String> = scalars
        .into_iter()
        .map(|(name, (value, _))| (name, value))
        .collect();
    for (name, values) in arrays {
        for (index, (value, _)) in values {
            other.insert(format!("{name}[{index}]"), value);
        }
    }
    Ok(Config {
        memory_start,
        memory_end,
        device_tree,
        xen,
        xen_cmd,
        dom0_kernel,
        dom0_ramdisk,
        dom0_cmd,
        domus,
        other,
    })
}

impl Config {
    /// dom0's command line as ImageBuilder completes it: its default when unset, and
    /// ` root=/dev/ram0` appended when it names no root (we never set `DOM0_ROOTFS`).
    pub fn dom0_bootargs(&self) -> String {
        let base = self.dom0_cmd.clone().unwrap_or_else(|| {
            "console=hvc0 earlycon=xen earlyprintk=xen clk_ignore_unused".into()
        });
        if base.split_whitespace().any(|arg| arg.starts_with("root=")) {
            base
        } else {
            format!("{base} root=/dev/ram0")
        }
    }
}

impl DomU {
    /// Whether ImageBuilder adds `xen,enhanced = "enabled"` to this domU's node.
    pub fn is_enhanced(&self, has_dom0: bool) -> bool {
        self.enhanced.unwrap_or(has_dom0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
# comment
MEMORY_START="0x40000000"
MEMORY_END=0xC0000000   # trailing comment
DEVICE_TREE='virt.dtb'
XEN="xen"
XEN_CMD="console=dtuart dtuart=/pl011@9000000 dom0_mem=512M"
DOM0_KERNEL="Image-dom0"
DOM0_RAMDISK="dom0.cpio"
DOM0_CMD="console=hvc0 rdinit=/init"
NUM_DOMUS=1
DOMU_KERNEL[0]="guest.img"
DOMU_PASSTHROUGH_DTB[0]="domU-sram.dtb"
DOMU_MEM[0]=256
DOMU_ENHANCED[0]=0
DOMU_CMD[0]="sramlink.idle=busy-poll"
UBOOT_SCRIPT="boot.scr"
SRAMLINK_REGION_BASE=0x7f000000
"#;

    #[test]
    fn example_config_is_read_with_types() {
        let config = parse(EXAMPLE).expect("parses");
        assert_eq!(config.memory_start, 0x4000_0000);
        assert_eq!(config.memory_end, 0xc000_0000);
        assert_eq!(config.device_tree, "virt.dtb");
        assert_eq!(
            config.xen_cmd,
            "console=dtuart dtuart=/pl011@9000000 dom0_mem=512M"
        );
        assert_eq!(config.dom0_kernel.as_deref(), Some("Image-dom0"));
        assert_eq!(config.domus.len(), 1);
        let domu = &config.domus[0];
        assert_eq!(domu.kernel, "guest.img");
        assert_eq!(domu.passthrough_dtb.as_deref(), Some("domU-sram.dtb"));
        assert_eq!(domu.mem_mib, 256);
        assert_eq!(domu.vcpus, 1);
        assert!(!domu.is_enhanced(true));
        assert_eq!(domu.cmd, "sramlink.idle=busy-poll");
        let without =
            parse(&EXAMPLE.replace("DOMU_CMD[0]=\"sramlink.idle=busy-poll\"", "")).expect("parses");
        assert_eq!(without.domus[0].cmd, "console=ttyAMA0");
        let empty =
            parse(&EXAMPLE.replace("=\"sramlink.idle=busy-poll\"", "=\"\"")).expect("parses");
        assert_eq!(empty.domus[0].cmd, "console=ttyAMA0");
        assert_eq!(config.other["UBOOT_SCRIPT"], "boot.scr");
        assert_eq!(config.other["SRAMLINK_REGION_BASE"], "0x7f000000");
        assert_eq!(
            config.dom0_bootargs(),
            "console=hvc0 rdinit=/init root=/dev/ram0"
        );
    }

    #[test]
    fn quoting_follows_the_shell() {
        let parsed =
            parse_assignments("A=\"x y\"'z w'\\ v\nB[3]=\"say \\\"hi\\\"\" # c\n").expect("parses");
        assert_eq!(parsed[0].value, "x yz w v");
        assert_eq!(parsed[1].name, "B");
        assert_eq!(parsed[1].index, Some(3));
        assert_eq!(parsed[1].value, "say \"hi\"");
        assert_eq!(parsed[1].line, 2);
    }

    #[test]
    fn unsupported_shell_is_refused_with_its_line() {
        for (text, needle) in [
            ("\nA=$HOME\n", "expansion"),
            ("\nA=\"${B}\"\n", "expansion"),
            ("\nA=x y\n", "quote values with spaces"),
            ("\nA=\"open\n", "unterminated"),
            ("\necho hi\n", "assignment"),
            ("\n1A=x\n", "variable name"),
            ("\nA[x]=1\n", "not a number"),
            ("\nA=1; B=2\n", "one assignment per line"),
        ] {
            let error = parse_assignments(text).expect_err(text);
            assert_eq!(error.line, 2, "{text:?}");
            assert!(error.message.contains(needle), "{text:?}: {error}");
        }
    }

    #[test]
    fn missing_and_inconsistent_values_are_clear_errors() {
        let without = |name: &str| {
            EXAMPLE
                .lines()
                .filter(|line| !line.starts_with(name))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let message = |text: &str| format!("{:#}", parse(text).expect_err("must fail"));
        assert!(message(&without("XEN_CMD")).contains("XEN_CMD is not set"));
        assert!(message(&without("DOMU_MEM")).contains("DOMU_MEM[0] is not set"));
        assert!(message(&without("DOMU_KERNEL")).contains("DOMU_KERNEL[0] is not set"));
        let extra = format!("{EXAMPLE}DOMU_KERNEL[1]=\"second\"\n");
        assert!(message(&extra).contains("NUM_DOMUS is 1"));
        let bad_number = EXAMPLE.replace("MEMORY_END=0xC0000000", "MEMORY_END=lots");
        assert!(message(&bad_number).contains("MEMORY_END"));
        let reversed = EXAMPLE.replace("MEMORY_END=0xC0000000", "MEMORY_END=0x1000");
        assert!(message(&reversed).contains("must be above"));
    }

    #[test]
    fn numbers_are_hex_or_decimal() {
        assert_eq!(parse_number("0x7f000000"), Some(0x7f00_0000));
        assert_eq!(parse_number("0X10"), Some(16));
        assert_eq!(parse_number("256"), Some(256));
        assert_eq!(parse_number("0xzz"), None);
        assert_eq!(parse_number(""), None);
    }
}
