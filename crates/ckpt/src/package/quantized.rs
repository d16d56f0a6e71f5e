//! Quantized packages (format 2): torch's dynamically quantized state
//! dicts read as one, and quantizing or dequantizing a package's weights.

use super::{fit, Package, PackageInfo, FLOAT_FORMAT, PACKAGE_FORMAT};
use crate::compress::quantize::{self, Activations, Granularity, Quantization};
use crate::{Error, ModelSpec, Result, StateDict, TensorData};

/// Where `quantize_dynamic` keeps a Linear layer's packed weights.
const PACKED: &str = "._packed_params._packed_params/";

impl Package {
    /// A package of `spec` and a state dict as PyTorch users have it: plain
    /// float weights ([`Package::new`]), or the state dict of
    /// `torch.ao.quantization.quantize_dynamic(model)`, whose Linear layers
    /// `P` hold `P._packed_params._packed_params` (int8 weight and bias, as
    /// ckpt reads them: `…/0`, `…/0_scale`, `…/1`) beside unused `P.scale`
    /// and `P.zero_point`. The latter becomes a quantized package (format 2,
    /// dynamic activations) with the weights as torch stored them.
    pub fn from_state_dict(
        spec: ModelSpec,
        weights: StateDict,
        info: PackageInfo,
    ) -> Result<Package> {
        if !weights.keys().any(|n| n.contains(PACKED)) {
            return Package::new(spec, weights, info);
        }
        let layers: Vec<String> = weights
            .keys()
            .filter_map(|n| n.strip_suffix(&format!("{PACKED}0")).map(str::to_owned))
            .collect();
        let (renamed, granularity) = unpack(&weights, &layers)?;
        let quantization = Quantization {
            granularity: granularity.unwrap_or_default(),
            activations: Activations::Dynamic,
            tensors: layers.iter().map(|l| format!("{l}.weight")).collect(),
        };
        let expected = quantization.expected(&spec.expected())?;
        let weights = fit(renamed, &expected)?;
        let mut info = info;
        info.format_version = PACKAGE_FORMAT;
        Ok(Package {
            weights,
            spec,
            info,
            optimizer: None,
            quantization: Some(quantization),
            warnings: Vec::new(),
        })
    }

    /// The package with the weights `select` picks quantized to int8
    /// (see [`crate::compress::quantize`]); already quantized packages are
    /// refused. The result is package format 2.
    ///
    /// ```
    /// use ckpt::compress::quantize::{Activations, Granularity};
    /// let spec = ckpt::ModelSpec::from_json(r#"{"name": "lin", "input_shape": [2], "layers": [
    ///     {"name": "fc", "type": "Linear", "in_features": 2, "out_features": 1}]}"#).unwrap();
    /// let mut w = ckpt::StateDict::new();
    /// // Values on the int8 grid come back exactly.
    /// w.insert("fc.weight".into(), ckpt::TensorData::from_f32(&[1, 2], &[12.7, -6.4]).unwrap());
    /// w.insert("fc.bias".into(), ckpt::TensorData::from_f32(&[1], &[0.5]).unwrap());
    /// let info = ckpt::PackageInfo::new(&spec, "1.0.0");
    /// let package = ckpt::Package::new(spec, w, info).unwrap();
    /// let q = package
    ///     .quantize(Granularity::PerChannel, Activations::Dynamic, |name, _| name == "fc.weight")
    ///     .unwrap();
    /// assert_eq!(q.weights.keys().collect::<Vec<_>>(), ["fc.weight", "fc.weight_scale", "fc.bias"]);
    /// assert_eq!(q.dequantize().unwrap().weights["fc.weight"].values_f64().collect::<Vec<_>>(), [12.7f32 as f64, -6.4f32 as f64]);
    /// ```
    pub fn quantize(
        &self,
        granularity: Granularity,
        activations: Activations,
        select: impl Fn(&str, &TensorData) -> bool,
    ) -> Result<Package> {
        if self.quantization.is_some() {
            return Err(Error::BadQuantization(
                "the package is already quantized".into(),
            ));
        }
        let tensors: Vec<String> = self
            .weights
            .iter()
            .filter(|(n, t)| t.dtype().is_float() && select(n, t))
            .map(|(n, _)| n.clone())
            .collect();
        let weights = quantize::quantize_state_dict(&self.weights, granularity, |n, _| {
            tensors.iter().any(|t| t == n)
        })?;
        let mut info = self.info.clone();
        info.format_version = PACKAGE_FORMAT;
        Ok(Package {
            weights,
            info,
            quantization: Some(Quantization {
                granularity,
                activations,
                tensors,
            }),
            ..self.clone()
        })
    }

    /// The package with float weights again (`int8 × scale`), format 1.
    pub fn dequantize(&self) -> Result<Package> {
        if self.quantization.is_none() {
            return Ok(self.clone());
        }
        let mut info = self.info.clone();
        info.format_version = FLOAT_FORMAT;
        Ok(Package {
            weights: quantize::dequantize_state_dict(&self.weights)?,
            info,
            quantization: None,
            ..self.clone()
        })
    }
}

/// The weights of a `quantize_dynamic` state dict under ckpt's int8
/// names (`P.weight`, `P.weight_scale`, `P.bias` for each packed layer
/// `P` of `layers`, without the unused `P.scale` and `P.zero_point`),
/// and the granularity of their scales.
fn unpack(weights: &StateDict, layers: &[String]) -> Result<(StateDict, Option<Granularity>)> {
    let bad = |problem: String| Error::BadQuantization(problem);
    let mut renamed = StateDict::new();
    let mut granularity = None;
    for (name, t) in weights.iter() {
        let (layer, part) = match name.split_once(PACKED) {
            Some((layer, part)) => (layer, part),
            None => {
                let owner = name.rsplit_once('.').map_or("", |(o, _)| o);
                let unused = matches!(name.rsplit_once('.'), Some((_, "scale" | "zero_point")));
                if !(unused && layers.iter().any(|l| l == owner)) {
                    renamed.insert(name.clone(), t.clone());
                }
                continue;
            }
        };
        let target = match part {
            "0" => format!("{layer}.weight"),
            "0_scale" => {
                let g = if t.shape().is_empty() {
                    Granularity::PerTensor
                } else {
                    Granularity::PerChannel
                };
                if granularity.replace(g).is_some_and(|before| before != g) {
                    return Err(bad("layers quantized both per tensor and per channel".into()));
                }
                renamed.insert(format!("{layer}.weight_scale"), t.cast(crate::DType::F32)?);
                continue;
            }
            "1" => format!("{layer}.bias"),
            other => {
                return Err(bad(format!(
                    "{layer}: weight part {other:?}: ckpt's int8 layout is symmetric int8 with scales along dimension 0 (torch's default qconfig)"
                )))
            }
        };
        renamed.insert(target, t.clone());
    }
    Ok((renamed, granularity))
}
