//! Go symbolization: a PC of a Go binary to its source frames (function,
//! file, line, inlined calls) through the runtime's own tables, which
//! stripped binaries keep (see [`crate::go::pclntab`]). Inline trees
//! live past `moduledata.gofunc`, outside `.gopclntab`: the module data is
//! found by its first word, the address of `.gopclntab`.

use object::{Object, ObjectSection, SectionKind};

use super::elf::{ElfImage, find_symbol};
use crate::go::pclntab::{Pclntab, PclntabError, SourceFrame};

/// Index of `gofunc` in `runtime.moduledata`, in words (Go >= 1.20: the
/// header pointer, six slices, findfunctab/minpc/maxpc, text..enoptrbss,
/// covctrs/ecovctrs, end/gcdata/gcbss, types/etypes, rodata).
const MODULEDATA_GOFUNC_WORD: usize = 40;
/// Most bytes of inline-tree data kept per binary.
const GOFUNC_CAP: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GoSymError {
    #[error("no .gopclntab section")]
    NoPclntab,
    #[error(transparent)]
    Pclntab(#[from] PclntabError),
    #[error("unreadable section: {0}")]
    Elf(#[from] object::Error),
}

/// The symbol tables of one Go binary, owned (the file's bytes are dropped).
#[derive(Debug)]
pub struct GoSymtab {
    pclntab: Vec<u8>,
    text_start: u64,
    /// Bytes from `moduledata.gofunc` on (empty: inlined frames not expanded).
    gofunc: Vec<u8>,
    /// Offset of the `g` pointer from the thread pointer (FS base).
    pub tls_g: i64,
}

impl GoSymtab {
    pub fn parse(data: &[u8], image: &ElfImage) -> Result<Self, GoSymError> {
        let file = object::File::parse(data)?;
        let section = file
            .section_by_name(".gopclntab")
            .ok_or(GoSymError::NoPclntab)?;
        let pclntab = section.data()?.to_vec();
        let pclntab_addr = section.address();
        let text_start = file
            .section_by_name(".text")
            .map(|s| s.address())
            .unwrap_or(0);
        Pclntab::parse(&pclntab, text_start)?;
        let gofunc = find_gofunc(&file, pclntab_addr).unwrap_or_default();
        // Without a TLS segment (internal linking) Go points FS just past
        // m.tls[0] and keeps g at -8(FS); with one (cgo, external linking)
        // g is runtime.tlsg inside the executable's TLS block, which ends at
        // the thread pointer.
        let tls_g = match image.tls {
            None => -8,
            Some(tls) => {
                let block = tls.memsz.div_ceil(tls.align) * tls.align;
                let tlsg = find_symbol(&file, "runtime.tlsg").map_or(0, |(a, _)| a);
                tlsg as i64 - block as i64
            }
        };
        Ok(Self {
            pclntab,
            text_start,
            gofunc,
            tls_g,
        })
    }

    fn table(&self) -> Pclntab<'_> {
        Pclntab::parse(&self.pclntab, self.text_start).expect("validated in parse")
    }

    /// Source frames at link-time address `pc`, innermost first; `None` if
    /// `pc` is not Go code of this binary.
    pub fn frames(&self, pc: u64) -> Option<Vec<SourceFrame>> {
        let table = self.table();
        let func = table.func_at(pc)?;
        Some(table.frames(&func, pc, &self.gofunc))
    }

    /// Whether inlined calls can be expanded (the module data was found).
    pub fn has_inline_trees(&self) -> bool {
        !self.gofunc.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        self.pclntab.len() + self.gofunc.len()
    }
}

/// The bytes at `moduledata.gofunc`: the module data is the writable word
/// whose value is the address of `.gopclntab` (its `pcHeader`).
fn find_gofunc(file: &object::File<'_>, pclntab_addr: u64) -> Option<Vec<u8>> {
    let needle = pclntab_addr.to_le_bytes();
    for section in file.sections() {
        // runtime.firstmoduledata lives in writable data (.noptrdata).
        if section.kind() != SectionKind::Data {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        for (i, word) in data.as_chunks::<8>().0.iter().enumerate() {
            if *word != needle {
                continue;
            }
            let at = (i + MODULEDATA_GOFUNC_WORD) * 8;
            let Some(gofunc) = data
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            else {
                continue;
            };
            let holder = file
                .sections()
                .find(|s| s.address() <= gofunc && gofunc < s.address() + s.size())?;
            let bytes = holder.data().ok()?;
            let lo = usize::try_from(gofunc - holder.address()).ok()?;
            let hi = bytes.len().min(lo + GOFUNC_CAP);
            return Some(bytes.get(lo..hi)?.to_vec());
        }
    }
    None
}
