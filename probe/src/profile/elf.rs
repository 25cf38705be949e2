//! What the profiler keeps of an ELF file: its loadable segments (to turn
//! a runtime address into a link-time one), its function symbols (native
//! frames) and its TLS segment (where Go keeps `g`). The file's bytes are
//! not kept.

use object::elf::{PT_LOAD, PT_TLS};
use object::read::elf::{ElfFile64, ProgramHeader as _};
use object::{Endianness, Object, ObjectSymbol, SymbolKind};

use super::maps::Mapping;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: u64,
    end: u64,
    name_at: u32,
    name_len: u32,
}

/// The TLS segment: size and alignment of the initial thread-local block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsSegment {
    pub memsz: u64,
    pub align: u64,
}

#[derive(Debug)]
pub struct ElfImage {
    segments: Vec<Segment>,
    symbols: Vec<Symbol>,
    names: String,
    pub tls: Option<TlsSegment>,
}

/// x86-64 page size: mappings start on page boundaries.
const PAGE: u64 = 4096;

impl ElfImage {
    pub fn parse(data: &[u8]) -> Result<Self, object::Error> {
        let elf = ElfFile64::<Endianness>::parse(data)?;
        let endian = elf.endian();
        let mut segments = Vec::new();
        let mut tls = None;
        for ph in elf.elf_program_headers() {
            match ph.p_type(endian) {
                PT_LOAD => segments.push(Segment {
                    offset: ph.p_offset(endian),
                    vaddr: ph.p_vaddr(endian),
                    filesz: ph.p_filesz(endian),
                }),
                PT_TLS => {
                    tls = Some(TlsSegment {
                        memsz: ph.p_memsz(endian),
                        align: ph.p_align(endian).max(1),
                    })
                }
                _ => {}
            }
        }
        let mut names = String::new();
        let mut symbols = Vec::new();
        for symbol in elf.symbols().chain(elf.dynamic_symbols()) {
            if symbol.kind() != SymbolKind::Text || symbol.address() == 0 {
                continue;
            }
            let Ok(name) = symbol.name() else { continue };
            if name.is_empty() {
                continue;
            }
            let name_at = names.len() as u32;
            names.push_str(name);
            symbols.push(Symbol {
                start: symbol.address(),
                end: symbol.address() + symbol.size(),
                name_at,
                name_len: name.len() as u32,
            });
        }
        symbols.sort_unstable_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
        symbols.dedup_by_key(|s| s.start);
        names.shrink_to_fit();
        symbols.shrink_to_fit();
        Ok(Self {
            segments,
            symbols,
            names,
            tls,
        })
    }

    /// Link-time address of file offset `offset` (a mapping's start). A
    /// segment that does not start on a page boundary shares its first page
    /// with the previous segment's tail, and the loader maps that page once
    /// per segment: the segment whose first page is exactly this one is the
    /// mapping's, not the one whose bytes also lie there.
    fn offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        let to_vaddr = |s: &Segment| offset.wrapping_sub(s.offset).wrapping_add(s.vaddr);
        self.segments
            .iter()
            .find(|s| s.offset / PAGE * PAGE == offset)
            .or_else(|| {
                self.segments.iter().find(|s| {
                    s.offset / PAGE * PAGE <= offset && offset < s.offset + s.filesz.max(1)
                })
            })
            .map(to_vaddr)
    }

    /// What to add to a link-time address to get the runtime address in the
    /// process that maps this file at `mapping`.
    pub fn bias(&self, mapping: &Mapping) -> Option<u64> {
        let vaddr = self.offset_to_vaddr(mapping.offset)?;
        Some(mapping.start.wrapping_sub(vaddr))
    }

    /// The function symbol containing link-time address `vaddr`, and its start.
    pub fn symbol_at(&self, vaddr: u64) -> Option<(&str, u64)> {
        let i = self.symbols.partition_point(|s| s.start <= vaddr);
        let symbol = self.symbols.get(i.checked_sub(1)?)?;
        // Size 0 (hand-written assembly): accept, up to the next symbol.
        if symbol.end > symbol.start && vaddr >= symbol.end {
            return None;
        }
        let name = self
            .names
            .get(symbol.name_at as usize..(symbol.name_at + symbol.name_len) as usize)?;
        Some((name, symbol.start))
    }

    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// Approximate heap bytes held (for the cache's accounting).
    pub fn heap_bytes(&self) -> usize {
        self.names.len() + self.symbols.len() * std::mem::size_of::<Symbol>()
    }
}

/// Link-time address of symbol `name` of any kind (data included), from
/// `.symtab` or `.dynsym`. Setup-time only: a linear scan.
pub fn find_symbol(file: &object::File<'_>, name: &str) -> Option<(u64, u64)> {
    file.symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(name) && s.address() != 0)
        .map(|s| (s.address(), s.size()))
}

/// The bytes at link-time address `vaddr` in the file (`len` of them, from
/// the section that holds them).
pub fn bytes_at<'a>(file: &'a object::File<'_>, vaddr: u64, len: u64) -> Option<&'a [u8]> {
    use object::ObjectSection;
    let section = file
        .sections()
        .find(|s| s.address() <= vaddr && vaddr + len <= s.address() + s.size())?;
    let data = section.data().ok()?;
    let lo = usize::try_from(vaddr - section.address()).ok()?;
    data.get(lo..lo + usize::try_from(len).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_binary_itself_resolves_its_own_functions() {
        // This test binary is an ELF with symbols: a runtime address of one
        // of its functions maps back to that function's name.
        let exe = std::fs::read("/proc/self/exe").expect("read own executable");
        let image = ElfImage::parse(&exe).expect("own executable parses");
        assert!(image.symbol_count() > 100);
        let maps = super::super::maps::read_maps(std::process::id()).expect("own maps");
        let addr = the_probe_binary_itself_resolves_its_own_functions as *const () as u64;
        let mapping = super::super::maps::mapping_at(&maps, addr).expect("own text is mapped");
        let bias = image.bias(mapping).expect("mapping lies in a segment");
        let (name, start) = image
            .symbol_at(addr.wrapping_sub(bias))
            .expect("own function has a symbol");
        assert!(
            name.contains("the_probe_binary_itself_resolves_its_own_functions"),
            "resolved {name}"
        );
        assert!(start <= addr.wrapping_sub(bias));
    }
}
