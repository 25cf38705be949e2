//! Which language a process runs, so that each probe claims only its own.
//!
//! - Go: the executable is an ELF file with a `.go.buildinfo` section (every
//!   Go toolchain since 1.13 writes it, stripped binaries included).
//! - Python: the executable's name starts with `python` (`python3.11`,
//!   Debian's static interpreter), or the process maps `libpython*.so`
//!   (pyenv builds, uWSGI and other embedders).
//!
//! We open `/proc/<pid>/exe` rather than the path it names: a container's
//! executable lives in another mount namespace, and the link opens the very
//! inode the process runs even from the host. Results are cached per inode,
//! because a node runs many processes of few executables.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ferrotel_api::probe_config::Language;
use ferrotel_parse::elf::{DEFAULT_READ_BUDGET, ReadBudget, check_eager_tables};
pub use ferrotel_parse::procfs::maps::{is_python_executable_name, maps_lines_load_libpython};

/// Cache entries kept before the cache is reset; a node has far fewer
/// distinct executables than this.
const MAX_CACHED_EXECUTABLES: usize = 4096;

/// Detects languages of processes, caching ELF inspection per executable inode.
#[derive(Debug, Default)]
pub struct LanguageDetector {
    by_inode: HashMap<(u64, u64), Option<Language>>,
}

impl LanguageDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The language of process `pid`, or `None` when it is neither Go nor
    /// Python or has exited.
    pub fn detect(&mut self, proc_root: &Path, pid: u32) -> Option<Language> {
        let dir = proc_root.join(pid.to_string());
        let exe = dir.join("exe");
        if let Ok(target) = std::fs::read_link(&exe)
            && is_python_executable_name(&target)
        {
            return Some(Language::Python);
        }
        let metadata = std::fs::metadata(&exe).ok()?;
        let key = (metadata.dev(), metadata.ino());
        let from_elf = match self.by_inode.get(&key) {
            Some(cached) => *cached,
            None => {
                let detected = File::open(&exe).ok().and_then(elf_language);
                if self.by_inode.len() >= MAX_CACHED_EXECUTABLES {
                    self.by_inode.clear();
                }
                self.by_inode.insert(key, detected);
                detected
            }
        };
        if from_elf.is_some() {
            return from_elf;
        }
        // Embedded interpreters: only the memory map tells. Read line by
        // line: a process's map can have hundreds of thousands of entries.
        let maps = File::open(dir.join("maps")).ok()?;
        maps_lines_load_libpython(std::io::BufReader::new(maps)).then_some(Language::Python)
    }
}

/// Inspects an ELF file without reading it whole: Go binaries are tens of
/// megabytes, and only the section headers matter.
pub fn elf_language(file: File) -> Option<Language> {
    use object::{Object, ObjectSection};
    let cache = object::read::ReadCache::new(file);
    // The executable is the workload's: refuse symbol tables larger than
    // the analysis budget before the parser allocates them.
    let budget = ReadBudget::new(DEFAULT_READ_BUDGET);
    check_eager_tables(&cache, &budget).ok()?;
    let elf = object::File::parse(&cache).ok()?;
    let is_go = elf.section_by_name(".go.buildinfo").is_some()
        || elf
            .sections()
            .any(|s| s.name().is_ok_and(|n| n == ".gopclntab"));
    is_go.then_some(Language::Go)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_rust_test_binary_is_neither_go_nor_python() {
        let exe = std::env::current_exe().expect("test binary path");
        let file = File::open(&exe).expect("open test binary");
        assert_eq!(elf_language(file), None, "{} misdetected", exe.display());
    }

    #[test]
    fn a_running_python_interpreter_is_detected_through_proc() {
        // A real process, looked at through /proc like any other.
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import time; time.sleep(30)"])
            .spawn()
            .expect("python3 must be installed for this test (the project requires Python 3.11)");
        // exec is done once /proc/<pid>/exe no longer names the forking test binary.
        let pid = child.id();
        let mut detector = LanguageDetector::new();
        let mut detected = None;
        for _ in 0..200 {
            detected = detector.detect(Path::new("/proc"), pid);
            if detected.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            detected,
            Some(Language::Python),
            "python3 (pid {pid}) not detected"
        );
    }

    #[test]
    fn a_go_binary_is_detected_by_its_build_info() {
        let go = Path::new("/usr/local/go/bin/go");
        let file = File::open(go)
            .expect("the Go toolchain must be installed at /usr/local/go (see PLATFORM.md)");
        assert_eq!(
            elf_language(file),
            Some(Language::Go),
            "{} is a Go binary",
            go.display()
        );
    }
}
