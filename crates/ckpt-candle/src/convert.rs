//! Tensors across the bridge: ckpt's [`TensorData`] (bytes) to candle's
//! [`Tensor`] (on a device) and back, and moving whole state dicts to a
//! device and dtype (PyTorch's `map_location`).

use candle_core::{DType as CDType, Device, Tensor};
use ckpt::{DType, StateDict, TensorData};
use indexmap::IndexMap;

use crate::{Error, Result};

/// The candle dtype for a ckpt dtype. `bool` becomes `u8` (candle has no
/// bool); `float8_e5m2` has no candle counterpart.
pub fn candle_dtype(dtype: DType, name: &str) -> Result<CDType> {
    Ok(match dtype {
        DType::F64 => CDType::F64,
        DType::F32 => CDType::F32,
        DType::F16 => CDType::F16,
        DType::BF16 => CDType::BF16,
        DType::F8E4M3 => CDType::F8E4M3,
        DType::I64 => CDType::I64,
        DType::I32 => CDType::I32,
        DType::I16 => CDType::I16,
        DType::U8 | DType::Bool => CDType::U8,
        DType::U32 => CDType::U32,
        other => {
            return Err(Error::UnsupportedDType {
                name: name.to_owned(),
                dtype: other.to_string(),
                side: "candle",
            })
        }
    })
}

/// The ckpt dtype for a candle dtype (the sub-byte floats have none).
pub fn ckpt_dtype(dtype: CDType, name: &str) -> Result<DType> {
    Ok(match dtype {
        CDType::F64 => DType::F64,
        CDType::F32 => DType::F32,
        CDType::F16 => DType::F16,
        CDType::BF16 => DType::BF16,
        CDType::F8E4M3 => DType::F8E4M3,
        CDType::I64 => DType::I64,
        CDType::I32 => DType::I32,
        CDType::I16 => DType::I16,
        CDType::U8 => DType::U8,
        CDType::U32 => DType::U32,
        other => {
            return Err(Error::UnsupportedDType {
                name: name.to_owned(),
                dtype: other.as_str().to_owned(),
                side: "ckpt",
            })
        }
    })
}

/// Builds a candle tensor on `device` from ckpt bytes (one copy; one more
/// to reach a GPU).
///
/// ```
/// let t = ckpt::TensorData::from_f32(&[2], &[1.5, -2.0]).unwrap();
/// let c = ckpt_candle::to_candle(&t, &candle_core::Device::Cpu, "w").unwrap();
/// assert_eq!(c.to_vec1::<f32>().unwrap(), [1.5, -2.0]);
/// assert_eq!(ckpt_candle::from_candle(&c, "w").unwrap(), t);
/// ```
pub fn to_candle(tensor: &TensorData, device: &Device, name: &str) -> Result<Tensor> {
    let dtype = candle_dtype(tensor.dtype(), name)?;
    Ok(Tensor::from_raw_buffer(
        tensor.bytes(),
        dtype,
        tensor.shape(),
        device,
    )?)
}

/// Copies a candle tensor (from any device) into ckpt bytes.
pub fn from_candle(tensor: &Tensor, name: &str) -> Result<TensorData> {
    let dtype = ckpt_dtype(tensor.dtype(), name)?;
    let flat = tensor.flatten_all()?.to_device(&Device::Cpu)?;
    fn le<T: candle_core::WithDType, const N: usize>(
        t: &Tensor,
        to_le: fn(T) -> [u8; N],
    ) -> Result<Vec<u8>> {
        let values = t.to_vec1::<T>()?;
        let mut out = Vec::with_capacity(values.len() * N);
        for v in values {
            out.extend_from_slice(&to_le(v));
        }
        Ok(out)
    }
    let bytes = match tensor.dtype() {
        CDType::F64 => le(&flat, f64::to_le_bytes)?,
        CDType::F32 => le(&flat, f32::to_le_bytes)?,
        CDType::F16 => le(&flat, half::f16::to_le_bytes)?,
        CDType::BF16 => le(&flat, half::bf16::to_le_bytes)?,
        CDType::I64 => le(&flat, i64::to_le_bytes)?,
        CDType::I32 => le(&flat, i32::to_le_bytes)?,
        CDType::I16 => le(&flat, i16::to_le_bytes)?,
        CDType::U8 => le(&flat, |v: u8| [v])?,
        CDType::U32 => le(&flat, u32::to_le_bytes)?,
        CDType::F8E4M3 => le(&flat, |v: float8::F8E4M3| [v.to_bits()])?,
        _ => unreachable!("ckpt_dtype accepted only the dtypes above"),
    };
    Ok(TensorData::new(dtype, tensor.dims().to_vec(), bytes)?)
}

/// Where and in what dtype a loaded state dict's tensors go (PyTorch's
/// `map_location`, plus a float cast).
///
/// ```
/// use candle_core::{DType, Device};
/// let cpu_bf16 = ckpt_candle::Placement::new(Device::Cpu).dtype(DType::BF16);
/// assert_eq!(cpu_bf16.dtype, Some(DType::BF16));
/// ```
#[derive(Debug, Clone)]
pub struct Placement {
    /// The device every tensor goes to, whatever device it was saved from.
    pub device: Device,
    /// Float tensors are cast to this dtype; integer tensors keep theirs.
    pub dtype: Option<CDType>,
}

impl Placement {
    /// Tensors on `device`, in the dtypes they were saved in.
    pub fn new(device: Device) -> Placement {
        Placement {
            device,
            dtype: None,
        }
    }

    /// Casts float tensors to `dtype`.
    pub fn dtype(mut self, dtype: CDType) -> Placement {
        self.dtype = Some(dtype);
        self
    }

    /// Places one tensor.
    pub fn place(&self, tensor: &TensorData, name: &str) -> Result<Tensor> {
        let t = to_candle(tensor, &self.device, name)?;
        Ok(match self.dtype {
            Some(dtype) if tensor.dtype().is_float() && t.dtype() != dtype => t.to_dtype(dtype)?,
            _ => t,
        })
    }

    /// Places a whole state dict, keeping its order.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("m.safetensors");
    /// # let mut sd = ckpt::StateDict::new();
    /// # sd.insert("fc.weight".into(), ckpt::TensorData::from_f32(&[1, 2], &[1.0, 2.0]).unwrap());
    /// # ckpt::save(&path, &sd.into()).unwrap();
    /// use candle_core::{DType, Device};
    /// // A file saved from CUDA loads on the CPU, in bf16:
    /// let sd = ckpt::load_state_dict(&path).unwrap();
    /// let tensors = ckpt_candle::Placement::new(Device::Cpu).dtype(DType::BF16).place_all(&sd).unwrap();
    /// assert_eq!(tensors["fc.weight"].dtype(), DType::BF16);
    /// ```
    pub fn place_all(&self, state_dict: &StateDict) -> Result<IndexMap<String, Tensor>> {
        state_dict
            .iter()
            .map(|(name, t)| Ok((name.clone(), self.place(t, name)?)))
            .collect()
    }
}
