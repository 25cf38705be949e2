//! Python by name or by memory map: the executable's file name and
//! `/proc/<pid>/maps`, both chosen by the workload (a map can have hundreds
//! of thousands of lines, and a line any path).

use std::path::Path;

/// `python`, `python3`, `python3.11`, `python3.12d`… but not `pythonista-tool`.
pub fn is_python_executable_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Some(rest) = name.strip_prefix("python") else {
        return false;
    };
    rest.chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == 'd' || c == 'm' || c == 't')
}

/// True if a `/proc/<pid>/maps` text maps a `libpython` shared object.
pub fn maps_load_libpython(maps: &str) -> bool {
    maps.lines().any(maps_line_is_libpython)
}

/// [`maps_load_libpython`] over a reader, holding one line at a time (and
/// at most 4 KiB of it: a path is at most `PATH_MAX`).
pub fn maps_lines_load_libpython(mut maps: impl std::io::BufRead) -> bool {
    use std::io::{BufRead as _, Read as _};
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut maps).take(4096).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {
                if maps_line_is_libpython(&String::from_utf8_lossy(&line)) {
                    return true;
                }
                // A line cut at the limit: skip its rest.
                if line.last() != Some(&b'\n') {
                    let mut rest = Vec::new();
                    if maps.read_until(b'\n', &mut rest).is_err() {
                        return false;
                    }
                }
            }
        }
    }
}

fn maps_line_is_libpython(line: &str) -> bool {
    line.trim_end()
        .rsplit('/')
        .next()
        .is_some_and(|file| file.starts_with("libpython") && file.contains(".so"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_interpreter_names_are_recognised() {
        for name in [
            "/usr/bin/python3.11",
            "/root/.pyenv/versions/3.11.7/bin/python3",
            "/usr/bin/python",
            "python3.13t",
        ] {
            assert!(
                is_python_executable_name(Path::new(name)),
                "{name} should be Python"
            );
        }
        for name in [
            "/usr/bin/pythonista",
            "/usr/bin/node",
            "/opt/app/python-helper",
        ] {
            assert!(
                !is_python_executable_name(Path::new(name)),
                "{name} should not be Python"
            );
        }
    }

    #[test]
    fn embedded_libpython_is_found_in_maps() {
        let maps = "7f2a1c000000-7f2a1c200000 r-xp 00000000 08:01 1234 /root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0\n";
        assert!(maps_load_libpython(maps));
        assert!(maps_lines_load_libpython(maps.as_bytes()));
        let long = format!("{}\n{maps}", "x".repeat(10_000));
        assert!(
            maps_lines_load_libpython(long.as_bytes()),
            "an overlong line is skipped, not taken for the next"
        );
        let not_python = "7f2a1c000000-7f2a1c200000 r-xp 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n";
        assert!(!maps_load_libpython(not_python));
    }
}
