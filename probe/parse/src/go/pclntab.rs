//! Function names and entry points from the Go runtime's own function table
//! (`.gopclntab`), which survives `-ldflags=-s -w`: a stripped Go binary has
//! no `.symtab`, but the runtime needs this table for stack traces, so it is
//! always there.
//!
//! Layout (Go ≥ 1.18; magic `0xfffffff0` for 1.18–1.19, `0xfffffff1` for
//! 1.20+): a header of 8 bytes + 8 pointer-sized words (nfunc, nfiles,
//! textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset,
//! pclnOffset), then at `pclnOffset` the functab: `nfunc + 1` pairs of
//! `(entryoff u32, funcoff u32)` sorted by entry, the last one the end of
//! text. Each `_func` at `pclnOffset + funcoff` starts with
//! `(entryoff u32, nameoff i32)`; names are NUL-terminated in funcnametab.

use std::collections::HashMap;

/// Why `.gopclntab` could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclntabError {
    #[error("section .gopclntab is truncated at byte {0}")]
    Truncated(usize),
    #[error(
        "section .gopclntab has magic {0:#x}; only Go 1.18 and newer tables (0xfffffff0/0xfffffff1) are understood"
    )]
    UnknownMagic(u32),
    #[error("section .gopclntab declares a pointer size of {0} bytes; only 4 and 8 exist")]
    PointerSize(u8),
}

/// A function's virtual address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncRange {
    pub start: u64,
    pub end: u64,
}

/// Looks up the functions named in `wanted`; others are skipped so a large
/// binary's tens of thousands of names are not all materialised.
/// `text_start` is used when the header's textStart is zero.
///
/// The table comes from the workload's binary, so every offset in it is
/// untrusted: reads are bounds-checked, offsets added with overflow checks,
/// and a name is compared only against the wanted names (never scanned to
/// its NUL), which keeps the work linear in the size of the table.
pub fn find_functions(
    data: &[u8],
    text_start: u64,
    wanted: &[&str],
) -> Result<HashMap<String, FuncRange>, PclntabError> {
    let at = |base: usize, add: usize| base.checked_add(add).ok_or(PclntabError::Truncated(base));
    let u32_at = |off: usize| -> Result<u32, PclntabError> {
        off.checked_add(4)
            .and_then(|end| data.get(off..end))
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or(PclntabError::Truncated(off))
    };
    let magic = u32_at(0)?;
    if magic != 0xffff_fff0 && magic != 0xffff_fff1 {
        return Err(PclntabError::UnknownMagic(magic));
    }
    let ptr_size = *data.get(7).ok_or(PclntabError::Truncated(7))?;
    if ptr_size != 4 && ptr_size != 8 {
        return Err(PclntabError::PointerSize(ptr_size));
    }
    let ptr_size = usize::from(ptr_size);
    let word = |index: usize| -> Result<u64, PclntabError> {
        let off = 8 + index * ptr_size;
        let bytes = data
            .get(off..off + ptr_size)
            .ok_or(PclntabError::Truncated(off))?;
        Ok(match bytes.try_into() {
            Ok(eight) => u64::from_le_bytes(eight),
            Err(_) => u64::from(u32::from_le_bytes(bytes.try_into().expect("4 bytes"))),
        })
    };
    // Offsets past the end of the section fail at their first read; as
    // `usize` they must at least fit the address space.
    let offset = |index: usize| -> Result<usize, PclntabError> {
        let value = word(index)?;
        usize::try_from(value).map_err(|_| PclntabError::Truncated(8 + index * ptr_size))
    };
    let nfunc = offset(0)?;
    let header_text = word(2)?;
    let funcname_off = offset(3)?;
    let pcln_off = offset(7)?;
    let base = if header_text != 0 {
        header_text
    } else {
        text_start
    };

    let mut found = HashMap::new();
    for i in 0..nfunc {
        // Each entry reads 8 bytes further into the section, so a lying
        // `nfunc` ends at the section's end with `Truncated`.
        let entry = at(
            pcln_off,
            i.checked_mul(8).ok_or(PclntabError::Truncated(pcln_off))?,
        )?;
        let entry_off = u32_at(entry)?;
        let func_off = u32_at(at(entry, 4)?)? as usize;
        let next_entry = u32_at(at(entry, 8)?)?;
        let name_off = u32_at(at(at(pcln_off, func_off)?, 4)?)? as usize;
        let name_start = at(funcname_off, name_off)?;
        let name_bytes = data
            .get(name_start..)
            .ok_or(PclntabError::Truncated(name_start))?;
        let is_named = |w: &&&str| {
            name_bytes.starts_with(w.as_bytes()) && name_bytes.get(w.len()).is_none_or(|b| *b == 0)
        };
        if let Some(w) = wanted.iter().find(is_named) {
            let (Some(start), Some(end)) = (
                base.checked_add(u64::from(entry_off)),
                base.checked_add(u64::from(next_entry)),
            ) else {
                continue;
            };
            if end <= start {
                // Entries are sorted; a function that ends before it
                // starts is a corrupt table, not a function to probe.
                continue;
            }
            found.insert((*w).to_owned(), FuncRange { start, end });
            if found.len() == wanted.len() {
                break;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 1.20-style table with two functions.
    fn table() -> Vec<u8> {
        let mut t = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        let words: [u64; 8] = [2, 0, 0x40_0000, 72, 0, 0, 0, 88];
        for w in words {
            t.extend_from_slice(&w.to_le_bytes());
        }
        // funcnametab at 72: "main.a\0main.bb\0" (16 bytes with padding)
        t.extend_from_slice(b"main.a\0main.bb\0\0");
        // functab at 88: (0x100, 24) (0x180, 32) (0x200 end, 0)
        for (e, f) in [(0x100u32, 24u32), (0x180, 32), (0x200, 0)] {
            t.extend_from_slice(&e.to_le_bytes());
            t.extend_from_slice(&f.to_le_bytes());
        }
        // _func records at pcln+24 and pcln+32: (entryoff, nameoff)
        for (e, n) in [(0x100u32, 0u32), (0x180, 7)] {
            t.extend_from_slice(&e.to_le_bytes());
            t.extend_from_slice(&n.to_le_bytes());
        }
        t
    }

    #[test]
    fn wanted_functions_get_their_address_ranges() {
        let found =
            find_functions(&table(), 0, &["main.bb", "main.missing"]).expect("table parses");
        assert_eq!(
            found.get("main.bb"),
            Some(&FuncRange {
                start: 0x40_0180,
                end: 0x40_0200
            })
        );
        assert!(
            !found.contains_key("main.missing"),
            "absent names are not invented"
        );
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn an_odd_pointer_size_is_an_error_not_a_panic() {
        // Found by fuzzing: a pointer size of 3 took the 4-byte path and
        // panicked converting a 3-byte slice.
        for size in [0u8, 1, 3, 5, 7, 16, 255] {
            let mut t = table();
            t[7] = size;
            assert_eq!(
                find_functions(&t, 0, &["main.a"]),
                Err(PclntabError::PointerSize(size)),
                "pointer size {size}"
            );
        }
    }

    #[test]
    fn offsets_that_overflow_are_truncation_errors() {
        let mut t = table();
        // pclnOffset (word 7) = u64::MAX: the functab lies beyond any section.
        t[8 + 7 * 8..8 + 8 * 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            find_functions(&t, 0, &["main.a"]),
            Err(PclntabError::Truncated(_))
        ));
        // funcnameOffset = u64::MAX - 3: adding a name offset overflows.
        let mut t = table();
        t[8 + 3 * 8..8 + 4 * 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(find_functions(&t, 0, &["main.a"]).is_err());
        // textStart near u64::MAX: addresses overflow, the function is skipped.
        let mut t = table();
        t[8 + 2 * 8..8 + 3 * 8].copy_from_slice(&(u64::MAX - 0x100).to_le_bytes());
        assert_eq!(find_functions(&t, 0, &["main.bb"]), Ok(HashMap::new()));
    }

    #[test]
    fn a_wanted_name_that_is_a_prefix_of_another_does_not_match() {
        let t = table();
        // "main.b" is a prefix of "main.bb": names compare whole.
        assert_eq!(find_functions(&t, 0, &["main.b"]), Ok(HashMap::new()));
    }

    #[test]
    fn unknown_magic_is_refused() {
        let mut t = table();
        t[0] = 0xfb;
        assert_eq!(
            find_functions(&t, 0, &["main.a"]),
            Err(PclntabError::UnknownMagic(0xffff_fffb))
        );
    }
}
