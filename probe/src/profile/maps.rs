//! A process's executable mappings (`/proc/<pid>/maps`) and its memory
//! (`/proc/<pid>/mem`), as the symbolizers need them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// One file-backed executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Device of the file (`major << 32 | minor`) and its inode: the file's
    /// identity across processes.
    pub dev: u64,
    pub inode: u64,
    /// The path as the process sees it (its own mount namespace).
    pub path: String,
    pub executable: bool,
}

/// A file's identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
}

impl Mapping {
    pub fn file(&self) -> FileKey {
        FileKey {
            dev: self.dev,
            inode: self.inode,
        }
    }

    /// The file, reachable from the probe's mount namespace through the
    /// process's root (containers have their own).
    pub fn host_path(&self, pid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/root{}", self.path))
    }
}

/// Parses `/proc/<pid>/maps` text: file-backed mappings only (anonymous
/// memory, `[heap]`, `[stack]` have no symbols; `[vdso]` is skipped too).
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.collect::<Vec<_>>().join(" ");
        // Files, and the vDSO (clock_gettime and friends run there).
        if !path.starts_with('/') && path != "[vdso]" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset), Ok(inode)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        if inode == 0 && path != "[vdso]" {
            continue;
        }
        let dev = dev
            .split_once(':')
            .and_then(|(major, minor)| {
                Some(
                    u64::from_str_radix(major, 16).ok()? << 32
                        | u64::from_str_radix(minor, 16).ok()?,
                )
            })
            .unwrap_or(0);
        out.push(Mapping {
            start,
            end,
            offset,
            dev,
            inode,
            path: path.trim_end_matches(" (deleted)").to_owned(),
            executable: perms.as_bytes().get(2) == Some(&b'x'),
        });
    }
    out
}

/// Reads `/proc/<pid>/maps`.
pub fn read_maps(pid: u32) -> std::io::Result<Vec<Mapping>> {
    Ok(parse_maps(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// The executable mapping containing `addr`.
pub fn mapping_at(maps: &[Mapping], addr: u64) -> Option<&Mapping> {
    maps.iter()
        .find(|m| m.executable && m.start <= addr && addr < m.end)
}

/// Reads another process's memory through `/proc/<pid>/mem` (needs
/// CAP_SYS_PTRACE over it, which the probe has).
#[derive(Debug)]
pub struct Memory {
    file: File,
}

impl Memory {
    pub fn open(pid: u32) -> std::io::Result<Self> {
        Ok(Self {
            file: File::open(format!("/proc/{pid}/mem"))?,
        })
    }

    /// Fills `buf` from `addr`; fails if any byte is unmapped.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, addr)
    }

    pub fn read_u64(&self, addr: u64) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_backed_mappings_are_parsed_and_the_rest_skipped() {
        let text = "\
00400000-00401000 r--p 00000000 fd:01 1234 /usr/bin/python3.11
00401000-00800000 r-xp 00001000 fd:01 1234 /usr/bin/python3.11
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7f0000100000-7f0000200000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
7f0000300000-7f0000301000 r-xp 00000000 fd:01 77 /tmp/my lib.so (deleted)
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 5, "{maps:?}");
        assert!(!maps[0].executable && maps[1].executable);
        assert_eq!(maps[1].offset, 0x1000);
        assert_eq!(maps[3].path, "[vdso]");
        assert_eq!(maps[4].path, "/tmp/my lib.so", "spaces kept, (deleted) cut");
        let hit = mapping_at(&maps, 0x7f0000150000).expect("libc text");
        assert_eq!(hit.inode, 99);
        assert!(mapping_at(&maps, 0x00400500).is_none(), "not executable");
    }
}
