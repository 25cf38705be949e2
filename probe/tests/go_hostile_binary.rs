//! A workload's binary is input the workload controls. As root, with real
//! uprobes and the real collector: next to a healthy Go server, the probe
//! is given two Go servers whose executables were crafted to attack the
//! analysis, and must refuse exactly those two (with their reasons), keep
//! tracing the healthy one, stay up, and stay far below its memory limit.
//!
//! The crafted executables run normally: the Go runtime never reads ELF
//! section headers, so redirecting a section header to hostile bytes
//! appended to the file changes what the probe reads, not what runs.
//! - `pclntab-odd-pointer`: a stripped server whose `.gopclntab` header
//!   points to a copy of the table declaring 3-byte pointers (this panicked
//!   the analysis, and the panic stopped the probe).
//! - `dwarf-bomb`: a server whose `.debug_info` is a 1 MiB zlib stream that
//!   inflates to 1 GiB (this was decompressed whole, past the probe's
//!   512 MiB memory limit).

mod go_common;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ferrotel_e2e::{Collector, Span};
use go_common::{GoApp, Probe, SERVER, TOOLCHAINS, WAIT, apps, get_n, http_client, of_pid};
use object::read::elf::FileHeader;

/// ELF constants (gABI): a compressed section, and its zlib `ch_type`.
const SHF_COMPRESSED: u64 = 0x800;
const ELFCOMPRESS_ZLIB: u32 = 1;

/// The Go probe's memory limit in the rendered DaemonSet.
const GO_PROBE_MEMORY_LIMIT: u64 = 512 << 20;

/// Appends `blob` to `bytes` and points section `name`'s header at it
/// (offset, size, and `SHF_COMPRESSED` if `compressed`).
fn redirect_section(bytes: &mut Vec<u8>, name: &str, blob: &[u8], compressed: bool) {
    let header =
        object::elf::FileHeader64::<object::Endianness>::parse(&bytes[..]).expect("an ELF64 file");
    let endian = header.endian().expect("endianness");
    let shoff = header.e_shoff.get(endian) as usize;
    let sections = header.sections(endian, &bytes[..]).expect("section table");
    let (index, section) = sections
        .section_by_name(endian, name.as_bytes())
        .unwrap_or_else(|| panic!("{name} exists in the test target"));
    let _ = section;
    while !bytes.len().is_multiple_of(8) {
        bytes.push(0);
    }
    let offset = bytes.len() as u64;
    bytes.extend_from_slice(blob);
    let at = shoff + index.0 * 64;
    let mut flags = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
    if compressed {
        flags |= SHF_COMPRESSED;
    }
    bytes[at + 8..at + 16].copy_from_slice(&flags.to_le_bytes());
    bytes[at + 24..at + 32].copy_from_slice(&offset.to_le_bytes());
    bytes[at + 32..at + 40].copy_from_slice(&(blob.len() as u64).to_le_bytes());
}

fn section_bytes(bytes: &[u8], name: &str) -> Vec<u8> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(bytes).expect("ELF");
    file.section_by_name(name)
        .unwrap_or_else(|| panic!("{name} exists"))
        .data()
        .expect("section data")
        .to_vec()
}

fn write_executable(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).expect("create crafted binary");
    file.write_all(bytes).expect("write crafted binary");
    file.set_permissions(std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    path
}

/// A zlib stream of `size` zero bytes, as `Elf64_Chdr` + data.
fn zlib_bomb(size: u64) -> Vec<u8> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import sys, zlib; sys.stdout.buffer.write(zlib.compress(bytes({size}), 9))"),
        ])
        .output()
        .expect("python3 compresses the bomb");
    assert!(output.status.success(), "python3 zlib failed");
    let mut blob = Vec::new();
    blob.extend_from_slice(&ELFCOMPRESS_ZLIB.to_le_bytes());
    blob.extend_from_slice(&0u32.to_le_bytes());
    blob.extend_from_slice(&size.to_le_bytes());
    blob.extend_from_slice(&1u64.to_le_bytes());
    blob.extend_from_slice(&output.stdout);
    blob
}

fn refused(metrics: &str, reason: &str) -> u64 {
    let prefix =
        format!("ferrotel_probe_attach_refused_total{{language=\"go\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_binaries_cost_their_own_target_only() {
    let apps = apps(TOOLCHAINS[0]);
    let dir = tempfile::tempdir().expect("temp dir");

    let mut odd = std::fs::read(apps.bin("httpserver.stripped")).expect("stripped server");
    let mut table = section_bytes(&odd, ".gopclntab");
    table[7] = 3;
    redirect_section(&mut odd, ".gopclntab", &table, false);
    let odd = write_executable(dir.path(), "pclntab-odd-pointer", &odd);

    let mut bomb = std::fs::read(apps.bin("httpserver")).expect("server with DWARF");
    redirect_section(&mut bomb, ".debug_info", &zlib_bomb(1 << 30), true);
    let bomb = write_executable(dir.path(), "dwarf-bomb", &bomb);

    let collector = Collector::start_with_file_exporter()
        .await
        .unwrap_or_else(|e| panic!("the real collector must start (make tools): {e}"));
    let mut healthy = GoApp::start(&apps.bin("httpserver"), &[]);
    let mut odd = GoApp::start(&odd, &[]);
    let mut bomb = GoApp::start(&bomb, &[]);
    let rss_before = ferrotel_e2e::process::peak_rss_bytes();

    let probe = Probe::start(&collector, &[odd.pid(), bomb.pid(), healthy.pid()], &[], 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let text = probe.metrics().await;
        if refused(&text, "no_functions") >= 1 && refused(&text, "analysis_limit") >= 1 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both crafted binaries must be refused with their reasons:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        metrics
            .lines()
            .any(|l| l == "ferrotel_probe_attached_processes{language=\"go\"} 1"),
        "only the healthy server is attached:\n{metrics}"
    );

    // The probe still traces the healthy server after refusing the others.
    let client = http_client();
    get_n(&client, &healthy.url("/hello"), 5, &[]).await;
    get_n(&client, &odd.url("/hello"), 2, &[]).await;
    get_n(&client, &bomb.url("/hello"), 2, &[]).await;
    healthy.assert_alive();
    odd.assert_alive();
    bomb.assert_alive();
    let probe_metrics = probe.stop().await;
    let is_healthy = of_pid(healthy.pid());
    let spans: Vec<Span> = collector
        .wait_for_spans(5, WAIT, |s| is_healthy(s) && s.kind == SERVER)
        .await
        .unwrap_or_else(|e| panic!("spans of the healthy server: {e}\n{probe_metrics}"));
    assert_eq!(spans.len(), 5, "one span per request to the healthy server");
    let others = collector.spans().expect("spans");
    assert!(
        !others
            .iter()
            .any(|s| of_pid(odd.pid())(s) || of_pid(bomb.pid())(s)),
        "refused targets are not traced"
    );

    let peak = ferrotel_e2e::process::peak_rss_bytes();
    assert!(
        peak < GO_PROBE_MEMORY_LIMIT,
        "the 1 GiB DWARF bomb must not be inflated: peak RSS {} MiB (before the probe: {} MiB), limit {} MiB",
        peak >> 20,
        rss_before >> 20,
        GO_PROBE_MEMORY_LIMIT >> 20
    );
}
