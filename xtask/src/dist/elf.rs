//! Is an executable static? Read from its ELF program headers, so that no `file` or
//! `ldd` is needed (ldd runs the loader on the file): a dynamically linked executable
//! names its loader (PT_INTERP) and its libraries (DT_NEEDED entries of PT_DYNAMIC). A
//! static-pie still has a PT_DYNAMIC, for relocating itself, but neither of those.
use anyhow::{Context, Result, bail};

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const ET_DYN: u16 = 3;

#[derive(Debug)]
pub(super) struct Linkage {
    /// The program loader it asks for (PT_INTERP), e.g. /lib64/ld-linux-x86-64.so.2.
    pub interpreter: Option<String>,
    /// Shared libraries it needs (DT_NEEDED).
    pub needed: usize,
    /// Position-independent (ET_DYN): static-pie when static.
    pub pie: bool,
}

impl Linkage {
    pub(super) fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed == 0
    }
}

/// `len` bytes at `at`.
fn slice(b: &[u8], at: u64, len: u64) -> Result<&[u8]> {
    let (at, len) = (usize::try_from(at)?, usize::try_from(len)?);
    at.checked_add(len)
        .and_then(|end| b.get(at..end))
        .with_context(|| format!("truncated ELF file ({len} bytes at {at})"))
}

/// N little-endian bytes at `at`.
fn le<const N: usize>(b: &[u8], at: u64) -> Result<[u8; N]> {
    Ok(slice(b, at, N as u64)?.try_into()?)
}

fn u16_at(b: &[u8], at: u64) -> Result<u16> {
    Ok(u16::from_le_bytes(le(b, at)?))
}
fn u32_at(b: &[u8], at: u64) -> Result<u32> {
    Ok(u32::from_le_bytes(le(b, at)?))
}
fn u64_at(b: &[u8], at: u64) -> Result<u64> {
    Ok(u64::from_le_bytes(le(b, at)?))
}

/// The linkage of a 64-bit little-endian ELF executable (x86_64).
pub(super) fn linkage(b: &[u8]) -> Result<Linkage> {
    if b.get(..4) != Some(b"\x7fELF".as_slice()) {
        bail!("not an ELF file");
    }
    if b.get(4..6) != Some([2u8, 1].as_slice()) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let (phoff, phentsize, phnum) = (u64_at(b, 0x20)?, u16_at(b, 0x36)?, u16_at(b, 0x38)?);
    let mut out = Linkage {
        interpreter: None,
        needed: 0,
        pie: u16_at(b, 0x10)? == ET_DYN,
    };
    for i in 0..u64::from(phnum) {
        // Saturating: a bogus offset reads past the end, an error, never an overflow.
        let ph = phoff.saturating_add(i * u64::from(phentsize));
        let kind = u32_at(b, ph)?;
        let (offset, size) = (
            u64_at(b, ph.saturating_add(8))?,
            u64_at(b, ph.saturating_add(32))?,
        );
        match kind {
            PT_INTERP => {
                let path = String::from_utf8_lossy(slice(b, offset, size)?);
                out.interpreter = Some(path.trim_end_matches('\0').to_owned());
            }
            PT_DYNAMIC => {
                let end = offset.checked_add(size).context("offset overflows")?;
                for entry in (offset..end).step_by(16) {
                    match u64_at(b, entry)? {
                        DT_NULL => break,
                        DT_NEEDED => out.needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF header with `phdrs` (type, offset, size) at 64, and `tail` after them.
    fn elf(e_type: u16, phdrs: &[(u32, u64, u64)], tail: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x10..0x12].copy_from_slice(&e_type.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for &(kind, offset, size) in phdrs {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[32..40].copy_from_slice(&size.to_le_bytes());
            b.extend_from_slice(&ph);
        }
        b.extend_from_slice(tail);
        b
    }

    fn dynamic(entries: &[(u64, u64)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(tag, val)| tag.to_le_bytes().into_iter().chain(val.to_le_bytes()))
            .collect()
    }

    #[test]
    fn a_static_pie_has_a_dynamic_section_without_libraries() {
        let tail = dynamic(&[(0x1e, 8), (DT_NULL, 0), (DT_NEEDED, 1)]);
        let b = elf(ET_DYN, &[(1, 0, 64), (PT_DYNAMIC, 64 + 2 * 56, 48)], &tail);
        let l = linkage(&b).unwrap();
        assert!(l.is_static() && l.pie, "{l:?}");
    }

    #[test]
    fn a_needed_library_or_a_loader_makes_it_dynamic() {
        let tail = dynamic(&[(DT_NEEDED, 1), (DT_NULL, 0)]);
        let b = elf(ET_DYN, &[(PT_DYNAMIC, 64 + 56, 32)], &tail);
        assert_eq!(linkage(&b).unwrap().needed, 1);
        let b = elf(2, &[(PT_INTERP, 64 + 56, 5)], b"/ld\0\0");
        let l = linkage(&b).unwrap();
        assert_eq!(l.interpreter.as_deref(), Some("/ld"));
        assert!(!l.is_static() && !l.pie);
    }

    #[test]
    fn this_test_binary_is_dynamic() {
        let b = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let l = linkage(&b).unwrap();
        assert!(
            !l.is_static() && l.interpreter.is_some() && l.needed > 0,
            "{l:?}"
        );
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        assert!(linkage(b"#!/bin/sh\n").is_err());
        let b = elf(ET_DYN, &[(PT_DYNAMIC, 64 + 56, 32)], &[]);
        assert!(linkage(&b).unwrap_err().to_string().contains("truncated"));
        let mut b = elf(ET_DYN, &[], &[]);
        b[0x38] = 9;
        assert!(linkage(&b).is_err());
        b[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(linkage(&b).is_err());
        assert!(linkage(&b[..20]).is_err());
    }
}
