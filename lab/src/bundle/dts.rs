//! Device-tree blobs as text, the way `dtc -O dts` shows them: the lab
//! writes `manifest.dts` and one `<vm>.dts` per VM next to each run, and
//! snapshots compare this text.

use anyhow::{anyhow, Result};
use fdt::node::FdtNode;
use fdt::Fdt;
use std::fmt::Write;

/// Renders a blob as DTS text.
pub fn to_dts(blob: &[u8]) -> Result<String> {
    let fdt = Fdt::new(blob).map_err(|e| anyhow!("not a device tree: {e:?}"))?;
    let root = fdt
        .find_node("/")
        .ok_or_else(|| anyhow!("device tree without a root"))?;
    let mut out = String::from("/dts-v1/;\n\n");
    node(&mut out, root, 0, true);
    Ok(out)
}

fn node(out: &mut String, n: FdtNode<'_, '_>, depth: usize, root: bool) {
    let indent = "\t".repeat(depth);
    let name = if root { "/" } else { n.name };
    let _ = writeln!(out, "{indent}{name} {{");
    for prop in n.properties() {
        let _ = writeln!(out, "{indent}\t{}{};", prop.name, value(prop.value));
    }
    for child in n.children() {
        out.push('\n');
        node(out, child, depth + 1, false);
    }
    let _ = writeln!(out, "{indent}}};");
}

/// ` = "a", "b"` for string lists, ` = <0x..>` for cells, ` = [..]` for
/// other bytes, nothing for an empty property.
fn value(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let printable = |s: &[u8]| !s.is_empty() && s.iter().all(|b| (0x20..0x7f).contains(b));
    if bytes.last() == Some(&0) && bytes[..bytes.len() - 1].split(|b| *b == 0).all(printable) {
        let strings: Vec<String> = bytes[..bytes.len() - 1]
            .split(|b| *b == 0)
            .map(|s| format!("\"{}\"", String::from_utf8_lossy(s)))
            .collect();
        return format!(" = {}", strings.join(", "));
    }
    if bytes.len().is_multiple_of(4) {
        let cells: Vec<String> = bytes
            .chunks(4)
            .map(|c| format!("{:#x}", u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        return format!(" = <{}>", cells.join(" "));
    }
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(" = [{}]", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_like_dtc() {
        assert_eq!(value(b""), "");
        assert_eq!(value(b"virt\0"), " = \"virt\"");
        assert_eq!(value(b"a\0bc\0"), " = \"a\", \"bc\"");
        assert_eq!(value(&[0, 0, 0, 1, 0x40, 0, 0, 0]), " = <0x1 0x40000000>");
        assert_eq!(value(&[1, 2, 3]), " = [01 02 03]");
        // NUL-terminated but not text: cells.
        assert_eq!(value(&[0, 0, 0, 0]), " = <0x0>");
    }
}
