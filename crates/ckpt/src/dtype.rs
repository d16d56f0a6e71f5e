//! Element types and their names in each file format.

use std::fmt;

/// The element type of a tensor.
///
/// Every dtype knows its size in bytes and its name in PyTorch, safetensors
/// and NumPy, so each format module translates through this one table.
///
/// ```
/// use ckpt::DType;
/// assert_eq!(DType::F32.size(), 4);
/// assert_eq!(DType::F32.torch_name(), "float32");
/// assert_eq!(DType::from_safetensors("BF16"), Some(DType::BF16));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DType {
    /// IEEE 754 double precision.
    F64,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16: the top half of an f32.
    BF16,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits, no infinities (`float8_e4m3fn`).
    F8E4M3,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits (`float8_e5m2`).
    F8E5M2,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean, one byte per element holding 0 or 1.
    Bool,
    /// Complex of two single-precision floats (real, imaginary).
    C64,
    /// Complex of two double-precision floats (real, imaginary).
    C128,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// 8-bit float, 4 exponent bits (bias 8), 3 mantissa bits, one NaN
    /// (`0x80`) and no negative zero (`float8_e4m3fnuz`).
    F8E4M3Fnuz,
    /// 8-bit float, 5 exponent bits (bias 16), 2 mantissa bits, one NaN
    /// (`0x80`) and no negative zero (`float8_e5m2fnuz`).
    F8E5M2Fnuz,
    /// 8-bit power of two: exponent only, bias 127, `0xFF` is NaN
    /// (`float8_e8m0fnu`, the scale type of MX formats).
    F8E8M0,
}

/// One row per dtype: (dtype, size, torch, safetensors, numpy).
///
/// safetensors has no complex128 (`C128` is ckpt's name for it, refused
/// when writing safetensors).
const TABLE: [(DType, usize, &str, &str, &str); 20] = [
    (DType::F64, 8, "float64", "F64", "<f8"),
    (DType::F32, 4, "float32", "F32", "<f4"),
    (DType::F16, 2, "float16", "F16", "<f2"),
    (DType::BF16, 2, "bfloat16", "BF16", "<V2"),
    (DType::F8E4M3, 1, "float8_e4m3fn", "F8_E4M3", "|V1"),
    (DType::F8E5M2, 1, "float8_e5m2", "F8_E5M2", "|V1"),
    (DType::I64, 8, "int64", "I64", "<i8"),
    (DType::I32, 4, "int32", "I32", "<i4"),
    (DType::I16, 2, "int16", "I16", "<i2"),
    (DType::I8, 1, "int8", "I8", "|i1"),
    (DType::U8, 1, "uint8", "U8", "|u1"),
    (DType::Bool, 1, "bool", "BOOL", "|b1"),
    (DType::C64, 8, "complex64", "C64", "<c8"),
    (DType::C128, 16, "complex128", "C128", "<c16"),
    (DType::U16, 2, "uint16", "U16", "<u2"),
    (DType::U32, 4, "uint32", "U32", "<u4"),
    (DType::U64, 8, "uint64", "U64", "<u8"),
    (
        DType::F8E4M3Fnuz,
        1,
        "float8_e4m3fnuz",
        "F8_E4M3FNUZ",
        "|V1",
    ),
    (
        DType::F8E5M2Fnuz,
        1,
        "float8_e5m2fnuz",
        "F8_E5M2FNUZ",
        "|V1",
    ),
    (DType::F8E8M0, 1, "float8_e8m0fnu", "F8_E8M0", "|V1"),
];

impl DType {
    /// Every dtype, widest floats first.
    pub fn all() -> impl Iterator<Item = DType> {
        TABLE.iter().map(|row| row.0)
    }

    fn row(self) -> &'static (DType, usize, &'static str, &'static str, &'static str) {
        TABLE
            .iter()
            .find(|row| row.0 == self)
            .expect("every DType has a row in TABLE")
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        self.row().1
    }

    /// The name PyTorch uses (`torch.float32` is `"float32"`).
    pub fn torch_name(self) -> &'static str {
        self.row().2
    }

    /// The name in a safetensors header (`"F32"`).
    pub fn safetensors_name(self) -> &'static str {
        self.row().3
    }

    /// The NumPy type string (`"<f4"`). NumPy has no bfloat16 or float8;
    /// those are written as raw void types of the same width (`<V2`, `|V1`).
    pub fn numpy_name(self) -> &'static str {
        self.row().4
    }

    /// Looks a dtype up by its PyTorch name (`"float32"`).
    pub fn from_torch(name: &str) -> Option<DType> {
        TABLE.iter().find(|row| row.2 == name).map(|row| row.0)
    }

    /// Looks a dtype up by its safetensors name (`"F32"`).
    pub fn from_safetensors(name: &str) -> Option<DType> {
        TABLE.iter().find(|row| row.3 == name).map(|row| row.0)
    }

    /// Looks a dtype up by its NumPy type string (`"<f4"`). The raw void
    /// types are ambiguous (`|V1` is either float8) and are not matched.
    pub fn from_numpy(name: &str) -> Option<DType> {
        TABLE
            .iter()
            .find(|row| row.4 == name && !row.4.contains('V'))
            .map(|row| row.0)
    }

    /// True for the floating-point dtypes.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F64
                | DType::F32
                | DType::F16
                | DType::BF16
                | DType::F8E4M3
                | DType::F8E5M2
                | DType::F8E4M3Fnuz
                | DType::F8E5M2Fnuz
                | DType::F8E8M0
        )
    }
}

impl fmt::Display for DType {
    /// Displays the PyTorch name, the one users know best.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.torch_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips_through_every_name() {
        for dtype in DType::all() {
            assert_eq!(DType::from_torch(dtype.torch_name()), Some(dtype));
            assert_eq!(
                DType::from_safetensors(dtype.safetensors_name()),
                Some(dtype)
            );
            if !dtype.numpy_name().contains('V') {
                assert_eq!(DType::from_numpy(dtype.numpy_name()), Some(dtype));
            }
        }
    }

    #[test]
    fn sizes_match_the_names() {
        assert_eq!(DType::F64.size(), 8);
        assert_eq!(DType::BF16.size(), 2);
        assert_eq!(DType::F8E5M2.size(), 1);
        assert_eq!(DType::I64.size(), 8);
        assert_eq!(DType::Bool.size(), 1);
    }

    #[test]
    fn unknown_names_are_none() {
        assert_eq!(DType::from_safetensors("F128"), None);
        assert_eq!(DType::from_torch("complex32"), None);
        assert_eq!(DType::from_numpy("|V1"), None);
    }
}
