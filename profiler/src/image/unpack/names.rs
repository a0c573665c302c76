//! Checks on names, modes and xattrs of tar entries: what a layer may contain.

use std::io::Read;

/// Splits a tar path into checked components; the reason is the refusal line.
pub fn split_path(raw: &[u8], max_path: usize) -> Result<Vec<String>, String> {
    if raw.len() > max_path {
        return Err(format!(
            "path is {} bytes, over the {max_path}-byte limit",
            raw.len()
        ));
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path refused (layer entries are relative to the layer root)".into());
    }
    let s = std::str::from_utf8(raw).map_err(|_| "path is not valid UTF-8".to_owned())?;
    let mut out = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("path climbs out with `..`; refused".into()),
            c if c.len() > 255 => {
                return Err(format!("name component is {} bytes, over 255", c.len()))
            }
            c => out.push(c.to_owned()),
        }
    }
    Ok(out)
}

/// What a layer entry's final name means in overlay terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    None,
    /// `.wh.<name>`: delete `<name>`.
    Delete(&'a str),
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// Another `.wh..wh.*`: reserved, skipped.
    Reserved,
}

pub fn classify(name: &str) -> Result<Whiteout<'_>, String> {
    if name == ".wh..wh..opq" {
        return Ok(Whiteout::Opaque);
    }
    if name.starts_with(".wh..wh.") {
        return Ok(Whiteout::Reserved);
    }
    match name.strip_prefix(".wh.") {
        None => Ok(Whiteout::None),
        Some("") => Err("bare `.wh.` whiteout names nothing; refused".into()),
        Some("." | "..") => Err("whiteout of `.` or `..`; refused".into()),
        Some(n) => Ok(Whiteout::Delete(n)),
    }
}

/// The mode actually written to a regular file: permission bits; setuid/setgid dropped when the
/// file is group- or world-writable (anyone could then replace a privileged program).
/// Directories keep theirs (setgid on a group-writable dir such as /var/mail is normal).
pub fn safe_mode(mode: u32) -> (u32, bool) {
    let m = mode & 0o7777;
    if m & 0o6000 != 0 && m & 0o022 != 0 {
        (m & !0o6000, true)
    } else {
        (m, false)
    }
}

/// Sorts tar xattrs into kept, dropped (noted) and refused (an error line).
pub(super) fn filter_xattrs(
    entry: &mut tar::Entry<'_, impl Read>,
    note: &mut Vec<String>,
    name: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut keep = Vec::new();
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Ok(keep);
    };
    for ext in exts {
        let ext = ext.map_err(|e| format!("corrupt PAX header: {}", super::super::one_line(&e)))?;
        let Ok(key) = ext.key() else { continue };
        let Some(x) = key.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        if x.starts_with("trusted.overlay.") || x.starts_with("user.overlay.") {
            return Err(format!(
                "carries the overlay xattr {x}; overlay metadata from an archive could redirect lookups outside the layer: refused"
            ));
        }
        if x == "security.capability" || x.starts_with("user.") {
            keep.push((x.to_owned(), ext.value_bytes().to_vec()));
        } else {
            note.push(format!(
                "{name}: xattr {x} dropped (only user.* and security.capability are kept)"
            ));
        }
    }
    Ok(keep)
}
