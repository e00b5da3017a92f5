//! Pure Modbus logic, no I/O: decoding register words into numbers and
//! planning which register blocks to read for a set of points.
use crate::config::{DataType, Order, Point, Table};

/// Most registers one read request may ask for (Modbus spec: 125).
pub const MAX_READ: u16 = 125;
/// Registers we read past rather than splitting a request (cheaper than a round trip).
pub const MAX_HOLE: u16 = 8;

/// Decodes `regs` (exactly `ty.registers()` words) into a number.
pub fn decode(regs: &[u16], ty: DataType, word_order: Order, byte_order: Order) -> Option<f64> {
    let n = ty.registers() as usize;
    if regs.len() != n {
        return None;
    }
    // Build big-endian bytes: words in most-significant-first order, each word big-endian.
    let mut bytes = [0u8; 8];
    for i in 0..n {
        let w = match word_order {
            Order::Big => regs[i],
            Order::Little => regs[n - 1 - i],
        };
        let w = match byte_order {
            Order::Big => w,
            Order::Little => w.swap_bytes(),
        };
        bytes[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
    let b2 = [bytes[0], bytes[1]];
    let b4 = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let b8 = bytes;
    Some(match ty {
        // a bit table's value comes as a bool, not a register (see the poller)
        DataType::Bool => f64::from(u8::from(u16::from_be_bytes(b2) != 0)),
        DataType::U16 => f64::from(u16::from_be_bytes(b2)),
        DataType::I16 => f64::from(i16::from_be_bytes(b2)),
        DataType::U32 => f64::from(u32::from_be_bytes(b4)),
        DataType::I32 => f64::from(i32::from_be_bytes(b4)),
        DataType::F32 => f64::from(f32::from_be_bytes(b4)),
        DataType::U64 => u64::from_be_bytes(b8) as f64,
        DataType::I64 => i64::from_be_bytes(b8) as f64,
        DataType::F64 => f64::from_be_bytes(b8),
    })
}

/// Encodes a number into register words, the inverse of [`decode`]; `None`
/// when the type cannot hold it (out of range, or a fraction for an integer).
pub fn encode(v: f64, ty: DataType, word_order: Order, byte_order: Order) -> Option<Vec<u16>> {
    let int = |lo: f64, hi: f64| (v.fract() == 0.0 && v >= lo && v <= hi).then_some(v);
    let be: Vec<u8> = match ty {
        DataType::Bool => (int(0.0, 1.0)? as u16).to_be_bytes().to_vec(),
        DataType::U16 => (int(0.0, 65535.0)? as u16).to_be_bytes().to_vec(),
        DataType::I16 => (int(-32768.0, 32767.0)? as i16).to_be_bytes().to_vec(),
        DataType::U32 => (int(0.0, 4_294_967_295.0)? as u32).to_be_bytes().to_vec(),
        DataType::I32 => (int(-2_147_483_648.0, 2_147_483_647.0)? as i32)
            .to_be_bytes()
            .to_vec(),
        DataType::U64 => (int(0.0, 1.8446744073709552e19)? as u64)
            .to_be_bytes()
            .to_vec(),
        DataType::I64 => (int(-9.223372036854776e18, 9.223372036854776e18)? as i64)
            .to_be_bytes()
            .to_vec(),
        DataType::F32 => {
            if !v.is_finite() || v.abs() > f64::from(f32::MAX) {
                return None;
            }
            (v as f32).to_be_bytes().to_vec()
        }
        DataType::F64 => {
            if !v.is_finite() {
                return None;
            }
            v.to_be_bytes().to_vec()
        }
    };
    let words: Vec<u16> = be
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let n = words.len();
    Some(
        (0..n)
            .map(|i| {
                let w = match word_order {
                    Order::Big => words[i],
                    Order::Little => words[n - 1 - i],
                };
                match byte_order {
                    Order::Big => w,
                    Order::Little => w.swap_bytes(),
                }
            })
            .collect(),
    )
}

/// Encodes a value into register words (used by simulators and tests).
pub fn encode_f32(v: f32, word_order: Order) -> [u16; 2] {
    let b = v.to_be_bytes();
    let hi = u16::from_be_bytes([b[0], b[1]]);
    let lo = u16::from_be_bytes([b[2], b[3]]);
    match word_order {
        Order::Big => [hi, lo],
        Order::Little => [lo, hi],
    }
}

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indexes into the point list.
    pub points: Vec<usize>,
}

/// Groups points into as few read requests as possible: same table,
/// contiguous (holes up to [`MAX_HOLE`]), at most [`MAX_READ`] registers.
pub fn plan(points: &[Point]) -> Vec<Block> {
    plan_with_gap(points, MAX_HOLE)
}

/// [`plan`] with holes of at most `max_gap` unmapped registers inside one
/// request (0: only contiguous points share a request).
pub fn plan_with_gap(points: &[Point], max_gap: u16) -> Vec<Block> {
    let mut idx: Vec<usize> = (0..points.len()).collect();
    idx.sort_by_key(|&i| (points[i].table.function(), points[i].register));
    let mut blocks: Vec<Block> = Vec::new();
    for i in idx {
        let p = &points[i];
        let end = u32::from(p.register) + u32::from(p.data_type.registers());
        if let Some(b) = blocks.last_mut() {
            let b_end = u32::from(b.start) + u32::from(b.count);
            let new_end = b_end.max(end);
            if b.table == p.table
                && u32::from(p.register) <= b_end + u32::from(max_gap)
                && new_end - u32::from(b.start) <= u32::from(MAX_READ)
            {
                b.count = (new_end - u32::from(b.start)) as u16;
                b.points.push(i);
                continue;
            }
        }
        blocks.push(Block {
            table: p.table,
            start: p.register,
            count: p.data_type.registers(),
            points: vec![i],
        });
    }
    blocks
}

/// A request the device refused with an address or value exception
/// (0x02, 0x03), split so that each point is read alone: one unmapped
/// register in a merged request must not make its neighbours bad.
/// `None` when the block already serves one point.
pub fn split(block: &Block, points: &[Point]) -> Option<Vec<Block>> {
    if block.points.len() < 2 {
        return None;
    }
    Some(
        block
            .points
            .iter()
            .map(|&i| Block {
                table: block.table,
                start: points[i].register,
                count: points[i].data_type.registers(),
                points: vec![i],
            })
            .collect(),
    )
}

#[cfg(test)]
mod bit_tests {
    use super::*;
    use crate::config::{DataType, Table};

    #[test]
    fn coils_and_discrete_inputs_plan_apart_from_registers_and_each_other() {
        let pt = |reg: u16, table: Table| -> Point {
            serde_yaml::from_str(&format!(
                "{{ table: {}, register: {reg}, type: {}, asset: a, field: f{reg} }}",
                match table {
                    Table::Coil => "coil",
                    Table::DiscreteInput => "discrete_input",
                    Table::Holding => "holding",
                    Table::Input => "input",
                },
                if table.is_bits() { "bool" } else { "u16" }
            ))
            .unwrap()
        };
        let points = vec![
            pt(0, Table::Coil),
            pt(1, Table::Coil),
            pt(0, Table::DiscreteInput),
            pt(0, Table::Holding),
            pt(3, Table::Coil),
        ];
        let b = plan(&points);
        let tables: Vec<(Table, u16, u16)> =
            b.iter().map(|b| (b.table, b.start, b.count)).collect();
        assert_eq!(
            tables,
            vec![
                (Table::Coil, 0, 4),
                (Table::DiscreteInput, 0, 1),
                (Table::Holding, 0, 1)
            ]
        );
        assert_eq!(DataType::Bool.registers(), 1);
        assert_eq!(
            decode(&[1], DataType::Bool, Order::Big, Order::Big),
            Some(1.0)
        );
        assert_eq!(
            encode(1.0, DataType::Bool, Order::Big, Order::Big),
            Some(vec![1])
        );
        assert_eq!(encode(2.0, DataType::Bool, Order::Big, Order::Big), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(reg: u16, ty: DataType, table: Table) -> Point {
        Point {
            asset: "t".into(),
            field: "f".into(),
            table,
            register: reg,
            data_type: ty,
            word_order: Order::Big,
            byte_order: Order::Big,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
            bit: None,
            on_change: None,
            writable: false,
            class: adapter_api::DropClass::Telemetry,
        }
    }

    #[test]
    fn float32_decodes_in_both_word_orders() {
        let v = 12345.678_f32;
        let be = encode_f32(v, Order::Big);
        let le = encode_f32(v, Order::Little);
        assert_eq!(
            decode(&be, DataType::F32, Order::Big, Order::Big),
            Some(f64::from(v))
        );
        assert_eq!(
            decode(&le, DataType::F32, Order::Little, Order::Big),
            Some(f64::from(v))
        );
        assert_ne!(
            decode(&le, DataType::F32, Order::Big, Order::Big),
            Some(f64::from(v))
        );
    }

    #[test]
    fn signed_and_wide_integers_decode() {
        assert_eq!(
            decode(&[0xFFFF], DataType::I16, Order::Big, Order::Big),
            Some(-1.0)
        );
        assert_eq!(
            decode(&[0xFFFF], DataType::U16, Order::Big, Order::Big),
            Some(65535.0)
        );
        assert_eq!(
            decode(&[0x0001, 0x0000], DataType::U32, Order::Big, Order::Big),
            Some(65536.0)
        );
        assert_eq!(
            decode(&[0x0000, 0x0001], DataType::U32, Order::Little, Order::Big),
            Some(65536.0)
        );
        assert_eq!(
            decode(&[0xFFFF, 0xFFFE], DataType::I32, Order::Big, Order::Big),
            Some(-2.0)
        );
        assert_eq!(
            decode(&[0x0100], DataType::U16, Order::Big, Order::Little),
            Some(1.0)
        );
        let f = 1.0e10_f64.to_be_bytes();
        let regs: Vec<u16> = f
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(
            decode(&regs, DataType::F64, Order::Big, Order::Big),
            Some(1.0e10)
        );
        assert_eq!(
            decode(&[0, 0, 0, 7], DataType::U64, Order::Big, Order::Big),
            Some(7.0)
        );
        assert_eq!(
            decode(&[1], DataType::F32, Order::Big, Order::Big),
            None,
            "short input"
        );
    }

    #[test]
    fn plan_merges_neighbours_and_splits_tables_and_far_registers() {
        let pts = vec![
            point(0, DataType::F32, Table::Holding),
            point(2, DataType::F32, Table::Holding),
            point(10, DataType::U16, Table::Holding), // hole of 6: merged
            point(500, DataType::U16, Table::Holding), // far: new block
            point(0, DataType::U16, Table::Input),    // other table
        ];
        let b = plan(&pts);
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].start, b[0].count, b[0].points.len()), (0, 11, 3));
        assert_eq!((b[1].start, b[1].count), (500, 1));
        assert_eq!(b[2].table, Table::Input);
    }

    #[test]
    fn encode_is_the_inverse_of_decode_for_every_type_and_order() {
        let cases = [
            (DataType::U16, 65535.0),
            (DataType::I16, -1234.0),
            (DataType::U32, 305_419_896.0),
            (DataType::I32, -2.0),
            (DataType::U64, 7.0),
            (DataType::I64, -9_000_000_000.0),
            (DataType::F32, 42.5),
            (DataType::F64, 1.0e10),
        ];
        for (ty, v) in cases {
            for wo in [Order::Big, Order::Little] {
                for bo in [Order::Big, Order::Little] {
                    let regs = encode(v, ty, wo, bo).unwrap();
                    assert_eq!(regs.len(), usize::from(ty.registers()));
                    assert_eq!(decode(&regs, ty, wo, bo), Some(v), "{ty:?} {wo:?} {bo:?}");
                }
            }
        }
        assert_eq!(
            encode(42.5, DataType::F32, Order::Little, Order::Big).unwrap(),
            encode_f32(42.5, Order::Little).to_vec()
        );
    }

    #[test]
    fn values_a_type_cannot_hold_are_not_encoded() {
        assert!(encode(65536.0, DataType::U16, Order::Big, Order::Big).is_none());
        assert!(encode(-1.0, DataType::U32, Order::Big, Order::Big).is_none());
        assert!(encode(1.5, DataType::I16, Order::Big, Order::Big).is_none());
        assert!(encode(f64::NAN, DataType::F32, Order::Big, Order::Big).is_none());
        assert!(encode(1e39, DataType::F32, Order::Big, Order::Big).is_none());
    }

    #[test]
    fn plan_never_exceeds_the_spec_request_size() {
        let pts: Vec<Point> = (0..200)
            .map(|i| point(i * 2, DataType::F32, Table::Holding))
            .collect();
        for b in plan(&pts) {
            assert!(b.count <= MAX_READ);
        }
    }

    #[test]
    fn max_gap_zero_merges_only_contiguous_points_and_a_split_reads_each_point_alone() {
        let pts = vec![
            point(0, DataType::F32, Table::Holding),
            point(2, DataType::U16, Table::Holding), // contiguous
            point(4, DataType::U16, Table::Holding), // hole of 1
        ];
        let merged = plan_with_gap(&pts, 8);
        assert_eq!(merged.len(), 1);
        let strict = plan_with_gap(&pts, 0);
        assert_eq!(
            strict
                .iter()
                .map(|b| (b.start, b.count))
                .collect::<Vec<_>>(),
            vec![(0, 3), (4, 1)]
        );
        let parts = split(&merged[0], &pts).unwrap();
        assert_eq!(
            parts
                .iter()
                .map(|b| (b.start, b.count, b.points.clone()))
                .collect::<Vec<_>>(),
            vec![(0, 2, vec![0]), (2, 1, vec![1]), (4, 1, vec![2])]
        );
        assert!(
            split(&parts[0], &pts).is_none(),
            "a single point cannot split"
        );
    }
}
