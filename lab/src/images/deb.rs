//! `.deb` extraction without dpkg: the `ar` archive's `data.tar.*` member,
//! decompressed by its extension (xz, zstd, gzip or none), walked with `tar`.
//! Also the path patterns images.yaml uses to pick files.

use std::io::Read;

use anyhow::{bail, Context, Result};

/// Calls `visit(path, contents)` for every regular file in the package's data
/// member, in archive order. Paths lose their leading `./`.
pub fn for_each_file(
    deb: impl Read,
    mut visit: impl FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = ar::Archive::new(deb);
    while let Some(entry) = archive.next_entry() {
        let entry = entry.context("not a .deb: bad ar archive")?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let Some(compression) = name.strip_prefix("data.tar") else {
            continue;
        };
        let data: Box<dyn Read + '_> = match compression {
            "" => Box::new(entry),
            ".xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            ".zst" => Box::new(
                ruzstd::decoding::StreamingDecoder::new(entry)
                    .map_err(|err| anyhow::anyhow!("{name}: bad zstd stream: {err}"))?,
            ),
            other => bail!("{name}: unknown compression {other:?}"),
        };
        let mut tar = tar::Archive::new(data);
        for file in tar.entries().with_context(|| format!("{name}: bad tar"))? {
            let mut file = file.with_context(|| format!("{name}: bad tar entry"))?;
            if !file.header().entry_type().is_file() {
                continue;
            }
            let path = file.path().with_context(|| format!("{name}: bad path"))?;
            let path = path.to_string_lossy();
            let path = path.trim_start_matches("./").to_owned();
            visit(&path, &mut file).with_context(|| format!("{path} in the .deb"))?;
        }
        return Ok(());
    }
    bail!("not a .deb: no data.tar member")
}

/// Whether `path` matches `pattern`, where `*` matches any run of characters
/// inside one path component (`boot/vmlinuz-*`, `lib/modules/*/modules.builtin`).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(&path)
            .all(|(p, c)| component_matches(p.as_bytes(), c.as_bytes()))
}

fn component_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| component_matches(rest, &text[skip..])),
        Some((first, rest)) => text
            .split_first()
            .is_some_and(|(c, tail)| c == first && component_matches(rest, tail)),
    }
}
