//! Instruction index to source line, from a code object's line table.
//!
//! - 3.10 (`co_linetable`, PEP 626): pairs of (byte-offset delta u8, line
//!   delta i8), line delta -128 meaning "no line"; offsets in bytes.
//! - 3.11+ (`co_linetable` as the location table, PEP 657): entries of a
//!   header byte `1CCCCLLL` (code, length - 1 in code units) then varints;
//!   codes 0–9 are "short" (same line), 10–12 "one line" (delta = code -
//!   10), 13 "no column" and 14 "long" (signed varint line delta), 15 "no
//!   location".

/// A code object's line table, by format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineTable {
    /// 3.10 pairs.
    Pairs(Vec<u8>),
    /// 3.11+ location table.
    Locations(Vec<u8>),
}

/// The line of instruction (code unit) `index`; `first_line` for an
/// instruction before the first (a frame that has not started) or without
/// a line.
pub fn line_for(table: &LineTable, first_line: i32, index: i64) -> i32 {
    let line = match table {
        LineTable::Pairs(t) => pairs_line(t, first_line, index.max(0) * 2),
        LineTable::Locations(t) => locations_line(t, first_line, index),
    };
    line.filter(|l| *l > 0).unwrap_or(first_line)
}

fn pairs_line(table: &[u8], first_line: i32, byte_offset: i64) -> Option<i32> {
    let mut end = 0i64;
    let mut line = first_line;
    for pair in table.as_chunks::<2>().0 {
        let start = end;
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let this = if delta == -128 {
            None
        } else {
            line += i32::from(delta);
            Some(line)
        };
        if start <= byte_offset && byte_offset < end {
            return this;
        }
    }
    None
}

fn locations_line(table: &[u8], first_line: i32, index: i64) -> Option<i32> {
    if index < 0 {
        return Some(first_line);
    }
    let mut p = 0usize;
    let mut unit = 0i64;
    let mut line = first_line;
    let varint = |p: &mut usize| -> Option<u32> {
        let mut b = *table.get(*p)?;
        *p += 1;
        let mut value = u32::from(b & 63);
        let mut shift = 0;
        while b & 64 != 0 {
            b = *table.get(*p)?;
            *p += 1;
            shift += 6;
            value |= u32::from(b & 63).checked_shl(shift)?;
        }
        Some(value)
    };
    let svarint = |p: &mut usize| -> Option<i32> {
        let v = varint(p)?;
        Some(if v & 1 != 0 {
            -((v >> 1) as i32)
        } else {
            (v >> 1) as i32
        })
    };
    while p < table.len() {
        let header = table[p];
        p += 1;
        if header & 0x80 == 0 {
            return None; // lost sync: a corrupt or misread table
        }
        let code = (header >> 3) & 15;
        let length = i64::from(header & 7) + 1;
        let this = match code {
            15 => None,
            14 => {
                line += svarint(&mut p)?;
                varint(&mut p)?; // end line delta
                varint(&mut p)?; // column + 1
                varint(&mut p)?; // end column + 1
                Some(line)
            }
            13 => {
                line += svarint(&mut p)?;
                Some(line)
            }
            10..=12 => {
                line += i32::from(code) - 10;
                p += 2; // column, end column
                Some(line)
            }
            _ => {
                p += 1; // column bits
                Some(line)
            }
        };
        if unit <= index && index < unit + length {
            return this;
        }
        unit += length;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_give_the_line_of_a_byte_offset_and_skip_no_line_ranges() {
        // 0..6 -> first+1, 6..10 no line, 10..20 -> first+3
        let table = LineTable::Pairs(vec![6, 1, 4, 0x80, 10, 2]);
        assert_eq!(line_for(&table, 10, 0), 11);
        assert_eq!(
            line_for(&table, 10, 2),
            11,
            "byte 4 still in the first range"
        );
        assert_eq!(line_for(&table, 10, 3), 10, "no line: the first line");
        assert_eq!(line_for(&table, 10, 6), 13, "byte 12: third range");
    }

    #[test]
    fn location_entries_of_every_form_advance_the_line() {
        let table = LineTable::Locations(vec![
            0x80 | (13 << 3),
            2, // no column, +1, 1 unit (0)
            0x80 | (11 << 3) | 1,
            4,
            8,                // one line +1, 2 units (1..3)
            0x80 | (15 << 3), // no location, 1 unit (3)
            0x80 | (14 << 3) | 2,
            6,
            0,
            1,
            1, // long, +3, 3 units (4..7)
            0x80 | (2 << 3),
            5, // short, same line, 1 unit (7)
        ]);
        assert_eq!(line_for(&table, 100, 0), 101);
        assert_eq!(line_for(&table, 100, 2), 102);
        assert_eq!(line_for(&table, 100, 3), 100, "no location: the first line");
        assert_eq!(line_for(&table, 100, 5), 105);
        assert_eq!(line_for(&table, 100, 7), 105);
        assert_eq!(line_for(&table, 100, -1), 100, "not started");
    }
}
