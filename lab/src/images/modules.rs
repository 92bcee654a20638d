//! Linux kernel modules: the `.modinfo` fields of a `.ko` (plain, xz or
//! zstd), `modules.builtin`, and the load order that puts every module after
//! the modules its `depends=` names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{bail, Context, Result};
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};

/// What a module says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    pub depends: Vec<String>,
}

/// Whether `path` names a kernel module file.
pub fn is_module_path(path: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| path.ends_with(ext))
}

/// The module name a file provides: its base name without the extension,
/// with `-` spelled `_` as the kernel does.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// The uncompressed ELF of a module file, by its extension.
pub fn decompress(path: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if path.ends_with(".ko") {
        return Ok(data.to_vec());
    } else if path.ends_with(".ko.xz") {
        xz2::read::XzDecoder::new(data).read_to_end(&mut out)?;
    } else if path.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
    } else if path.ends_with(".ko.zst") {
        ruzstd::decoding::StreamingDecoder::new(data)
            .map_err(|err| anyhow::anyhow!("bad zstd stream: {err}"))?
            .read_to_end(&mut out)?;
    } else {
        bail!("{path} is not a kernel module");
    }
    Ok(out)
}

/// The `name=` and `depends=` fields of an uncompressed module's `.modinfo`
/// section (NUL-separated `key=value` strings, as `modinfo` prints them).
pub fn modinfo(elf: &[u8], fallback_name: &str) -> Result<ModInfo> {
    let file = ElfFile64::<Endianness>::parse(elf).context("not a 64-bit ELF module")?;
    let section = file
        .section_by_name(".modinfo")
        .context("the module has no .modinfo section")?;
    let data = section.data().context("cannot read .modinfo")?;
    let mut info = ModInfo {
        name: fallback_name.to_owned(),
        depends: Vec::new(),
    };
    for field in data.split(|&b| b == 0) {
        let field = String::from_utf8_lossy(field);
        if let Some(name) = field.strip_prefix("name=") {
            info.name = name.to_owned();
        } else if let Some(depends) = field.strip_prefix("depends=") {
            info.depends = depends
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect();
        }
    }
    Ok(info)
}

/// The module names listed in `modules.builtin` (`kernel/drivers/.../x.ko`).
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(module_name)
        .collect()
}

/// The modules to load for `wanted`, dependencies first: a depth-first walk
/// in the order `wanted` and each `depends=` list them, so the result is
/// stable. Built-in modules are skipped; a module that is neither built in
/// nor in `depends` is an error, as is a dependency cycle.
pub fn load_order(
    wanted: &[String],
    depends: &BTreeMap<String, Vec<String>>,
    builtin: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for name in wanted {
        visit(
            name,
            depends,
            builtin,
            &mut Vec::new(),
            &mut done,
            &mut order,
        )
        .with_context(|| format!("module {name}"))?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    depends: &BTreeMap<String, Vec<String>>,
    builtin: &BTreeSet<String>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<()> {
    if done.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if path.iter().any(|p| p == name) {
        bail!("dependency cycle {} -> {name}", path.join(" -> "));
    }
    let Some(deps) = depends.get(name) else {
        if path.is_empty() {
            bail!("{name} is neither built into the kernel nor shipped as a module");
        }
        bail!(
            "{} depends on {name}, which is neither built in nor a module",
            path.join(" -> ")
        );
    };
    path.push(name.to_owned());
    for dep in deps {
        visit(dep, depends, builtin, path, done, order)?;
    }
    path.pop();
    done.insert(name.to_owned());
    order.push(name.to_owned());
    Ok(())
}
