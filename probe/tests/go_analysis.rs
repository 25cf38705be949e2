//! Go binary analysis on real binaries of the test matrix (no root needed):
//! build info, probe sites, DWARF offsets, and the stripped-binary paths
//! (`.gopclntab` + the generated offsets table, or a clear refusal).

mod go_common;

use ferrotel_probe::go::binary::{AnalysisError, GoBinary, symbols};
use ferrotel_probe::go::dwarf;
use ferrotel_probe::go::offsets::{ALL_FIELDS, Feature, OffsetsSource, OffsetsTable};
use go_common::{TOOLCHAINS, apps};

fn analyze(path: &std::path::Path) -> GoBinary {
    GoBinary::analyze(path).unwrap_or_else(|e| panic!("analyse {}: {e}", path.display()))
}

#[test]
fn go_binaries_yield_versions_modules_probe_sites_and_dwarf_offsets() {
    for toolchain in TOOLCHAINS {
        let apps = apps(toolchain);
        let http = analyze(&apps.bin("httpserver"));
        assert_eq!(
            http.build.go_version, apps.go_version,
            "{}: Go version from build info",
            toolchain.name
        );
        assert_eq!(http.offsets_source, OffsetsSource::Dwarf);
        assert!(!http.key.build_id.is_empty(), "Go build id is read");
        for symbol in [symbols::HTTP_SERVER, symbols::HTTP_CLIENT, symbols::NEWPROC] {
            let site = http
                .sites
                .get(symbol)
                .unwrap_or_else(|| panic!("{}: {symbol} found", toolchain.name));
            assert!(!site.returns.is_empty(), "{symbol} has RET instructions");
            assert!(
                site.returns.iter().all(|r| *r > site.entry),
                "RETs lie after the entry"
            );
        }
        assert!(
            http.spawn_call.is_some(),
            "{}: the CALL runtime.runqput in runtime.newproc.func1 is found",
            toolchain.name
        );
        assert_ne!(
            http.offsets.g_parent_goid,
            ferrotel_probe_ebpf::go::NO_OFFSET,
            "{}: g.parentGoid from DWARF",
            toolchain.name
        );
        let server = &http.sites[symbols::HTTP_SERVER];
        assert!(
            server.exits.iter().any(|e| !server.returns.contains(e)),
            "{}: the HTTP/1 server span ends at a call site in (*conn).serve, not only at RETs: {server:?}",
            toolchain.name
        );
        assert_eq!(http.features[&Feature::HttpServer], Ok(()));
        assert_eq!(http.features[&Feature::HttpClient], Ok(()));
        assert!(
            http.features[&Feature::GrpcServer].is_err(),
            "no gRPC in the plain HTTP server"
        );

        let grpc = analyze(&apps.bin("grpcserver"));
        assert_eq!(
            grpc.build.module_version("google.golang.org/grpc"),
            Some("v1.68.1")
        );
        assert_eq!(
            grpc.features[&Feature::GrpcServer],
            Ok(()),
            "{}",
            toolchain.name
        );
        assert_eq!(
            grpc.features[&Feature::GrpcClient],
            Ok(()),
            "{}",
            toolchain.name
        );
        assert_ne!(
            grpc.offsets.grpc_status_error_itab, 0,
            "status error itab found in the symbol table"
        );
        // What the incoming-traceparent probe needs.
        assert!(
            grpc.sites.contains_key(symbols::GRPC_HEADERS),
            "{}: operateHeaders found",
            toolchain.name
        );
        assert_eq!(
            (grpc.offsets.hpack_field_size, grpc.offsets.hpack_value),
            (40, 16),
            "{}: hpack.HeaderField layout from DWARF",
            toolchain.name
        );
        assert_ne!(
            grpc.offsets.h2_meta_fields,
            ferrotel_probe_ebpf::go::NO_OFFSET,
            "{}: MetaHeadersFrame.Fields from DWARF",
            toolchain.name
        );
    }
}

#[test]
fn stripped_binaries_get_the_same_probe_sites_from_gopclntab_and_offsets_from_the_table() {
    for toolchain in TOOLCHAINS {
        let apps = apps(toolchain);
        for app in ["httpserver", "grpcserver"] {
            let full = analyze(&apps.bin(app));
            let stripped = analyze(&apps.bin(&format!("{app}.stripped")));
            assert!(
                matches!(stripped.offsets_source, OffsetsSource::Table { .. }),
                "{app} ({}) stripped: offsets from the table, got {:?}",
                toolchain.name,
                stripped.offsets_source
            );
            assert_eq!(
                stripped.sites.keys().collect::<Vec<_>>(),
                full.sites.keys().collect::<Vec<_>>(),
                "{app}: same functions found"
            );
            for (symbol, site) in &full.sites {
                let other = &stripped.sites[symbol];
                assert_eq!(
                    other.returns.len(),
                    site.returns.len(),
                    "{app} {symbol}: same number of RETs"
                );
                assert_eq!(
                    (other.entry, &other.exits),
                    (site.entry, &site.exits),
                    "{app} {symbol}: same entry and exit probe points"
                );
            }
            assert_eq!(
                stripped.spawn_call, full.spawn_call,
                "{app}: same goroutine-creation probe point"
            );
            for (field, offset) in &full.fields {
                assert_eq!(
                    stripped.fields.get(field),
                    Some(offset),
                    "{app} ({}): {field} from the table equals DWARF",
                    toolchain.name
                );
            }
            assert_eq!(
                stripped.offsets.map_kind, full.offsets.map_kind,
                "{app}: same header map layout"
            );
            assert_eq!(
                stripped.features, full.features,
                "{app}: same features attachable"
            );
        }
    }
}

#[test]
fn the_committed_offsets_table_matches_the_dwarf_of_every_binary_we_build() {
    let table = OffsetsTable::builtin();
    for toolchain in TOOLCHAINS {
        let apps = apps(toolchain);
        for app in [
            "httpserver",
            "httpclient",
            "chiapp",
            "grpcserver",
            "grpcclient",
        ] {
            let binary = analyze(&apps.bin(app));
            let (from_table, _) = table.lookup(&binary.build);
            for (field, offset) in &binary.fields {
                assert_eq!(
                    from_table.get(field),
                    Some(offset),
                    "{app} ({}): table entry for {field} is stale or missing; run e2e/apps/go/gen-offsets.sh",
                    apps.go_version
                );
            }
        }
    }
    assert!(ALL_FIELDS.len() > 10);
}

#[test]
fn a_stripped_binary_of_an_unknown_go_version_is_refused_with_the_reason() {
    let apps = apps(TOOLCHAINS[0]);
    let path = apps.bin("httpserver.stripped");
    let data = std::fs::read(&path).expect("read binary");
    let err = GoBinary::analyze_bytes(&path, &data, 0, 0, &OffsetsTable::default())
        .expect_err("no DWARF and an empty table must be refused");
    assert!(
        matches!(err, AnalysisError::UnknownOffsets { .. }),
        "got {err:?}"
    );
    assert_eq!(err.category(), "unknown_offsets");
    let message = err.to_string();
    assert!(
        message.contains(&apps.go_version) && message.contains("go-offsets-gen"),
        "actionable message: {message}"
    );
}

#[test]
fn non_go_executables_are_refused_as_not_go() {
    let err = GoBinary::analyze(std::path::Path::new("/bin/sh")).expect_err("/bin/sh is not Go");
    assert_eq!(err.category(), "not_go", "got {err}");
}

#[test]
fn dwarf_read_a_unit_at_a_time_finds_what_the_whole_section_does() {
    use object::{Object, ObjectSection};
    use std::borrow::Cow;
    for toolchain in TOOLCHAINS {
        let apps = apps(toolchain);
        for app in ["httpserver", "grpcserver"] {
            let data = std::fs::read(apps.bin(app)).expect("read binary");
            let file = object::File::parse(&*data).expect("parse the ELF");
            // Go's linker compresses it: the unit-at-a-time path is the one taken.
            let info = file
                .section_by_name(".debug_info")
                .expect(".debug_info")
                .compressed_data()
                .expect("its data");
            assert_eq!(
                info.format,
                object::CompressionFormat::Zlib,
                "{app} ({})",
                toolchain.name
            );
            let streamed = dwarf::field_offsets(&file, ALL_FIELDS, dwarf::MAX_DWARF_BYTES)
                .unwrap_or_else(|e| panic!("{app} ({}): {e}", toolchain.name));
            let sections =
                gimli::DwarfSections::load(|id| -> Result<Cow<'_, [u8]>, object::Error> {
                    Ok(match file.section_by_name(id.name()) {
                        Some(section) => section.uncompressed_data()?,
                        None => Cow::Borrowed(&[][..]),
                    })
                })
                .expect("decompress every section whole");
            let whole =
                dwarf::field_offsets_in(&sections, ALL_FIELDS).expect("the whole-section lookup");
            assert_eq!(streamed, whole, "{app} ({})", toolchain.name);
            assert!(
                streamed.len() > 10,
                "{app} ({}): {streamed:?}",
                toolchain.name
            );
        }
    }
}
