//! CPython support: where a process's interpreter keeps its threads and
//! frames (for the kernel's frame walk), and code objects to names, files
//! and lines (for user space).
//!
//! Layouts come from `python_offsets.json`, generated from the installed
//! interpreters' headers by `gen-offsets.sh` (3.10–3.13). From 3.13 on the
//! interpreter publishes its own layout in `_PyRuntime.debug_offsets`
//! (`_Py_DebugOffsets`, cookie `xdebugpy`): it is read from the process and
//! wins over the table, so patch releases that move a field still work.
//!
//! The interpreter is found by the `_PyRuntime` symbol in the executable or
//! in a mapped `libpython3.X.so` (Debian's static `/usr/bin/python3.11`
//! exports it too); its version from the exported `Py_Version` (3.11+) or
//! the file name (3.10).

mod lines;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use ferrotel_probe_ebpf::profile::{
    NO_OFFSET, PY_FRAME_READ, PY_KEY_PTHREAD, PY_LASTI_INT, PyOffsets,
};
use serde::Deserialize;

use super::elf::{ElfImage, bytes_at, find_symbol};
use super::maps::{Mapping, Memory};

pub use lines::{LineTable, line_for};

/// Struct offsets of one CPython minor version (x86-64); `None`: the
/// version has no such field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyLayout {
    pub runtime_interpreters_head: u64,
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    pub tstate_thread_key: u64,
    pub thread_key_is_pthread: bool,
    pub tstate_frame: u64,
    pub cframe_current_frame: Option<u64>,
    pub frame_code: u64,
    pub frame_previous: u64,
    pub frame_instr: u64,
    pub frame_owner: Option<u64>,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: Option<u64>,
    pub code_adaptive: Option<u64>,
    pub code_linetable: u64,
    pub code_firstlineno: u64,
    pub object_type: u64,
    pub bytes_size: u64,
    pub bytes_data: u64,
    pub unicode_length: u64,
    pub unicode_state: u64,
    pub unicode_ascii_data: u64,
    pub unicode_compact_data: u64,
}

#[derive(Deserialize)]
struct RawLayout(BTreeMap<String, i64>);

impl RawLayout {
    fn layout(&self, version: &str) -> Result<PyLayout, String> {
        let get = |k: &str| -> Result<i64, String> {
            self.0
                .get(k)
                .copied()
                .ok_or_else(|| format!("python_offsets.json {version} lacks {k}"))
        };
        let req = |k: &str| get(k).map(|v| v as u64);
        let opt = |k: &str| get(k).map(|v| (v >= 0).then_some(v as u64));
        Ok(PyLayout {
            runtime_interpreters_head: req("runtime_interpreters_head")?,
            interp_threads_head: req("interp_threads_head")?,
            tstate_next: req("tstate_next")?,
            tstate_thread_key: req("tstate_thread_key")?,
            thread_key_is_pthread: get("thread_key_is_pthread")? != 0,
            tstate_frame: req("tstate_frame")?,
            cframe_current_frame: opt("cframe_current_frame")?,
            frame_code: req("frame_code")?,
            frame_previous: req("frame_previous")?,
            frame_instr: req("frame_instr")?,
            frame_owner: opt("frame_owner")?,
            code_filename: req("code_filename")?,
            code_name: req("code_name")?,
            code_qualname: opt("code_qualname")?,
            code_adaptive: opt("code_adaptive")?,
            code_linetable: req("code_linetable")?,
            code_firstlineno: req("code_firstlineno")?,
            object_type: req("object_type")?,
            bytes_size: req("bytes_size")?,
            bytes_data: req("bytes_data")?,
            unicode_length: req("unicode_length")?,
            unicode_state: req("unicode_state")?,
            unicode_ascii_data: req("unicode_ascii_data")?,
            unicode_compact_data: req("unicode_compact_data")?,
        })
    }
}

/// The generated table, by `"3.X"`.
pub fn table() -> &'static BTreeMap<String, PyLayout> {
    static TABLE: LazyLock<BTreeMap<String, PyLayout>> = LazyLock::new(|| {
        let raw: BTreeMap<String, RawLayout> =
            serde_json::from_str(include_str!("python_offsets.json"))
                .expect("python_offsets.json is valid JSON");
        raw.iter()
            .map(|(v, r)| {
                (
                    v.clone(),
                    r.layout(v).expect("python_offsets.json is complete"),
                )
            })
            .collect()
    });
    &TABLE
}

/// Why a Python process cannot be profiled at the Python level (it is still
/// sampled, with native frames only).
#[derive(Debug, thiserror::Error)]
pub enum PyError {
    #[error(
        "no mapped file exports _PyRuntime (not a CPython process, or an embedded interpreter without symbols)"
    )]
    NoRuntime,
    #[error("CPython {0}.{1} is not supported; Python-level frames need 3.10 to 3.13")]
    Unsupported(u32, u32),
    #[error("cannot tell the CPython version of {0}")]
    UnknownVersion(String),
    #[error("_Py_DebugOffsets of the process are unreadable or not for 3.13 ({0})")]
    DebugOffsets(String),
    #[error("a frame field lies beyond the {PY_FRAME_READ} bytes the kernel reads per frame")]
    FrameTooLarge,
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Elf {
        path: String,
        #[source]
        source: object::Error,
    },
}

/// Where a process's layout came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutSource {
    Table,
    DebugOffsets,
}

/// What the file holding the interpreter tells, independent of the process.
#[derive(Clone, Debug)]
pub struct PyModule {
    pub version: (u32, u32),
    /// Link-time addresses.
    pub runtime: u64,
    pub code_type: Option<u64>,
}

impl PyModule {
    /// Reads the interpreter facts from an ELF file's bytes; `None` if it
    /// does not define `_PyRuntime`.
    pub fn from_elf(path: &str, data: &[u8]) -> Result<Option<Self>, PyError> {
        let file = object::File::parse(data).map_err(|source| PyError::Elf {
            path: path.to_owned(),
            source,
        })?;
        let Some((runtime, _)) = find_symbol(&file, "_PyRuntime") else {
            return Ok(None);
        };
        let version = find_symbol(&file, "Py_Version")
            .and_then(|(addr, _)| bytes_at(&file, addr, 4))
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .map(|hex| ((hex >> 24) & 0xff, (hex >> 16) & 0xff))
            .or_else(|| version_from_name(path))
            .ok_or_else(|| PyError::UnknownVersion(path.to_owned()))?;
        Ok(Some(Self {
            version,
            runtime,
            code_type: find_symbol(&file, "PyCode_Type").map(|(a, _)| a),
        }))
    }
}

/// `python3.10`, `libpython3.10.so.1.0` -> (3, 10).
fn version_from_name(path: &str) -> Option<(u32, u32)> {
    let name = path.rsplit('/').next()?;
    let at = name.find("python3.")? + "python3.".len();
    let minor: String = name[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((3, minor.parse().ok()?))
}

/// One interpreter process, ready to profile.
#[derive(Clone, Debug)]
pub struct PyProcess {
    pub version: (u32, u32),
    pub layout: PyLayout,
    pub source: LayoutSource,
    /// Runtime addresses in the process.
    pub runtime: u64,
    pub code_type: Option<u64>,
}

impl PyProcess {
    /// Resolves `module` (mapped at `mapping` with `image`'s segments) in
    /// the process whose memory is `mem`.
    pub fn resolve(
        module: &PyModule,
        image: &ElfImage,
        mapping: &Mapping,
        mem: &Memory,
    ) -> Result<Self, PyError> {
        let (major, minor) = module.version;
        let bias = image.bias(mapping).ok_or(PyError::NoRuntime)?;
        let runtime = module.runtime.wrapping_add(bias);
        let code_type = module.code_type.map(|a| a.wrapping_add(bias));
        let key = format!("{major}.{minor}");
        let (layout, source) = match (major, minor) {
            (3, 10..=12) => (
                table()
                    .get(&key)
                    .cloned()
                    .ok_or(PyError::Unsupported(major, minor))?,
                LayoutSource::Table,
            ),
            (3, 13) => (debug_offsets(mem, runtime)?, LayoutSource::DebugOffsets),
            _ => return Err(PyError::Unsupported(major, minor)),
        };
        let frame_fields = [
            Some(layout.frame_code),
            Some(layout.frame_previous),
            Some(layout.frame_instr),
            layout.frame_owner,
        ];
        if frame_fields
            .iter()
            .flatten()
            .any(|&f| f > u64::from(PY_FRAME_READ) - 8)
        {
            return Err(PyError::FrameTooLarge);
        }
        Ok(Self {
            version: module.version,
            layout,
            source,
            runtime,
            code_type,
        })
    }

    /// The kernel's view: what `profile_procs` gets for this process.
    pub fn offsets(&self) -> PyOffsets {
        let l = &self.layout;
        let o = |v: Option<u64>| v.map_or(NO_OFFSET, |v| v as u32);
        let mut flags = 0;
        if self.version == (3, 10) {
            flags |= PY_LASTI_INT;
        }
        if l.thread_key_is_pthread {
            flags |= PY_KEY_PTHREAD;
        }
        PyOffsets {
            interp_head: self.runtime + l.runtime_interpreters_head,
            interp_threads_head: l.interp_threads_head as u32,
            tstate_next: l.tstate_next as u32,
            tstate_thread_key: l.tstate_thread_key as u32,
            tstate_frame: l.tstate_frame as u32,
            cframe_current: o(l.cframe_current_frame),
            frame_code: l.frame_code as u32,
            frame_previous: l.frame_previous as u32,
            frame_instr: l.frame_instr as u32,
            frame_owner: o(l.frame_owner),
            flags,
        }
    }

    /// Reads the code object at `addr`.
    pub fn read_code(&self, mem: &Memory, addr: u64) -> Result<CodeInfo, std::io::Error> {
        let l = &self.layout;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        if let Some(code_type) = self.code_type
            && mem.read_u64(addr + l.object_type)? != code_type
        {
            return Err(bad("not a code object"));
        }
        let name_ptr = mem.read_u64(addr + l.code_qualname.unwrap_or(l.code_name))?;
        let file_ptr = mem.read_u64(addr + l.code_filename)?;
        let mut first = [0u8; 4];
        mem.read(addr + l.code_firstlineno, &mut first)?;
        let table_ptr = mem.read_u64(addr + l.code_linetable)?;
        let table_len = mem.read_u64(table_ptr + l.bytes_size)?;
        if table_len > 1 << 20 {
            return Err(bad("line table too large"));
        }
        let mut table = vec![0u8; table_len as usize];
        mem.read(table_ptr + l.bytes_data, &mut table)?;
        Ok(CodeInfo {
            name: self.read_str(mem, name_ptr)?,
            file: self.read_str(mem, file_ptr)?,
            first_line: i32::from_le_bytes(first),
            lines: if self.version >= (3, 11) {
                LineTable::Locations(table)
            } else {
                LineTable::Pairs(table)
            },
        })
    }

    /// Reads a `str` object (compact ASCII, Latin-1, UCS-2 or UCS-4).
    fn read_str(&self, mem: &Memory, addr: u64) -> Result<String, std::io::Error> {
        let l = &self.layout;
        let len = mem.read_u64(addr + l.unicode_length)?.min(4096) as usize;
        let mut state = [0u8; 4];
        mem.read(addr + l.unicode_state, &mut state)?;
        let state = u32::from_le_bytes(state);
        let kind = ((state >> 2) & 7) as usize;
        let compact = (state >> 5) & 1 == 1;
        let ascii = (state >> 6) & 1 == 1;
        if !compact || !matches!(kind, 1 | 2 | 4) {
            return Ok("<str>".to_owned());
        }
        let data = addr
            + if ascii {
                l.unicode_ascii_data
            } else {
                l.unicode_compact_data
            };
        let mut bytes = vec![0u8; len * kind];
        mem.read(data, &mut bytes)?;
        Ok(match kind {
            1 => bytes.iter().map(|&b| char::from(b)).collect(),
            2 => char::decode_utf16(
                bytes
                    .as_chunks::<2>()
                    .0
                    .iter()
                    .map(|c| u16::from_le_bytes(*c)),
            )
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
            _ => bytes
                .as_chunks::<4>()
                .0
                .iter()
                .map(|c| {
                    char::from_u32(u32::from_le_bytes(*c)).unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        })
    }

    /// Walks the frame chain of thread state `tstate` from user space, as
    /// the kernel program does (innermost first, C-stack shims skipped).
    /// Not used for profiles: by the time user space reads them, the
    /// thread's frames have moved on; it exists for the measurement that
    /// chose the kernel walk (docs/probe-profiling.md).
    pub fn walk_user(&self, mem: &Memory, tstate: u64, max: usize) -> Vec<(u64, u64)> {
        let l = &self.layout;
        let mut frames = Vec::new();
        let Ok(mut frame) = mem.read_u64(tstate + l.tstate_frame) else {
            return frames;
        };
        if let Some(current) = l.cframe_current_frame
            && frame != 0
        {
            frame = mem.read_u64(frame + current).unwrap_or(0);
        }
        let mut buf = [0u8; PY_FRAME_READ as usize];
        let word = |buf: &[u8], off: u64| {
            u64::from_le_bytes(
                buf[off as usize..off as usize + 8]
                    .try_into()
                    .expect("8 bytes"),
            )
        };
        for _ in 0..max + 8 {
            if frame == 0 || frames.len() >= max || mem.read(frame, &mut buf).is_err() {
                break;
            }
            let code = word(&buf, l.frame_code);
            let mut instr = word(&buf, l.frame_instr);
            if self.version == (3, 10) {
                instr &= 0xffff_ffff;
            }
            let shim = l.frame_owner.is_some_and(|o| buf[o as usize] == 3);
            if !shim && code != 0 {
                frames.push((code, instr));
            }
            frame = word(&buf, l.frame_previous);
        }
        frames
    }

    /// The instruction (code unit) index of a frame as the kernel saw it.
    pub fn instruction_index(&self, code: u64, instr: u64) -> i64 {
        match self.layout.code_adaptive {
            // 3.10: f_lasti, already an index.
            None => instr as u32 as i32 as i64,
            Some(adaptive) => (instr as i64 - (code + adaptive) as i64) / 2,
        }
    }
}

/// A code object, as much as a frame needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// `co_qualname` (3.11+) or `co_name`.
    pub name: String,
    pub file: String,
    pub first_line: i32,
    pub lines: LineTable,
}

/// Words of `_Py_DebugOffsets` read (3.13 layout: 73 u64 fields).
const DEBUG_OFFSETS_WORDS: usize = 73;

/// The 3.13 layout from the interpreter's own `_Py_DebugOffsets`, which
/// starts `_PyRuntime`.
fn debug_offsets(mem: &Memory, runtime: u64) -> Result<PyLayout, PyError> {
    let mut raw = vec![0u8; DEBUG_OFFSETS_WORDS * 8];
    mem.read(runtime, &mut raw)
        .map_err(|e| PyError::DebugOffsets(e.to_string()))?;
    let w = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    if &raw[..8] != b"xdebugpy" {
        return Err(PyError::DebugOffsets("no xdebugpy cookie".into()));
    }
    let version = w(1);
    if (version >> 16) != 0x030d {
        return Err(PyError::DebugOffsets(format!("version {version:#x}")));
    }
    if w(2) != 0 {
        return Err(PyError::DebugOffsets("free-threaded build".into()));
    }
    let ascii = w(70);
    Ok(PyLayout {
        runtime_interpreters_head: w(5),
        interp_threads_head: w(9),
        tstate_next: w(21),
        tstate_thread_key: w(25),
        thread_key_is_pthread: false,
        tstate_frame: w(23),
        cframe_current_frame: None,
        frame_code: w(30),
        frame_previous: w(29),
        frame_instr: w(31),
        frame_owner: Some(w(33)),
        code_filename: w(35),
        code_name: w(36),
        code_qualname: Some(w(37)),
        code_adaptive: Some(w(43)),
        code_linetable: w(38),
        code_firstlineno: w(39),
        object_type: w(45),
        bytes_size: w(65),
        bytes_data: w(66),
        unicode_length: w(69),
        unicode_state: w(68),
        unicode_ascii_data: ascii,
        // PyCompactUnicodeObject adds utf8_length and utf8 to PyASCIIObject.
        unicode_compact_data: ascii + 16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_3_10_to_3_13_within_the_kernel_frame_read() {
        for v in ["3.10", "3.11", "3.12", "3.13"] {
            let l = table()
                .get(v)
                .unwrap_or_else(|| panic!("{v} in python_offsets.json"));
            for f in [
                Some(l.frame_code),
                Some(l.frame_previous),
                Some(l.frame_instr),
                l.frame_owner,
            ]
            .into_iter()
            .flatten()
            {
                assert!(f <= u64::from(PY_FRAME_READ) - 8, "{v}: frame field at {f}");
            }
        }
        assert!(
            table()["3.10"].thread_key_is_pthread,
            "3.10 has no native_thread_id"
        );
        assert_eq!(
            table()["3.11"].frame_owner,
            None,
            "3.11 has no C-stack shims"
        );
    }

    #[test]
    fn versions_come_from_file_names_when_py_version_is_not_exported() {
        assert_eq!(
            version_from_name("/usr/lib/libpython3.10.so.1.0"),
            Some((3, 10))
        );
        assert_eq!(version_from_name("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(version_from_name("/usr/bin/python"), None);
    }
}
