//! The kernel's BTF cut down to the types the probe's programs use.
//!
//! aya parses a BTF into 72 bytes per type plus copies of its strings: for
//! this kernel's 125,850 types that is ~13 MiB, and ~18 MiB while the
//! file's bytes are held too. The probe needs few of them: the kernel
//! types its objects' CO-RE relocations name (a `task_struct`, a `sock`,
//! and the types their fields are made of) and the `btf_trace_<name>`
//! typedef of each BTF tracepoint, which aya looks up by name and whose ID
//! the kernel attaches by.
//!
//! So the raw BTF is walked here without being parsed into types: every
//! kernel type (not function or variable) named like a root type of one
//! of the object's relocations ([`relocation_roots`]), or like a
//! tracepoint's typedef, is kept with everything it is made of (members,
//! array elements, typedef and qualifier targets, prototypes), but not
//! what its pointers point to: a CO-RE field access through a pointer is a
//! relocation of its own against the pointee's name, and aya (like libbpf)
//! accepts a pointer field for a pointer field without looking further.
//! Every other type up to the last one kept becomes an anonymous pointer
//! to void, so that each kept type keeps its kernel ID; the types after
//! the last one kept are left out. Strings are rebuilt from the kept
//! types' names alone. The result is what aya parses.

use std::collections::{HashMap, HashSet};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// A type's common part: name offset, info (kind, vlen), size or type.
const TYPE_LEN: usize = 12;

// Kinds, from the kernel's include/uapi/linux/btf.h.
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const FLOAT: u32 = 16;
const DECL_TAG: u32 = 17;
const TYPE_TAG: u32 = 18;
const ENUM64: u32 = 19;

/// Why a BTF could not be walked; the caller parses it whole instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrimError {
    #[error("not a little-endian BTF blob (magic {0:#06x})")]
    Magic(u16),
    #[error("BTF header or section out of bounds")]
    Bounds,
    #[error("type {id} has kind {kind}, which this walker does not know")]
    UnknownKind { id: usize, kind: u32 },
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, TrimError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or(TrimError::Bounds)
}

/// A raw BTF blob with the offset of each type's record (ID 0 is void and
/// has none).
struct RawBtf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// `starts[id]`: where type `id`'s record begins in `types`; one more
    /// entry marks the end.
    starts: Vec<u32>,
}

/// The header length of a `.BTF` or `.BTF.ext` blob (they share its
/// first fields), after checking its magic.
fn header_len(data: &[u8]) -> Result<usize, TrimError> {
    let magic = data
        .get(..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(TrimError::Bounds)?;
    if magic != MAGIC {
        return Err(TrimError::Magic(magic));
    }
    Ok(u32_at(data, 4)? as usize)
}

impl<'a> RawBtf<'a> {
    fn walk(data: &'a [u8]) -> Result<Self, TrimError> {
        let header_len = header_len(data)?;
        let section = |off_at: usize, len_at: usize| -> Result<&'a [u8], TrimError> {
            let start = header_len + u32_at(data, off_at)? as usize;
            let len = u32_at(data, len_at)? as usize;
            data.get(start..start + len).ok_or(TrimError::Bounds)
        };
        let types = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut starts = vec![0];
        let mut at = 0;
        while at < types.len() {
            starts.push(u32::try_from(at).map_err(|_| TrimError::Bounds)?);
            let info = u32_at(types, at + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                INT | VAR | DECL_TAG => 4,
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
                ARRAY => 12,
                STRUCT | UNION | DATASEC | ENUM64 => 12 * vlen,
                ENUM | FUNC_PROTO => 8 * vlen,
                kind => {
                    return Err(TrimError::UnknownKind {
                        id: starts.len() - 1,
                        kind,
                    });
                }
            };
            at += TYPE_LEN + extra;
        }
        if at != types.len() {
            return Err(TrimError::Bounds);
        }
        starts.push(u32::try_from(at).map_err(|_| TrimError::Bounds)?);
        Ok(Self {
            types,
            strings,
            starts,
        })
    }

    /// Types, void included.
    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn record(&self, id: usize) -> &'a [u8] {
        &self.types[self.starts[id] as usize..self.starts[id + 1] as usize]
    }

    fn kind_vlen(record: &[u8]) -> (u32, usize) {
        let info = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
        ((info >> 24) & 0x1f, (info & 0xffff) as usize)
    }

    fn string(&self, offset: u32) -> &'a [u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn name(&self, id: usize) -> &'a [u8] {
        let record = self.record(id);
        self.string(u32::from_le_bytes(record[..4].try_into().expect("4 bytes")))
    }

    /// The types `id` is made of: not what a pointer points to.
    fn parts(&self, id: usize, out: &mut Vec<u32>) {
        let record = self.record(id);
        let at = |offset: usize| {
            u32::from_le_bytes(record[offset..offset + 4].try_into().expect("4 bytes"))
        };
        let (kind, vlen) = Self::kind_vlen(record);
        match kind {
            TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG | FUNC | VAR | DECL_TAG => {
                out.push(at(8))
            }
            ARRAY => out.extend([at(12), at(16)]),
            STRUCT | UNION => out.extend((0..vlen).map(|i| at(TYPE_LEN + 12 * i + 4))),
            FUNC_PROTO => {
                out.push(at(8));
                out.extend((0..vlen).map(|i| at(TYPE_LEN + 8 * i + 4)));
            }
            DATASEC => out.extend((0..vlen).map(|i| at(TYPE_LEN + 12 * i))),
            _ => {}
        }
    }

    /// Where in `record` (a copy of a type's) string offsets are: its name
    /// and its members', values' or parameters'.
    fn name_offsets(record: &[u8]) -> impl Iterator<Item = usize> {
        let (kind, vlen) = Self::kind_vlen(record);
        let (stride, count) = match kind {
            STRUCT | UNION | ENUM64 => (12, vlen),
            ENUM | FUNC_PROTO => (8, vlen),
            _ => (0, 0),
        };
        std::iter::once(0).chain((0..count).map(move |i| TYPE_LEN + stride * i))
    }
}

/// The names of the types an object's CO-RE relocations start from (the
/// root type of each record in its `.BTF.ext`), without a flavor suffix
/// (`task_struct___old` is a `task_struct`): aya resolves each against
/// the kernel types of that name. `btf` and `ext` are the object's `.BTF`
/// and `.BTF.ext` sections.
pub(crate) fn relocation_roots(btf: &[u8], ext: &[u8]) -> Result<HashSet<Vec<u8>>, TrimError> {
    let local = RawBtf::walk(btf)?;
    let header_len = header_len(ext)?;
    let mut roots = HashSet::new();
    // A header without the CO-RE fields (older compilers): no relocations.
    if header_len < 32 {
        return Ok(roots);
    }
    let start = header_len + u32_at(ext, 24)? as usize;
    let len = u32_at(ext, 28)? as usize;
    let relos = ext.get(start..start + len).ok_or(TrimError::Bounds)?;
    if relos.is_empty() {
        return Ok(roots);
    }
    // The record size, then per section: its name, its count, its records
    // (instruction offset, root type ID, access string, kind).
    let record_len = u32_at(relos, 0)? as usize;
    if record_len < 16 {
        return Err(TrimError::Bounds);
    }
    let mut at = 4;
    while at < relos.len() {
        let count = u32_at(relos, at + 4)? as usize;
        at += 8;
        for _ in 0..count {
            let id = u32_at(relos, at + 4)? as usize;
            if id == 0 || id >= local.len() {
                return Err(TrimError::Bounds);
            }
            let name = local.name(id);
            if !name.is_empty() {
                roots.insert(flavorless(name).to_vec());
            }
            at += record_len;
        }
    }
    Ok(roots)
}

/// `name` without its CO-RE flavor suffix, as aya and libbpf match types.
fn flavorless(name: &[u8]) -> &[u8] {
    name.windows(3)
        .position(|w| w == b"___")
        .map_or(name, |at| &name[..at])
}

/// What [`trim`] kept, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trimmed {
    pub kept: usize,
    pub ids: usize,
    pub kernel_types: usize,
}

/// `kernel` (a raw BTF) cut down to the types named in `names` and what
/// they are made of, each at its kernel ID (see the module's docs).
pub(crate) fn trim(
    kernel: &[u8],
    names: &HashSet<Vec<u8>>,
) -> Result<(Vec<u8>, Trimmed), TrimError> {
    let raw = RawBtf::walk(kernel)?;
    let mut keep = vec![false; raw.len()];
    let mut pending: Vec<u32> = (1..raw.len())
        .filter(|&id| {
            // Types only: a function or variable of the same name (the
            // kernel has a function syscall_user_dispatch and a struct
            // syscall_user_dispatch) is never a CO-RE candidate.
            let (kind, _) = RawBtf::kind_vlen(raw.record(id));
            let name = raw.name(id);
            !matches!(kind, FUNC | VAR | DATASEC | DECL_TAG)
                && !name.is_empty()
                && names.contains(name)
        })
        .map(|id| id as u32)
        .collect();
    while let Some(id) = pending.pop() {
        let id = id as usize;
        if id == 0 || id >= raw.len() || keep[id] {
            continue;
        }
        keep[id] = true;
        raw.parts(id, &mut pending);
    }
    let last = keep.iter().rposition(|&k| k).unwrap_or(0);

    let mut strings = vec![0u8];
    let mut interned: HashMap<&[u8], u32> = HashMap::new();
    let mut types = Vec::new();
    let mut kept = 0;
    for (id, &kept_here) in keep.iter().enumerate().take(last + 1).skip(1) {
        if !kept_here {
            // An anonymous pointer to void: it holds the ID.
            types.extend_from_slice(&0u32.to_le_bytes());
            types.extend_from_slice(&(PTR << 24).to_le_bytes());
            types.extend_from_slice(&0u32.to_le_bytes());
            continue;
        }
        kept += 1;
        let start = types.len();
        types.extend_from_slice(raw.record(id));
        let offsets: Vec<usize> = RawBtf::name_offsets(raw.record(id)).collect();
        for at in offsets {
            let field = start + at..start + at + 4;
            let old = u32::from_le_bytes(types[field.clone()].try_into().expect("4 bytes"));
            let new = if old == 0 {
                0
            } else {
                let name = raw.string(old);
                *interned.entry(name).or_insert_with(|| {
                    let offset = strings.len() as u32;
                    strings.extend_from_slice(name);
                    strings.push(0);
                    offset
                })
            };
            types[field].copy_from_slice(&new.to_le_bytes());
        }
    }

    let mut out = Vec::with_capacity(HEADER_LEN + types.len() + strings.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(1); // version
    out.push(0); // flags
    for field in [
        HEADER_LEN as u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    Ok((
        out,
        Trimmed {
            kept,
            ids: last,
            kernel_types: raw.len() - 1,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made BTF: 1 int, 2 struct s { int a; struct t *p; },
    /// 3 ptr -> 4, 4 struct t { int b; }, 5 typedef td -> 1, 6 struct u {}.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0p\0t\0b\0td\0u\0";
        let off = |name: &str| {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| types.extend_from_slice(&w.to_le_bytes()))
        };
        push(&[off("int"), INT << 24, 4, 32]);
        push(&[
            off("s"),
            STRUCT << 24 | 2,
            16,
            off("a"),
            1,
            0,
            off("p"),
            3,
            64,
        ]);
        push(&[0, PTR << 24, 4]);
        push(&[off("t"), STRUCT << 24 | 1, 4, off("b"), 1, 0]);
        push(&[off("td"), TYPEDEF << 24, 1]);
        push(&[off("u"), STRUCT << 24, 0]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(strings);
        out
    }

    fn names(list: &[&str]) -> HashSet<Vec<u8>> {
        list.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    #[test]
    fn keeps_what_a_type_is_made_of_but_not_its_pointees_and_holds_every_id() {
        let (trimmed, stats) = trim(&sample(), &names(&["s"])).unwrap();
        // s (2) and its members' types: int (1) and the pointer (3); not
        // struct t (4), which only the pointer reaches; nothing after 3.
        assert_eq!(
            stats,
            Trimmed {
                kept: 3,
                ids: 3,
                kernel_types: 6
            }
        );
        let raw = RawBtf::walk(&trimmed).unwrap();
        assert_eq!(raw.len() - 1, 3);
        assert_eq!(raw.name(1), b"int");
        assert_eq!(raw.name(2), b"s");
        let mut parts = Vec::new();
        raw.parts(2, &mut parts);
        assert_eq!(parts, [1, 3]);
        let member_name = |i: usize| {
            let record = raw.record(2);
            let at = TYPE_LEN + 12 * i;
            raw.string(u32::from_le_bytes(record[at..at + 4].try_into().unwrap()))
        };
        assert_eq!((member_name(0), member_name(1)), (&b"a"[..], &b"p"[..]));
        // Only the kept types' names are left.
        assert_eq!(raw.strings, b"\0int\0s\0a\0p\0");
    }

    #[test]
    fn a_type_far_down_keeps_its_id_behind_placeholders() {
        let (trimmed, stats) = trim(&sample(), &names(&["u"])).unwrap();
        assert_eq!(
            stats,
            Trimmed {
                kept: 1,
                ids: 6,
                kernel_types: 6
            }
        );
        let raw = RawBtf::walk(&trimmed).unwrap();
        assert_eq!(raw.name(6), b"u");
        for id in 1..6 {
            assert_eq!(RawBtf::kind_vlen(raw.record(id)), (PTR, 0), "type {id}");
            assert!(raw.name(id).is_empty());
        }
    }

    /// A `.BTF.ext` with CO-RE records whose root types are `roots`.
    fn ext(roots: &[u32]) -> Vec<u8> {
        let mut relos = Vec::new();
        let mut push = |w: u32| relos.extend_from_slice(&w.to_le_bytes());
        push(16);
        push(0);
        push(roots.len() as u32);
        for (i, &root) in roots.iter().enumerate() {
            [8 * i as u32, root, 0, 0].into_iter().for_each(&mut push);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [32u32, 0, 0, 0, 0, 0, relos.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&relos);
        out
    }

    #[test]
    fn roots_are_the_relocations_named_types_and_garbage_is_refused() {
        assert_eq!(flavorless(b"task_struct___old"), b"task_struct");
        assert_eq!(flavorless(b"sock"), b"sock");
        let roots = relocation_roots(&sample(), &ext(&[2, 6, 2])).unwrap();
        assert_eq!(roots, names(&["s", "u"]));
        // An anonymous root (the pointer) names nothing.
        assert!(relocation_roots(&sample(), &ext(&[3])).unwrap().is_empty());
        assert!(matches!(
            relocation_roots(&sample(), &ext(&[7])),
            Err(TrimError::Bounds)
        ));
        let mut garbage = sample();
        garbage[0] = 0;
        assert!(matches!(trim(&garbage, &roots), Err(TrimError::Magic(_))));
        let truncated = &sample()[..40];
        assert!(matches!(trim(truncated, &roots), Err(TrimError::Bounds)));
        let mut unknown = sample();
        // The first type's info: kind 31.
        unknown[24 + 7] = 31;
        assert!(matches!(
            trim(&unknown, &roots),
            Err(TrimError::UnknownKind { id: 1, kind: 31 })
        ));
    }
}
