//! `go-offsets-gen`: regenerates the Go probe's offsets table
//! (`probe/parse/src/go/offsets_table.json`) from the DWARF of Go binaries we
//! build — never typed by hand.
//!
//! Usage: `go-offsets-gen OUT.json BINARY...` (see `e2e/apps/go/gen-offsets.sh`,
//! which builds the test targets with every Go toolchain on the machine).
//! Entries already in OUT.json are kept unless a binary re-derives them, so
//! the table can grow across machines with different toolchains.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ferrotel_probe::go::binary::GoBinary;
use ferrotel_probe::go::dwarf;
use ferrotel_probe::go::offsets::{ALL_FIELDS, OffsetsSource, OffsetsTable};

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((out, binaries)) = args.split_first() else {
        eprintln!("usage: go-offsets-gen OUT.json BINARY...");
        return ExitCode::from(2);
    };
    let mut table: OffsetsTable = match std::fs::read_to_string(out) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(table) => table,
            Err(error) => {
                eprintln!(
                    "go-offsets-gen: {} is not a valid offsets table ({error}); fix or delete it",
                    out.display()
                );
                return ExitCode::FAILURE;
            }
        },
        Err(_) => OffsetsTable::default(),
    };
    for binary in binaries {
        if let Err(message) = record(&mut table, binary) {
            eprintln!("go-offsets-gen: {message}");
            return ExitCode::FAILURE;
        }
    }
    table.generated_by =
        "go-offsets-gen from the DWARF of e2e/apps/go built with each Go toolchain \
                          (e2e/apps/go/gen-offsets.sh); do not edit by hand"
            .to_owned();
    let mut text = serde_json::to_string_pretty(&table).expect("table serialises");
    text.push('\n');
    if let Err(error) = std::fs::write(out, text) {
        eprintln!("go-offsets-gen: failed to write {}: {error}", out.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn record(table: &mut OffsetsTable, path: &Path) -> Result<(), String> {
    let analysed = GoBinary::analyze(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if analysed.offsets_source != OffsetsSource::Dwarf {
        return Err(format!(
            "{} has no DWARF; build it without -ldflags=-w",
            path.display()
        ));
    }
    // Everything the probes may read, not just what this binary's features need.
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = object::File::parse(&*data).map_err(|e| format!("{}: {e}", path.display()))?;
    let fields = dwarf::field_offsets(&file, ALL_FIELDS, dwarf::MAX_DWARF_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    table.record(&analysed.build, &fields);
    eprintln!(
        "{}: {} fields from {}",
        path.display(),
        fields.len(),
        analysed.build.go_version
    );
    Ok(())
}
