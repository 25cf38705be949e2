//! Struct field offsets from a Go binary's DWARF (`.debug_info`, usually
//! zlib-compressed by the Go linker; `object` decompresses it).
//!
//! Go names struct types by import path (`net/http.Request`,
//! `google.golang.org/grpc/internal/transport.Stream`) and gives every
//! member a constant `DW_AT_data_member_location`, so one pass over the DIEs
//! answers every "where is field F of struct S" question the probes ask.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use object::{Object, ObjectSection};

/// Cap on the DWARF the probe decompresses per binary (the sections
/// [`field_offsets`] reads, together): a compressed section states its own
/// uncompressed size, and a workload's binary may state anything.
pub const MAX_DWARF_BYTES: u64 = 128 << 20;

/// The sections the field lookup reads: the DIEs, their abbreviations and
/// the string sections a name may be in (Go's linker writes names inline
/// and has none of these three). gimli gets empty data for the rest. The
/// units are read from their headers, not as gimli `Unit`s, which would
/// also parse each unit's line program header and resolve its `addrx`
/// entry address: in a 12 MiB Go binary that is 2 MB more of DWARF
/// decompressed (`.debug_line`, `.debug_rnglists`, `.debug_addr`) and
/// 1 MB more read, for nothing the lookup uses.
const NEEDED: [gimli::SectionId; 5] = [
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugStrOffsets,
    gimli::SectionId::DebugLineStr,
];

/// Why DWARF could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("the binary has no DWARF (.debug_info missing; built with -ldflags=-w or stripped)")]
    Missing,
    #[error("failed to read DWARF section {section}")]
    Section {
        section: &'static str,
        #[source]
        source: object::Error,
    },
    #[error(
        "DWARF section {section} is {size} bytes uncompressed, which with the sections before it exceeds the {limit}-byte cap"
    )]
    TooLarge {
        section: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("malformed DWARF")]
    Parse(#[from] gimli::Error),
}

/// `"struct.field"` -> byte offset, for the fields that were asked for and found.
pub type FieldOffsets = BTreeMap<String, u64>;

/// Finds the offsets of `wanted` fields, given as `(struct, field)` pairs.
/// Fields absent from the binary (a struct or field that this Go or module
/// version does not have) are simply missing from the result.
///
/// Sections are decompressed only if their stated sizes together stay
/// within `limit` (see [`MAX_DWARF_BYTES`]).
pub fn field_offsets<'data, R: object::ReadRef<'data>>(
    file: &object::File<'data, R>,
    wanted: &[(&str, &str)],
    limit: u64,
) -> Result<FieldOffsets, DwarfError> {
    if file.section_by_name(".debug_info").is_none() {
        return Err(DwarfError::Missing);
    }
    let mut total = 0u64;
    for id in NEEDED {
        let Some(section) = file.section_by_name(id.name()) else {
            continue;
        };
        let range = section
            .compressed_file_range()
            .map_err(|source| DwarfError::Section {
                section: id.name(),
                source,
            })?;
        total = total.saturating_add(range.uncompressed_size);
        if total > limit {
            return Err(DwarfError::TooLarge {
                section: id.name(),
                size: range.uncompressed_size,
                limit,
            });
        }
    }
    let load = |id: gimli::SectionId| -> Result<Cow<'data, [u8]>, DwarfError> {
        if !NEEDED.contains(&id) {
            return Ok(Cow::Borrowed(&[][..]));
        }
        match file.section_by_name(id.name()) {
            Some(section) => section
                .uncompressed_data()
                .map_err(|source| DwarfError::Section {
                    section: id.name(),
                    source,
                }),
            None => Ok(Cow::Borrowed(&[][..])),
        }
    };
    let sections = gimli::DwarfSections::load(load)?;
    field_offsets_in(&sections, wanted)
}

/// The lookup itself, over already loaded sections (also the fuzzing entry).
pub fn field_offsets_in<T: AsRef<[u8]>>(
    sections: &gimli::DwarfSections<T>,
    wanted: &[(&str, &str)],
) -> Result<FieldOffsets, DwarfError> {
    let mut by_struct: HashMap<&str, Vec<&str>> = HashMap::new();
    for (s, f) in wanted {
        by_struct.entry(s).or_default().push(f);
    }
    let dwarf = sections.borrow(|data| gimli::EndianSlice::new(data.as_ref(), gimli::LittleEndian));

    let mut found = FieldOffsets::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let abbreviations = dwarf.abbreviations(&header)?;
        let mut cursor = header.entries(&abbreviations);
        // Where the unit's `strx` names are indexed from: its root DIE may
        // say, else the encoding's default.
        let mut str_offsets_base = gimli::DebugStrOffsetsBase::default_for_encoding_and_file(
            header.encoding(),
            dwarf.file_type,
        );
        let name_of = |value, base| -> Result<_, gimli::Error> {
            match value {
                gimli::AttributeValue::DebugStrOffsetsIndex(index) => {
                    let offset =
                        dwarf
                            .debug_str_offsets
                            .get_str_offset(header.format(), base, index)?;
                    dwarf.string(offset)
                }
                value => dwarf.attr_line_string(value),
            }
        };
        // The struct whose members we are reading, with its depth.
        let mut current: Option<(String, isize)> = None;
        while let Some(entry) = cursor.next_dfs()? {
            let depth = entry.depth();
            if let Some((_, struct_depth)) = &current
                && depth <= *struct_depth
            {
                current = None;
            }
            match entry.tag() {
                gimli::DW_TAG_compile_unit | gimli::DW_TAG_partial_unit if depth == 0 => {
                    if let Some(gimli::AttributeValue::DebugStrOffsetsBase(base)) =
                        entry.attr_value(gimli::DW_AT_str_offsets_base)
                    {
                        str_offsets_base = base;
                    }
                }
                gimli::DW_TAG_structure_type => {
                    let Some(name) = entry.attr_value(gimli::DW_AT_name) else {
                        continue;
                    };
                    let name = name_of(name, str_offsets_base)?;
                    let name = name.to_string_lossy();
                    if by_struct.contains_key(name.as_ref()) {
                        current = Some((name.into_owned(), depth));
                    }
                }
                gimli::DW_TAG_member => {
                    let Some((struct_name, struct_depth)) = &current else {
                        continue;
                    };
                    if depth != struct_depth + 1 {
                        continue;
                    }
                    let Some(name) = entry.attr_value(gimli::DW_AT_name) else {
                        continue;
                    };
                    let name = name_of(name, str_offsets_base)?;
                    let name = name.to_string_lossy();
                    let fields = &by_struct[struct_name.as_str()];
                    if !fields.contains(&name.as_ref()) {
                        continue;
                    }
                    let offset = match entry.attr_value(gimli::DW_AT_data_member_location) {
                        Some(gimli::AttributeValue::Udata(v)) => Some(v),
                        Some(gimli::AttributeValue::Data1(v)) => Some(u64::from(v)),
                        Some(gimli::AttributeValue::Data2(v)) => Some(u64::from(v)),
                        Some(gimli::AttributeValue::Data4(v)) => Some(u64::from(v)),
                        Some(gimli::AttributeValue::Data8(v)) => Some(v),
                        Some(gimli::AttributeValue::Sdata(v)) => u64::try_from(v).ok(),
                        _ => None,
                    };
                    if let Some(offset) = offset {
                        found
                            .entry(format!("{struct_name}.{name}"))
                            .or_insert(offset);
                    }
                }
                _ => {}
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    Ok(found)
}
