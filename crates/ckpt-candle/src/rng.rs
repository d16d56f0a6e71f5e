//! A small, seedable random number generator whose whole state fits in a
//! checkpoint, so that data order, dropout and initialisation continue
//! exactly after a resume. (candle's CPU generator cannot be seeded or
//! saved.)

use candle_core::{Device, Tensor};
use ckpt::{DType, TensorData};

use crate::{Error, Result};

/// xoshiro256** seeded through splitmix64: fast, 256 bits of state,
/// saved as a 32-byte `uint8` tensor (as `torch.get_rng_state()` is a
/// `uint8` tensor).
///
/// ```
/// let mut a = ckpt_candle::Rng::new(7);
/// a.next_u64();
/// let mut b = ckpt_candle::Rng::from_state(&a.state()).unwrap();
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform `f64` in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal `f64` (Box–Muller; one draw per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates), as a data loader shuffles
    /// sample indices each epoch.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A dropout mask for `shape` on `device`: each element is 0 with
    /// probability `p` and `1 / (1 - p)` otherwise (inverted dropout, as
    /// `torch.nn.Dropout` in training mode).
    pub fn dropout_mask(&mut self, p: f64, shape: &[usize], device: &Device) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::InvalidArgument(format!(
                "dropout probability {p} is not in [0, 1)"
            )));
        }
        let n: usize = shape.iter().product();
        let keep = (1.0 / (1.0 - p)) as f32;
        let values: Vec<f32> = (0..n)
            .map(|_| if self.uniform() < p { 0.0 } else { keep })
            .collect();
        Ok(Tensor::from_vec(values, shape, device)?)
    }

    /// Applies dropout to `x` in training mode (`x * mask`).
    pub fn dropout(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        let mask = self.dropout_mask(p, x.dims(), x.device())?;
        Ok(x.mul(&mask.to_dtype(x.dtype())?)?)
    }

    /// The whole state, as a 32-byte `uint8` tensor.
    pub fn state(&self) -> TensorData {
        let bytes: Vec<u8> = self.s.iter().flat_map(|w| w.to_le_bytes()).collect();
        TensorData::new(DType::U8, vec![32], bytes).expect("32 bytes of u8")
    }

    /// A generator from a state written by [`Rng::state`].
    pub fn from_state(state: &TensorData) -> Result<Rng> {
        let bytes = state.bytes();
        if state.dtype() != DType::U8 || bytes.len() != 32 {
            return Err(Error::InvalidArgument(format!(
                "an rng state is 32 bytes of uint8, not {} of {}",
                bytes.len(),
                state.dtype()
            )));
        }
        let mut s = [0u64; 4];
        for (w, chunk) in s.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        }
        if s == [0; 4] {
            return Err(Error::InvalidArgument(
                "an all-zero rng state never changes".into(),
            ));
        }
        Ok(Rng { s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_statistically_sane() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        let xs: Vec<f64> = (0..10_000).map(|_| a.uniform()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert_eq!(xs, (0..10_000).map(|_| b.uniform()).collect::<Vec<_>>());
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let normals: Vec<f64> = (0..10_000).map(|_| a.normal()).collect();
        let m = normals.iter().sum::<f64>() / 1e4;
        let var = normals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 1e4;
        assert!(m.abs() < 0.05 && (var - 1.0).abs() < 0.05, "{m} {var}");
        assert_ne!(Rng::new(1), Rng::new(2));
    }

    #[test]
    fn shuffle_is_a_permutation_and_state_round_trips() {
        let mut rng = Rng::new(3);
        let mut v: Vec<u32> = (0..100).collect();
        rng.shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        let saved = rng.state();
        let mut resumed = Rng::from_state(&saved).unwrap();
        assert_eq!(rng.next_u64(), resumed.next_u64());
        let zero = TensorData::new(DType::U8, vec![32], vec![0; 32]).unwrap();
        assert!(Rng::from_state(&zero).is_err());
        let short = TensorData::new(DType::U8, vec![3], vec![1; 3]).unwrap();
        assert!(Rng::from_state(&short).is_err());
    }

    #[test]
    fn dropout_keeps_the_expected_fraction_scaled() {
        let mut rng = Rng::new(5);
        let mask = rng.dropout_mask(0.25, &[1000], &Device::Cpu).unwrap();
        let values = mask.to_vec1::<f32>().unwrap();
        let kept = values.iter().filter(|&&v| v != 0.0).count();
        assert!((700..800).contains(&kept), "{kept}");
        assert!(values
            .iter()
            .all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        assert!(rng.dropout_mask(1.0, &[1], &Device::Cpu).is_err());
    }
}
