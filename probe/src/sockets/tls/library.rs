//! Which OpenSSL a process really runs: the files it maps executable
//! (`/proc/<pid>/maps`), each identified by device and inode (containers
//! bring their own libssl; two paths may be one file, one path may be two
//! files over time), and in each, where the probed `SSL_*` functions are.
//!
//! A file qualifies if it defines `SSL_read` and `SSL_write`:
//! - exported ([`Provider::Exported`]): `libssl.so`, found by its symbols,
//!   not its name (NSS ships an unrelated `libssl3.so`);
//! - in its symbol table only ([`Provider::SymbolTable`]): OpenSSL linked
//!   statically into an extension module or the interpreter, not stripped.
//!
//! A process whose TLS connections get no plaintext (no qualifying file) is
//! explained by [`untraced_reason`]: a file that holds OpenSSL's TLS code
//! (the source paths its error reports keep) without the functions is
//! OpenSSL linked in statically and stripped; no such file, a TLS library
//! other than OpenSSL (GnuTLS, NSS, rustls, ...).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

use ferrotel_parse::elf::{BoundedElf, DEFAULT_READ_BUDGET, ElfLimitError, check_eager_tables};
use ferrotel_probe_ebpf::contract::tls;
use object::{Object, ObjectSection, ObjectSymbol};

/// A file as the kernel identifies it (device and inode): the profiler's
/// reading of `/proc/<pid>/maps` is the one the probe has.
pub use crate::profile::maps::FileKey;

/// A file a process maps executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    pub key: FileKey,
    /// The path in the process's mount namespace (for logs).
    pub path: String,
    /// `/proc/<pid>/map_files/<start>-<end>`: opens exactly the mapped
    /// inode, in whatever mount namespace, even if the path was replaced or
    /// deleted.
    pub open_path: PathBuf,
}

/// The distinct files process `pid` maps executable, in map order.
pub fn executable_files(pid: u32) -> std::io::Result<Vec<MappedFile>> {
    Ok(executable_files_in(
        pid,
        &crate::profile::maps::read_maps(pid)?,
    ))
}

/// [`executable_files`] of `maps`, the mappings of process `pid`.
fn executable_files_in(pid: u32, maps: &[crate::profile::maps::Mapping]) -> Vec<MappedFile> {
    let mut seen = BTreeSet::new();
    maps.iter()
        // Files only: the vDSO has no inode, and no OpenSSL.
        .filter(|m| m.executable && m.inode != 0 && m.path.starts_with('/'))
        .filter(|m| seen.insert(m.file()))
        .map(|m| MappedFile {
            key: m.file(),
            path: m.path.clone(),
            // The kernel names these entries `%lx-%lx`: no zero padding.
            open_path: PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)),
        })
        .collect()
}

/// How a file provides the probed OpenSSL functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// In its dynamic symbol table (a shared libssl).
    Exported,
    /// In its symbol table only (statically linked, not stripped).
    SymbolTable,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Exported => "exported",
            Provider::SymbolTable => "symbol_table",
        }
    }
}

/// Where to attach in one file: `(function, file offset)` for each of
/// [`tls::FUNCTIONS`] the file defines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sites {
    pub provider: Provider,
    pub offsets: Vec<(&'static str, u64)>,
}

/// Why a file could not be read as a TLS library.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("cannot read {path}: {source}")]
    Limit {
        path: PathBuf,
        #[source]
        source: ElfLimitError,
    },
    #[error("{path} is not an ELF file the probe can read: {source}")]
    Elf {
        path: PathBuf,
        #[source]
        source: object::read::Error,
    },
}

/// The largest file searched for OpenSSL's TLS code (interpreters with
/// everything linked in are tens of MiB); it is read in chunks.
const MAX_SCAN_BYTES: u64 = 512 << 20;

/// The probe sites of the file at `path`, if it defines `SSL_read` and
/// `SSL_write`. Reads the headers and symbol tables, not the whole file,
/// within the read budget of every binary the probe inspects (the file is
/// the workload's: its headers may claim anything).
pub fn sites(path: &std::path::Path) -> Result<Option<Sites>, LibraryError> {
    let file = File::open(path).map_err(|source| LibraryError::Limit {
        path: path.to_owned(),
        source: ElfLimitError::Open {
            path: path.to_owned(),
            source,
        },
    })?;
    sites_of_file(file, path)
}

/// [`sites`] of `file`, opened already (`path` names it in errors).
pub fn sites_of_file(file: File, path: &std::path::Path) -> Result<Option<Sites>, LibraryError> {
    let limit = |source| LibraryError::Limit {
        path: path.to_owned(),
        source,
    };
    let bounded = BoundedElf::from_file(file, path, DEFAULT_READ_BUDGET).map_err(limit)?;
    check_eager_tables(bounded.data(), &bounded.budget).map_err(limit)?;
    let elf = object::File::parse(bounded.data()).map_err(|source| LibraryError::Elf {
        path: path.to_owned(),
        source,
    })?;
    Ok(sites_in(&elf))
}

/// [`sites`] of a parsed file: the exported functions, else the symbol
/// table's.
pub fn sites_in<'data, R: object::ReadRef<'data>>(elf: &object::File<'data, R>) -> Option<Sites> {
    if let Some(offsets) = probed_functions(elf, elf.dynamic_symbols()) {
        return Some(Sites {
            provider: Provider::Exported,
            offsets,
        });
    }
    probed_functions(elf, elf.symbols()).map(|offsets| Sites {
        provider: Provider::SymbolTable,
        offsets,
    })
}

/// The file offsets of the probed functions `symbols` define, if a read
/// and a write function are among them.
fn probed_functions<'data, R: object::ReadRef<'data>>(
    elf: &object::File<'data, R>,
    symbols: impl Iterator<Item = impl ObjectSymbol<'data>>,
) -> Option<Vec<(&'static str, u64)>> {
    let mut found: Vec<(&'static str, u64)> = Vec::new();
    for symbol in symbols {
        if !symbol.is_definition() || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let Some((function, _, _)) = tls::FUNCTIONS.iter().find(|(f, _, _)| *f == name) else {
            continue;
        };
        if found.iter().any(|(f, _)| f == function) {
            continue;
        }
        if let Some(offset) = file_offset(elf, symbol.address()) {
            found.push((function, offset));
        }
    }
    let has = |f: &str| found.iter().any(|(g, _)| *g == f);
    let reads = has("SSL_read") || has("SSL_read_ex");
    let writes = has("SSL_write") || has("SSL_write_ex");
    (reads && writes).then_some(found)
}

/// The file offset of virtual address `address`: uprobes are placed by
/// file offset. From the executable section that holds it.
fn file_offset<'data>(
    elf: &object::File<'data, impl object::ReadRef<'data>>,
    address: u64,
) -> Option<u64> {
    elf.sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .find(|s| s.address() <= address && address < s.address() + s.size())
        .and_then(|s| {
            let (start, _) = s.file_range()?;
            aya::programs::uprobe::UProbeAttachLocation::from_virtual_address(
                address,
                s.address(),
                start,
            )
            .ok()
        })
        .map(|location| match location {
            aya::programs::uprobe::UProbeAttachLocation::AbsoluteOffset(offset) => offset,
            _ => unreachable!("from_virtual_address gives an absolute offset"),
        })
}

/// Why a process's TLS traffic gets no plaintext: the `reason` label of
/// `ferrotel_probe_tls_untraced_processes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Untraced {
    /// `static_libssl`: `file` holds OpenSSL's TLS code but neither
    /// exports its functions nor names them in a symbol table.
    Static { file: String },
    /// `no_libssl`: no mapped file holds OpenSSL's TLS code: the process
    /// speaks TLS through another library.
    NoLibrary,
}

impl Untraced {
    pub fn reason(&self) -> &'static str {
        match self {
            Untraced::Static { .. } => "static_libssl",
            Untraced::NoLibrary => "no_libssl",
        }
    }
}

/// The source directory of OpenSSL's TLS state machine (1.1.0 and
/// later), whose file names OpenSSL keeps in the binary for its error
/// reports: in libssl and in anything that links it in, stripped or not;
/// not in libcrypto alone, nor in other TLS libraries.
const OPENSSL_TLS_MARK: &[u8] = b"ssl/statem/";

/// Whether the file at `path` holds OpenSSL's TLS code: its first
/// [`MAX_SCAN_BYTES`], searched 1 MiB at a time (a mark cut by a chunk's
/// end is found in the next, which starts with the cut part).
pub fn holds_openssl(path: &std::path::Path) -> std::io::Result<bool> {
    holds_openssl_in(File::open(path)?)
}

/// [`holds_openssl`] of `file`, opened already.
pub fn holds_openssl_in(mut file: File) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _};
    // A duplicated descriptor shares its offset with the first.
    file.rewind()?;
    const CHUNK: usize = 1 << 20;
    // A literal regex searches with memchr's SIMD substring search.
    let mark = std::str::from_utf8(OPENSSL_TLS_MARK).expect("the mark is ASCII");
    let finder = regex::bytes::Regex::new(&regex::escape(mark)).expect("an escaped literal");
    let mut file = file.take(MAX_SCAN_BYTES);
    let mut buf = vec![0u8; CHUNK + OPENSSL_TLS_MARK.len()];
    let mut kept = 0;
    loop {
        let n = file.read(&mut buf[kept..])?;
        if n == 0 {
            return Ok(false);
        }
        let end = kept + n;
        if finder.is_match(&buf[..end]) {
            return Ok(true);
        }
        kept = (OPENSSL_TLS_MARK.len() - 1).min(end);
        buf.copy_within(end - kept..end, 0);
    }
}

/// Explains a process with TLS connections and no probed TLS library, from
/// its mapped files (`holds` answers [`holds_openssl`] for one).
pub fn untraced_reason(
    files: &[MappedFile],
    mut holds: impl FnMut(&MappedFile) -> bool,
) -> Untraced {
    files
        .iter()
        .find(|file| holds(file))
        .map_or(Untraced::NoLibrary, |file| Untraced::Static {
            file: file.path.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_files_are_distinct_files_opened_by_their_exact_mapping() {
        let maps = crate::profile::maps::parse_maps(concat!(
            "00400000-00452000 r-xp 00000000 fd:01 42 /app/static_client\n",
            "7f1c2a400000-7f1c2a4b0000 r-xp 00035000 fd:01 1311000 /usr/lib/libssl.so.3\n",
            "7f1c2a4b0000-7f1c2a4c0000 r--p 000e5000 fd:01 1311000 /usr/lib/libssl.so.3\n",
            "7f1c2a600000-7f1c2a6b0000 r-xp 00035000 fd:01 1311000 /usr/lib/libssl.so.3\n",
            "7ffd5e5f0000-7ffd5e611000 rw-p 00000000 00:00 0 [stack]\n",
            "7ffd5e7f0000-7ffd5e7f2000 r-xp 00000000 00:00 0 [vdso]\n",
        ));
        let files = executable_files_in(7, &maps);
        let got: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.open_path.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("/app/static_client", "/proc/7/map_files/400000-452000"),
                (
                    "/usr/lib/libssl.so.3",
                    "/proc/7/map_files/7f1c2a400000-7f1c2a4b0000"
                ),
            ],
            "one entry per executable file, named as map_files names it"
        );
    }

    #[test]
    fn the_openssl_mark_is_found_across_chunk_boundaries_and_nowhere_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let at = |name: &str, offset: usize| {
            let mut bytes = vec![b'x'; offset];
            bytes.extend_from_slice(OPENSSL_TLS_MARK);
            bytes.extend_from_slice(&[0; 64]);
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        // Every offset around the first chunk's end (wherever the reads
        // fall, some of these marks straddle it), and far in.
        for offset in (0..40).map(|d| (1 << 20) - 16 + d).chain([0, 3 << 20]) {
            let path = at("mark", offset);
            assert!(holds_openssl(&path).expect("read"), "mark at {offset}");
        }
        let mut cut = OPENSSL_TLS_MARK.to_vec();
        cut.pop();
        let without = dir.path().join("without");
        std::fs::write(&without, [vec![b'x'; (1 << 20) - 3], cut].concat()).expect("write");
        assert!(!holds_openssl(&without).expect("read"));
    }

    #[test]
    fn the_untraced_reason_names_the_file_holding_openssl() {
        let file = |path: &str, inode| MappedFile {
            key: FileKey {
                dev: 8 << 32 | 1,
                inode,
            },
            path: path.to_owned(),
            open_path: PathBuf::from(path),
        };
        let files = [file("/usr/bin/python3", 1), file("/app/_static_tls.so", 2)];
        assert_eq!(
            untraced_reason(&files, |f| f.key.inode == 2),
            Untraced::Static {
                file: "/app/_static_tls.so".to_owned()
            }
        );
        assert_eq!(untraced_reason(&files, |_| false), Untraced::NoLibrary);
        assert_eq!(Untraced::NoLibrary.reason(), "no_libssl");
    }
}
