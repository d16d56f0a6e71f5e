//! Element values: decoding any dtype to `f64`, and casting float tensors
//! between float dtypes (what `--dtype` and `model.half()` do).

use crate::{DType, Error, Result, TensorData};

impl DType {
    /// Decodes one little-endian element (exactly `self.size()` bytes) to
    /// `f64`. Every dtype ckpt knows converts exactly, except `i64` and
    /// `u64` magnitudes above 2^53; a complex element gives its real part.
    ///
    /// ```
    /// use ckpt::DType;
    /// assert_eq!(DType::BF16.decode_f64(&[0x80, 0x3f]), 1.0);
    /// assert_eq!(DType::F8E4M3.decode_f64(&[0x38]), 1.0);
    /// assert_eq!(DType::Bool.decode_f64(&[1]), 1.0);
    /// ```
    pub fn decode_f64(self, bytes: &[u8]) -> f64 {
        let mut raw = [0u8; 8];
        let n = bytes.len().min(8);
        raw[..n].copy_from_slice(&bytes[..n]);
        match self {
            DType::F64 => f64::from_le_bytes(raw),
            DType::F32 => f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64,
            DType::F16 => half::f16::from_le_bytes([raw[0], raw[1]]).to_f64(),
            DType::BF16 => half::bf16::from_le_bytes([raw[0], raw[1]]).to_f64(),
            DType::F8E4M3 => f8_e4m3fn(raw[0]),
            DType::F8E5M2 => f8_e5m2(raw[0]),
            DType::I64 => i64::from_le_bytes(raw) as f64,
            DType::I32 => i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64,
            DType::I16 => i16::from_le_bytes([raw[0], raw[1]]) as f64,
            DType::I8 => raw[0] as i8 as f64,
            DType::U8 => raw[0] as f64,
            DType::Bool => (raw[0] != 0) as u8 as f64,
            DType::U16 => u16::from_le_bytes([raw[0], raw[1]]) as f64,
            DType::U32 => u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64,
            DType::U64 => u64::from_le_bytes(raw) as f64,
            DType::C64 => f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64,
            DType::C128 => f64::from_le_bytes(raw),
            DType::F8E4M3Fnuz => f8_fnuz(raw[0], 3, 8),
            DType::F8E5M2Fnuz => f8_fnuz(raw[0], 2, 16),
            DType::F8E8M0 => match raw[0] {
                0xFF => f64::NAN,
                b => 2f64.powi(b as i32 - 127),
            },
        }
    }
}

/// float8 e4m3fn: bias 7, no infinities, `S.1111.111` is NaN.
fn f8_e4m3fn(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0F) as i32;
    let man = (b & 0x07) as f64;
    if exp == 0x0F && b & 0x07 == 0x07 {
        return f64::NAN;
    }
    if exp == 0 {
        sign * man * 2f64.powi(-9)
    } else {
        sign * (1.0 + man / 8.0) * 2f64.powi(exp - 7)
    }
}

/// The `fnuz` float8s: `man_bits` mantissa bits, the given bias, no
/// infinities, no negative zero, and `0x80` the one NaN.
fn f8_fnuz(b: u8, man_bits: u32, bias: i32) -> f64 {
    if b == 0x80 {
        return f64::NAN;
    }
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b & 0x7F) >> man_bits) as i32;
    let man = (b & ((1 << man_bits) - 1)) as f64;
    let scale = (1u32 << man_bits) as f64;
    if exp == 0 {
        sign * man / scale * 2f64.powi(1 - bias)
    } else {
        sign * (1.0 + man / scale) * 2f64.powi(exp - bias)
    }
}

/// float8 e5m2: bias 15, IEEE-style infinities and NaNs.
fn f8_e5m2(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 2) & 0x1F) as i32;
    let man = (b & 0x03) as f64;
    match exp {
        0 => sign * man * 2f64.powi(-16),
        0x1F if man == 0.0 => sign * f64::INFINITY,
        0x1F => f64::NAN,
        _ => sign * (1.0 + man / 4.0) * 2f64.powi(exp - 15),
    }
}

impl TensorData {
    /// Every element as `f64`, in row-major order.
    pub fn values_f64(&self) -> impl Iterator<Item = f64> + '_ {
        let dtype = self.dtype();
        self.bytes()
            .chunks_exact(dtype.size())
            .map(move |c| dtype.decode_f64(c))
    }

    /// This tensor in another float dtype, rounding to nearest even (the
    /// same results as torch's `.to(dtype)`). Non-float tensors, and casts
    /// to the dtype the tensor already has, come back unchanged.
    ///
    /// Casting to float8 is not supported yet.
    pub fn cast(&self, dtype: DType) -> Result<TensorData> {
        if self.dtype() == dtype || !self.dtype().is_float() {
            return Ok(self.clone());
        }
        let mut out = Vec::with_capacity(self.numel() * dtype.size());
        match dtype {
            DType::F64 => self
                .values_f64()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            DType::F32 => self
                .values_f64()
                .for_each(|v| out.extend_from_slice(&(v as f32).to_le_bytes())),
            DType::F16 => self
                .values_f64()
                .for_each(|v| out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes())),
            DType::BF16 => self
                .values_f64()
                .for_each(|v| out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes())),
            other => {
                return Err(Error::UnsupportedCast {
                    from: self.dtype(),
                    to: other,
                })
            }
        }
        TensorData::new(dtype, self.shape().to_vec(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float8_decodes_known_values() {
        assert_eq!(f8_e4m3fn(0x7E), 448.0); // the largest e4m3fn
        assert_eq!(f8_e4m3fn(0x01), 2f64.powi(-9)); // the smallest subnormal
        assert!(f8_e4m3fn(0x7F).is_nan());
        assert_eq!(f8_e4m3fn(0xB8), -1.0);
        assert_eq!(f8_e5m2(0x7B), 57344.0); // the largest finite e5m2
        assert_eq!(f8_e5m2(0x7C), f64::INFINITY);
        assert!(f8_e5m2(0x7D).is_nan());
        assert_eq!(f8_e5m2(0x01), 2f64.powi(-16));
    }

    #[test]
    fn casts_round_to_nearest_even() {
        let t = TensorData::from_f32(&[3], &[1.0, 65520.0, 1.0 + 1.0 / 2048.0]).unwrap();
        let h = t.cast(DType::F16).unwrap();
        let back: Vec<f64> = h.values_f64().collect();
        assert_eq!(back, [1.0, f64::INFINITY, 1.0]);
        assert_eq!(h.bytes().len(), 6);
    }

    #[test]
    fn integer_tensors_are_not_cast() {
        let t = TensorData::new(DType::I64, vec![1], 5i64.to_le_bytes().to_vec()).unwrap();
        assert_eq!(t.cast(DType::F16).unwrap(), t);
    }

    #[test]
    fn casting_to_float8_is_an_error() {
        let t = TensorData::from_f32(&[1], &[1.0]).unwrap();
        assert!(matches!(
            t.cast(DType::F8E4M3),
            Err(Error::UnsupportedCast { .. })
        ));
    }
}
