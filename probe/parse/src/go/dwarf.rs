//! Struct field offsets from a Go binary's DWARF (`.debug_info`, usually
//! zlib-compressed by the Go linker; `object` decompresses it).
//!
//! Go names struct types by import path (`net/http.Request`,
//! `google.golang.org/grpc/internal/transport.Stream`) and gives every
//! member a constant `DW_AT_data_member_location`, so one pass over the DIEs
//! answers every "where is field F of struct S" question the probes ask.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;

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
    #[error("decompressing .debug_info failed or it ended inside a unit")]
    Decompress(#[source] std::io::Error),
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
        // .debug_info is read below, a unit at a time.
        if !NEEDED.contains(&id) || id == gimli::SectionId::DebugInfo {
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
    let mut sections = gimli::DwarfSections::load(load)?;
    let info = file
        .section_by_name(".debug_info")
        .ok_or(DwarfError::Missing)?
        .compressed_data()
        .map_err(|source| DwarfError::Section {
            section: ".debug_info",
            source,
        })?;
    let mut lookup = Lookup::new(wanted);
    match info.format {
        object::CompressionFormat::None => {
            sections.debug_info = Cow::Borrowed(info.data).into();
            lookup.units_of(&sections)?;
        }
        // What Go's linker writes. Decompressed a unit (a Go package) at a
        // time: the whole section is megabytes (10.2 MB in a 38 MiB binary),
        // and it would be the probe's peak memory.
        object::CompressionFormat::Zlib => {
            let mut stream = flate2::read::ZlibDecoder::new(info.data);
            let mut left = info.uncompressed_size;
            loop {
                let mut unit: Vec<u8> = Vec::new();
                if !next_unit(&mut stream, &mut unit, &mut left)? {
                    break;
                }
                sections.debug_info = Cow::<[u8]>::Owned(unit).into();
                lookup.units_of(&sections)?;
                if lookup.done() {
                    break;
                }
            }
        }
        _ => {
            sections.debug_info = info
                .decompress()
                .map_err(|source| DwarfError::Section {
                    section: ".debug_info",
                    source,
                })?
                .into();
            lookup.units_of(&sections)?;
        }
    }
    Ok(lookup.found)
}

/// Reads the next unit of a decompressing `.debug_info` stream into `unit`,
/// its length field included; `false` at the section's end. `left` is what
/// the section said its size was, less what was read: a unit past it is an
/// error, bytes after it are ignored.
fn next_unit(
    stream: &mut impl Read,
    unit: &mut Vec<u8>,
    left: &mut u64,
) -> Result<bool, DwarfError> {
    unit.clear();
    if *left == 0 {
        return Ok(false);
    }
    let truncated = || DwarfError::Decompress(std::io::ErrorKind::UnexpectedEof.into());
    let mut length = [0u8; 4];
    let mut filled = 0;
    while filled < length.len() {
        match stream
            .read(&mut length[filled..])
            .map_err(DwarfError::Decompress)?
        {
            0 if filled == 0 => return Ok(false),
            0 => return Err(truncated()),
            n => filled += n,
        }
    }
    unit.extend_from_slice(&length);
    let mut size = u64::from(u32::from_le_bytes(length));
    if size == 0xffff_ffff {
        // 64-bit DWARF: the length follows.
        let mut long = [0u8; 8];
        stream
            .read_exact(&mut long)
            .map_err(DwarfError::Decompress)?;
        unit.extend_from_slice(&long);
        size = u64::from_le_bytes(long);
    }
    let total = (unit.len() as u64).saturating_add(size);
    if total > *left {
        return Err(truncated());
    }
    *left -= total;
    stream
        .take(size)
        .read_to_end(unit)
        .map_err(DwarfError::Decompress)?;
    if unit.len() as u64 != total {
        return Err(truncated());
    }
    Ok(true)
}

/// The lookup itself, over already loaded sections (also the fuzzing entry).
pub fn field_offsets_in<T: AsRef<[u8]>>(
    sections: &gimli::DwarfSections<T>,
    wanted: &[(&str, &str)],
) -> Result<FieldOffsets, DwarfError> {
    let mut lookup = Lookup::new(wanted);
    lookup.units_of(sections)?;
    Ok(lookup.found)
}

/// The fields asked for, and those found so far.
struct Lookup<'w> {
    by_struct: HashMap<&'w str, Vec<&'w str>>,
    wanted: usize,
    found: FieldOffsets,
}

impl<'w> Lookup<'w> {
    fn new(wanted: &[(&'w str, &'w str)]) -> Self {
        let mut by_struct: HashMap<&str, Vec<&str>> = HashMap::new();
        for (s, f) in wanted {
            by_struct.entry(s).or_default().push(f);
        }
        Self {
            by_struct,
            wanted: wanted.len(),
            found: FieldOffsets::new(),
        }
    }

    fn done(&self) -> bool {
        self.found.len() == self.wanted
    }

    /// Reads the units of `sections.debug_info` until every field is found.
    fn units_of<T: AsRef<[u8]>>(
        &mut self,
        sections: &gimli::DwarfSections<T>,
    ) -> Result<(), DwarfError> {
        let by_struct = &self.by_struct;
        let found = &mut self.found;
        let dwarf =
            sections.borrow(|data| gimli::EndianSlice::new(data.as_ref(), gimli::LittleEndian));
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
            if found.len() == self.wanted {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut encoder =
            flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// A unit as `next_unit` sees one: a 32-bit length, then that many bytes.
    fn unit(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn units_come_out_of_the_stream_one_at_a_time_and_a_cut_one_is_an_error() {
        let (a, b) = (unit(b"first unit"), unit(&[7; 3000]));
        let section = [a.clone(), b.clone()].concat();
        let compressed = zlib(&section);
        let mut stream = flate2::read::ZlibDecoder::new(&compressed[..]);
        let mut left = section.len() as u64;
        let mut read = Vec::new();
        assert!(next_unit(&mut stream, &mut read, &mut left).unwrap());
        assert_eq!(read, a);
        assert!(next_unit(&mut stream, &mut read, &mut left).unwrap());
        assert_eq!(read, b);
        assert!(!next_unit(&mut stream, &mut read, &mut left).unwrap());

        // The section said it was shorter than its second unit.
        let mut stream = flate2::read::ZlibDecoder::new(&compressed[..]);
        let mut left = (a.len() + 100) as u64;
        assert!(next_unit(&mut stream, &mut read, &mut left).unwrap());
        assert!(matches!(
            next_unit(&mut stream, &mut read, &mut left),
            Err(DwarfError::Decompress(_))
        ));

        // The stream ends inside a unit.
        let cut = zlib(&section[..section.len() - 10]);
        let mut stream = flate2::read::ZlibDecoder::new(&cut[..]);
        let mut left = section.len() as u64;
        assert!(next_unit(&mut stream, &mut read, &mut left).unwrap());
        assert!(matches!(
            next_unit(&mut stream, &mut read, &mut left),
            Err(DwarfError::Decompress(_))
        ));

        // A 64-bit unit: 0xffffffff, then the length in 8 bytes.
        let mut long = vec![0xff; 4];
        long.extend_from_slice(&5u64.to_le_bytes());
        long.extend_from_slice(b"hello");
        let compressed = zlib(&long);
        let mut stream = flate2::read::ZlibDecoder::new(&compressed[..]);
        let mut left = long.len() as u64;
        assert!(next_unit(&mut stream, &mut read, &mut left).unwrap());
        assert_eq!(read, long);
        assert_eq!(left, 0);
    }
}
