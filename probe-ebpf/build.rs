//! Compiles every `src/c/*.bpf.c` (one program set per language) into a BPF
//! object in `OUT_DIR` that the crate embeds.
//!
//! `vmlinux.h` is generated from the build machine's kernel BTF: the programs
//! are CO-RE, so field offsets are relocated at load time on any BTF kernel.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let c_dir = manifest_dir.join("src/c");
    println!("cargo:rerun-if-changed=src/c");
    println!("cargo:rerun-if-env-changed=CLANG");

    let vmlinux_dir = out_dir.join("vmlinux");
    std::fs::create_dir_all(&vmlinux_dir).expect("create OUT_DIR/vmlinux");
    generate_vmlinux_h(&vmlinux_dir.join("vmlinux.h"));

    let clang = env::var("CLANG").unwrap_or_else(|_| find_clang());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&c_dir)
        .expect("read probe-ebpf/src/c")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    let mut embeds = String::new();
    for source in sources {
        let stem = source
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".bpf.c")
            .to_owned();
        let object = out_dir.join(format!("{stem}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror", "-Wpadded", "-Wno-unused-function"])
            .arg("-I")
            .arg(&c_dir)
            .arg("-I")
            .arg(&vmlinux_dir)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| panic!("failed to run {clang}: {e}; install clang-19 (e2e/tools/install.sh) or set CLANG"));
        assert!(
            status.success(),
            "clang failed to compile {}",
            source.display()
        );
        // One aligned static per object: aya parses the ELF in place, and
        // `include_bytes!` alone only guarantees byte alignment.
        let name = stem.to_uppercase().replace(['-', '.'], "_");
        embeds.push_str(&format!(
            "/// The `{stem}` program set (`src/c/{stem}.bpf.c`), compiled.\npub static {name}: &[u8] = &crate::Aligned {{ bytes: *include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.bpf.o\")) }}.bytes;\n"
        ));
    }
    std::fs::write(out_dir.join("objects.rs"), embeds).expect("write OUT_DIR/objects.rs");
}

fn find_clang() -> String {
    for candidate in ["clang-19", "clang-18", "clang-17", "clang-16", "clang"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate.to_owned();
        }
    }
    panic!(
        "no clang found to build the eBPF programs; run e2e/tools/install.sh (installs clang-19) or set CLANG=/path/to/clang"
    );
}

fn generate_vmlinux_h(path: &Path) {
    if path.exists() {
        return;
    }
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    assert!(
        btf.exists(),
        "/sys/kernel/btf/vmlinux is missing: the eBPF programs need a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y)"
    );
    let output = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"])
        .output()
        .unwrap_or_else(|e| panic!("failed to run bpftool: {e}; install it with e2e/tools/install.sh (Debian package bpftool)"));
    assert!(
        output.status.success(),
        "bpftool btf dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(path, output.stdout).expect("write vmlinux.h");
}
