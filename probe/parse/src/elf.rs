//! Reading a workload's executable with bounded memory.
//!
//! The executables the probe inspects (`/proc/<pid>/exe`) belong to the
//! workloads, so their headers are untrusted input: a section header may
//! claim gigabytes, and the ELF reader allocates what a header claims
//! before it reads. Everything here keeps the probe's memory independent of
//! what a binary says about itself:
//!
//! - the file is never read whole: [`BoundedElf`] reads the ranges the
//!   analysis asks for, through `object`'s read cache, and counts every
//!   byte against a [`ReadBudget`];
//! - before `object` parses the file (which reads the section table and the
//!   symbol and string tables eagerly), [`check_eager_tables`] refuses
//!   tables larger than the budget;
//! - callers check a section's size with [`ReadBudget::check`] before they
//!   read it.

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

use object::read::{ReadCache, ReadCacheOps, ReadRef};

/// Largest executable the probe inspects; larger ones are refused before
/// anything is read.
pub const MAX_EXECUTABLE_BYTES: u64 = 1 << 30;
/// Bytes one inspection may read from an executable, all ranges together.
/// Far above what a Go binary needs (symbol table, a few functions, the
/// compressed DWARF), far below the probe's memory limit.
pub const DEFAULT_READ_BUDGET: u64 = 192 << 20;
/// Program headers and section headers: a real executable has tens.
const MAX_HEADERS: u32 = 1 << 16;

/// Why an executable was not read.
#[derive(Debug, thiserror::Error)]
pub enum ElfLimitError {
    #[error("failed to open {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, above the {limit}-byte cap on inspected executables")]
    FileTooLarge {
        path: std::path::PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{what} of {size} bytes exceeds the {remaining} bytes left of the read budget")]
    OverBudget {
        what: String,
        size: u64,
        remaining: u64,
    },
    #[error("the ELF header declares {count} {what}; at most {MAX_HEADERS} are read")]
    TooManyHeaders { what: &'static str, count: u32 },
    #[error("not a 64-bit little-endian ELF file: {0}")]
    NotElf64(&'static str),
}

/// Bytes left to read, shared by the reader and the analysis.
#[derive(Clone, Debug)]
pub struct ReadBudget {
    remaining: Rc<Cell<u64>>,
}

impl ReadBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            remaining: Rc::new(Cell::new(limit)),
        }
    }

    pub fn remaining(&self) -> u64 {
        self.remaining.get()
    }

    /// Fails if reading `size` bytes of `what` would exceed the budget.
    /// Call it before asking `object` for data whose size the file states.
    pub fn check(&self, what: impl Into<String>, size: u64) -> Result<(), ElfLimitError> {
        if size > self.remaining.get() {
            return Err(ElfLimitError::OverBudget {
                what: what.into(),
                size,
                remaining: self.remaining.get(),
            });
        }
        Ok(())
    }

    fn spend(&self, size: u64) -> bool {
        match self.remaining.get().checked_sub(size) {
            Some(left) => {
                self.remaining.set(left);
                true
            }
            None => {
                self.remaining.set(0);
                false
            }
        }
    }
}

/// A file whose reads are counted against a [`ReadBudget`]; a read past it
/// fails (and so does the parse that asked for it).
#[derive(Debug)]
pub struct Budgeted<T> {
    inner: T,
    budget: ReadBudget,
}

impl<T: Read + Seek> ReadCacheOps for Budgeted<T> {
    fn len(&mut self) -> Result<u64, ()> {
        self.inner.seek(SeekFrom::End(0)).map_err(|_| ())
    }

    fn seek(&mut self, pos: u64) -> Result<u64, ()> {
        self.inner.seek(SeekFrom::Start(pos)).map_err(|_| ())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        if !self.budget.spend(buf.len() as u64) {
            return Err(());
        }
        self.inner.read(buf).map_err(|_| ())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ()> {
        if !self.budget.spend(buf.len() as u64) {
            return Err(());
        }
        self.inner.read_exact(buf).map_err(|_| ())
    }
}

/// An executable opened for bounded reading.
#[derive(Debug)]
pub struct BoundedElf {
    cache: ReadCache<Budgeted<File>>,
    pub budget: ReadBudget,
    pub size: u64,
}

impl BoundedElf {
    /// Opens `path` if it is at most [`MAX_EXECUTABLE_BYTES`]; reads nothing yet.
    pub fn open(path: &Path, read_budget: u64) -> Result<Self, ElfLimitError> {
        let file = File::open(path).map_err(|source| ElfLimitError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::from_file(file, path, read_budget)
    }

    /// [`open`](Self::open) of a file opened already (`path` names it in
    /// errors): the caller opened it while the path was valid, e.g. a
    /// `/proc/<pid>/map_files/` entry of a process that may exit before
    /// the file is read.
    pub fn from_file(file: File, path: &Path, read_budget: u64) -> Result<Self, ElfLimitError> {
        let open_err = |source| ElfLimitError::Open {
            path: path.to_owned(),
            source,
        };
        let size = file.metadata().map_err(open_err)?.len();
        if size > MAX_EXECUTABLE_BYTES {
            return Err(ElfLimitError::FileTooLarge {
                path: path.to_owned(),
                size,
                limit: MAX_EXECUTABLE_BYTES,
            });
        }
        let budget = ReadBudget::new(read_budget);
        Ok(Self {
            cache: ReadCache::new(Budgeted {
                inner: file,
                budget: budget.clone(),
            }),
            budget,
            size,
        })
    }

    /// The reader to hand to `object` (after [`check_eager_tables`]).
    pub fn data(&self) -> &ReadCache<Budgeted<File>> {
        &self.cache
    }
}

/// Refuses files whose header tables, symbol tables or string tables are
/// larger than the budget allows, before `object::File::parse` allocates
/// them. Only 64-bit little-endian files pass (the probe reads amd64 only).
pub fn check_eager_tables<'data, R: ReadRef<'data>>(
    data: R,
    budget: &ReadBudget,
) -> Result<(), ElfLimitError> {
    use object::Endianness;
    use object::elf::{FileHeader64, SHT_DYNSYM, SHT_STRTAB, SHT_SYMTAB};
    use object::read::elf::{FileHeader, SectionHeader};

    let header = FileHeader64::<Endianness>::parse(data)
        .map_err(|_| ElfLimitError::NotElf64("no ELF64 header"))?;
    let endian = header
        .endian()
        .map_err(|_| ElfLimitError::NotElf64("unknown byte order"))?;
    if endian != Endianness::Little {
        return Err(ElfLimitError::NotElf64("big-endian"));
    }
    let phnum = header
        .phnum(endian, data)
        .map_err(|_| ElfLimitError::NotElf64("unreadable program header count"))?;
    if phnum > MAX_HEADERS {
        return Err(ElfLimitError::TooManyHeaders {
            what: "program headers",
            count: phnum,
        });
    }
    let shnum = header
        .shnum(endian, data)
        .map_err(|_| ElfLimitError::NotElf64("unreadable section count"))?;
    if shnum > MAX_HEADERS {
        return Err(ElfLimitError::TooManyHeaders {
            what: "sections",
            count: shnum,
        });
    }
    let sections = header
        .section_headers(endian, data)
        .map_err(|_| ElfLimitError::NotElf64("unreadable section headers"))?;
    let mut eager = 0u64;
    for section in sections {
        if matches!(
            section.sh_type(endian),
            SHT_SYMTAB | SHT_DYNSYM | SHT_STRTAB
        ) {
            eager = eager.saturating_add(section.sh_size(endian));
        }
    }
    budget.check("symbol and string tables", eager)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_budget_fail_and_are_counted() {
        let mut file = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut file, &[7u8; 4096]).expect("write");
        let budget = ReadBudget::new(1000);
        let cache = ReadCache::new(Budgeted {
            inner: file,
            budget: budget.clone(),
        });
        let data = &cache;
        assert_eq!(data.read_bytes_at(0, 600).map(<[u8]>::len), Ok(600));
        assert_eq!(budget.remaining(), 400);
        assert!(
            data.read_bytes_at(600, 600).is_err(),
            "a read beyond the budget fails"
        );
        assert!(budget.check("x", 1).is_err(), "the budget is spent");
    }

    #[test]
    fn this_test_binary_passes_the_table_check_and_a_tiny_budget_refuses_it() {
        let exe = std::env::current_exe().expect("current exe");
        let elf = BoundedElf::open(&exe, DEFAULT_READ_BUDGET).expect("opens");
        check_eager_tables(elf.data(), &elf.budget).expect("a real binary's tables fit");
        let tiny = BoundedElf::open(&exe, 64 << 10).expect("opens");
        assert!(matches!(
            check_eager_tables(tiny.data(), &tiny.budget),
            Err(ElfLimitError::OverBudget { .. })
        ));
    }

    #[test]
    fn non_elf_bytes_are_refused_by_the_table_check() {
        let budget = ReadBudget::new(1 << 20);
        assert!(check_eager_tables(&b"#!/bin/sh\necho hi\n"[..], &budget).is_err());
        assert!(check_eager_tables(&[0u8; 64][..], &budget).is_err());
    }
}
