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
//!
//! For symbolization (the profiler) the rest of `_func` matters: `pcfile`
//! and `pcln` are offsets into pctab of pc-value tables (zig-zag varint
//! value deltas and pc deltas, as the runtime's `pcvalue` reads them), file
//! numbers index the function's compilation unit in cutab, then filetab;
//! `npcdata` u32 pc-value table offsets and `nfuncdata` u32 offsets past
//! `moduledata.gofunc` follow the 44-byte record. Inlining (Go >= 1.20):
//! pcdata 2 gives, per pc, an index into the inline tree (funcdata 3), whose
//! 16-byte entries name the inlined function and the pc of its call site in
//! the outer function; file and line at each pc are the innermost
//! function's. Go 1.18/1.19 trees have another layout: their inlined frames
//! are not expanded.

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

/// The parsed header of a `.gopclntab` section, borrowing its bytes: the
/// function table, names, files and pc-value tables, enough to turn a PC
/// into function, file and line (what the profiler needs) and to find
/// functions by name (what the probe attach needs).
#[derive(Clone, Copy, Debug)]
pub struct Pclntab<'a> {
    data: &'a [u8],
    nfunc: usize,
    /// Virtual address the functab's entry offsets are relative to.
    base: u64,
    funcname_off: usize,
    cu_off: usize,
    filetab_off: usize,
    pctab_off: usize,
    pcln_off: usize,
    /// Go >= 1.20 layout (magic 0xfffffff1): inline trees are understood.
    go120: bool,
}

/// One function's `_func` record, as far as symbolization needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuncInfo {
    /// Index in the function table.
    pub index: usize,
    pub entry: u64,
    pub end: u64,
    name_off: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    pub start_line: i32,
    nfuncdata: u8,
    /// Byte offset of the `_func` record in the section.
    func_off: usize,
}

/// `abi.PCDATA_InlTreeIndex` and `abi.FUNCDATA_InlTree`.
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u8 = 3;
/// `runtime.inlinedCall` (Go >= 1.20): funcID u8, pad [3]u8, nameOff i32,
/// parentPc i32, startLine i32.
const INLINED_CALL_SIZE: usize = 16;

/// One source-level frame at a PC: a function, possibly inlined into the
/// next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
    /// This frame was inlined into its caller (the next frame) by the compiler.
    pub inlined: bool,
}

impl<'a> Pclntab<'a> {
    /// Parses the header. `text_start` is used when the header's textStart
    /// is zero.
    pub fn parse(data: &'a [u8], text_start: u64) -> Result<Self, PclntabError> {
        let magic = u32_at(data, 0)?;
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
            Ok(if ptr_size == 8 {
                u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
            } else {
                u64::from(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
            })
        };
        let header_text = word(2)?;
        Ok(Self {
            data,
            nfunc: offset(word(0)?),
            base: if header_text != 0 {
                header_text
            } else {
                text_start
            },
            funcname_off: offset(word(3)?),
            cu_off: offset(word(4)?),
            filetab_off: offset(word(5)?),
            pctab_off: offset(word(6)?),
            pcln_off: offset(word(7)?),
            go120: magic == 0xffff_fff1,
        })
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    fn entry_of(&self, i: usize) -> Result<u64, PclntabError> {
        let entry = u32_at(self.data, add(self.pcln_off, i.saturating_mul(8)))?;
        Ok(self.base.saturating_add(u64::from(entry)))
    }

    fn func_off(&self, i: usize) -> Result<usize, PclntabError> {
        let at = add(add(self.pcln_off, i.saturating_mul(8)), 4);
        Ok(add(self.pcln_off, u32_at(self.data, at)? as usize))
    }

    /// The `i`-th function of the table.
    pub fn func(&self, i: usize) -> Result<FuncInfo, PclntabError> {
        let func_off = self.func_off(i)?;
        let field = |n: usize| u32_at(self.data, add(func_off, n * 4));
        Ok(FuncInfo {
            index: i,
            entry: self.entry_of(i)?,
            end: self.entry_of(i + 1)?,
            name_off: field(1)?,
            pcfile: field(5)?,
            pcln: field(6)?,
            npcdata: field(7)?,
            cu_offset: field(8)?,
            start_line: field(9)? as i32,
            nfuncdata: *self
                .data
                .get(add(func_off, 43))
                .ok_or(PclntabError::Truncated(add(func_off, 43)))?,
            func_off,
        })
    }

    /// The function containing `pc`, by binary search of the table.
    pub fn func_at(&self, pc: u64) -> Option<FuncInfo> {
        if self.nfunc == 0 || pc < self.entry_of(0).ok()? || pc >= self.entry_of(self.nfunc).ok()? {
            return None;
        }
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.entry_of(mid).ok()? <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.func(lo).ok()
    }

    /// A NUL-terminated string of funcnametab.
    pub fn name_at(&self, name_off: u32) -> Option<&'a str> {
        cstr(self.data, add(self.funcname_off, name_off as usize))
    }

    pub fn func_name(&self, func: &FuncInfo) -> Option<&'a str> {
        self.name_at(func.name_off)
    }

    fn file_name(&self, func: &FuncInfo, fileno: i32) -> Option<&'a str> {
        if fileno < 0 {
            return None;
        }
        let cu = u32_at(
            self.data,
            add(
                self.cu_off,
                add(func.cu_offset as usize, fileno as usize).saturating_mul(4),
            ),
        )
        .ok()?;
        if cu == u32::MAX {
            return None;
        }
        cstr(self.data, add(self.filetab_off, cu as usize))
    }

    /// The value of the pc-value table at `table` (an offset into pctab) at
    /// `pc`, as the runtime's `pcvalue` computes it; `None` past the table.
    pub fn pc_value(&self, table: u32, func: &FuncInfo, pc: u64) -> Option<i32> {
        if table == 0 {
            return None;
        }
        let mut p = self.data.get(add(self.pctab_off, table as usize)..)?;
        let mut cur_pc = func.entry;
        let mut val: i32 = -1;
        let mut first = true;
        loop {
            let (uvdelta, n) = varint(p)?;
            if uvdelta == 0 && !first {
                return None;
            }
            first = false;
            p = p.get(n..)?;
            val = val.wrapping_add((-((uvdelta & 1) as i32)) ^ ((uvdelta >> 1) as i32));
            let (pcdelta, n) = varint(p)?;
            p = p.get(n..)?;
            cur_pc = cur_pc.checked_add(u64::from(pcdelta))?; // PCQuantum is 1 on amd64
            if pc < cur_pc {
                return Some(val);
            }
        }
    }

    fn pcdata_table(&self, func: &FuncInfo, index: u32) -> Option<u32> {
        if index >= func.npcdata {
            return None;
        }
        u32_at(self.data, add(func.func_off, 44 + index as usize * 4)).ok()
    }

    /// Offset past `go:func.*` of the function's funcdata `index`.
    fn funcdata_off(&self, func: &FuncInfo, index: u8) -> Option<u32> {
        if index >= func.nfuncdata {
            return None;
        }
        let off = u32_at(
            self.data,
            add(
                func.func_off,
                add(44, (func.npcdata as usize).saturating_mul(4)) + index as usize * 4,
            ),
        )
        .ok()?;
        (off != u32::MAX).then_some(off)
    }

    /// The source frames at `pc`, innermost first: the inlined calls the
    /// compiler folded into the function (Go >= 1.20 inline trees), then
    /// the function itself. `gofunc` are the bytes at `moduledata.gofunc`
    /// (where inline trees live), or empty to skip inlined frames.
    pub fn frames(&self, func: &FuncInfo, pc: u64, gofunc: &[u8]) -> Vec<SourceFrame> {
        let mut frames = Vec::new();
        let mut at = pc;
        let tree = self
            .funcdata_off(func, FUNCDATA_INL_TREE)
            .filter(|_| self.go120)
            .and_then(|off| gofunc.get(off as usize..));
        let inl_table = self.pcdata_table(func, PCDATA_INL_TREE_INDEX);
        // A chain deeper than this is a corrupt table, not real inlining.
        for _ in 0..64 {
            let line = self.pc_value(func.pcln, func, at).unwrap_or(0).max(0) as u32;
            let file = self
                .pc_value(func.pcfile, func, at)
                .and_then(|f| self.file_name(func, f))
                .unwrap_or("?")
                .to_owned();
            let index = match (tree, inl_table) {
                (Some(_), Some(table)) => self.pc_value(table, func, at).unwrap_or(-1),
                _ => -1,
            };
            let call = (index >= 0)
                .then(|| {
                    tree?
                        .get((index as usize).checked_mul(INLINED_CALL_SIZE)?..)?
                        .get(..INLINED_CALL_SIZE)
                })
                .flatten();
            let Some(call) = call else {
                frames.push(SourceFrame {
                    function: self.func_name(func).unwrap_or("?").to_owned(),
                    file,
                    line,
                    inlined: false,
                });
                return frames;
            };
            let name_off = u32::from_le_bytes(call[4..8].try_into().expect("4 bytes"));
            let parent_pc = i32::from_le_bytes(call[8..12].try_into().expect("4 bytes"));
            frames.push(SourceFrame {
                function: self.name_at(name_off).unwrap_or("?").to_owned(),
                file,
                line,
                inlined: true,
            });
            at = func.entry.wrapping_add(parent_pc as i64 as u64);
        }
        frames
    }
}

/// Offsets in the table are the workload's: they add without overflowing,
/// and a sum past the address space reads as out of bounds.
fn add(a: usize, b: usize) -> usize {
    a.saturating_add(b)
}

/// A header word as a section offset; a value past the address space reads
/// as out of bounds at its first use.
fn offset(word: u64) -> usize {
    usize::try_from(word).unwrap_or(usize::MAX)
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, PclntabError> {
    off.checked_add(4)
        .and_then(|end| data.get(off..end))
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or(PclntabError::Truncated(off))
}

fn cstr(data: &[u8], off: usize) -> Option<&str> {
    let bytes = data.get(off..)?;
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..len]).ok()
}

/// The runtime's `readvarint`: 7 bits per byte, little-endian.
fn varint(p: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    let mut shift = 0u32;
    for (i, b) in p.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
        shift += 7;
    }
    None
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
    let table = Pclntab::parse(data, text_start)?;
    let mut found = HashMap::new();
    for i in 0..table.len() {
        // Each entry reads 8 bytes further into the section, so a lying
        // `nfunc` ends at the section's end with `Truncated`.
        let name_off = u32_at(data, add(table.func_off(i)?, 4))?;
        let name_start = add(table.funcname_off, name_off as usize);
        let name_bytes = data
            .get(name_start..)
            .ok_or(PclntabError::Truncated(name_start))?;
        let is_named = |w: &&&str| {
            name_bytes.starts_with(w.as_bytes()) && name_bytes.get(w.len()).is_none_or(|b| *b == 0)
        };
        if let Some(w) = wanted.iter().find(is_named) {
            let (start, end) = (table.entry_of(i)?, table.entry_of(i + 1)?);
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
