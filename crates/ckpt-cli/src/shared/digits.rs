//! The demo's handwritten digits, and model packages scored on them:
//! shared by `ckpt demo`, `ckpt eval` and the `--eval` of `ckpt prune` and
//! `ckpt quantize`.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use ckpt::Package;
use ckpt_candle::{Model, Rng};

use crate::shared::output::{human_bytes, thousands};

/// The digits, as shipped by scikit-learn (data/README.md): 1,797 lines of
/// 64 pixels (0–16) and a label.
const DIGITS: &[u8] = include_bytes!("../../../../data/digits.csv.gz");

/// Held out for the final accuracy, and for validation each epoch.
const TEST: usize = 270;
const VALIDATION: usize = 270;

/// Samples as a `[n, 64]` float tensor (pixels / 16) and `[n]` labels.
pub struct Split {
    pub x: Tensor,
    pub y: Tensor,
}

impl Split {
    pub fn len(&self) -> usize {
        self.x.dims()[0]
    }
}

fn gunzip(gz: &[u8]) -> Result<Vec<u8>> {
    if gz.len() < 18 || gz[..3] != [0x1f, 0x8b, 8] {
        bail!("the embedded digits are not gzip");
    }
    let flags = gz[3];
    let mut at = 10;
    if flags & 4 != 0 {
        at += 2 + usize::from(u16::from_le_bytes([gz[at], gz[at + 1]]));
    }
    for bit in [8, 16] {
        if flags & bit != 0 {
            at += gz[at..]
                .iter()
                .position(|&b| b == 0)
                .context("a gzip header string without its end")?
                + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    miniz_oxide::inflate::decompress_to_vec(&gz[at..gz.len() - 8])
        .map_err(|e| anyhow::anyhow!("the embedded digits do not inflate: {e:?}"))
}

/// Train, validation and test splits, the same for every seed.
pub fn digits() -> Result<(Split, Split, Split)> {
    let text = String::from_utf8(gunzip(DIGITS)?)?;
    let mut rows: Vec<(Vec<f32>, u32)> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let values: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()?;
        if values.len() != 65 {
            bail!("a digits line with {} values", values.len());
        }
        rows.push((
            values[..64].iter().map(|p| p / 16.0).collect(),
            values[64] as u32,
        ));
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    Rng::new(0x0d16_1750).shuffle(&mut order);
    let take = |idx: &[usize]| -> Result<Split> {
        let x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| rows[i].0.iter().copied())
            .collect();
        let y: Vec<u32> = idx.iter().map(|&i| rows[i].1).collect();
        Ok(Split {
            x: Tensor::from_vec(x, (idx.len(), 64), &Device::Cpu)?,
            y: Tensor::from_vec(y, idx.len(), &Device::Cpu)?,
        })
    };
    let (test, rest) = order.split_at(TEST);
    let (val, train) = rest.split_at(VALIDATION);
    Ok((take(train)?, take(val)?, take(test)?))
}

/// Loss and accuracy of `model` (inference mode) on a split.
pub fn evaluate(model: &Model, split: &Split) -> Result<(f64, f64)> {
    let logits = model.forward(&split.x)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &split.y)?.to_scalar::<f32>()?;
    let predicted = logits.argmax(1)?;
    let correct = predicted
        .eq(&split.y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok((f64::from(loss), f64::from(correct) / split.len() as f64))
}

/// Forward passes timed per model (the median is reported).
pub const RUNS: usize = 41;

/// What `measure` found.
pub struct Measured {
    /// Held-out accuracy, 0–1.
    pub accuracy: f64,
    /// Median time of one forward pass over the 270 held-out digits.
    pub seconds: f64,
}

/// Accuracy on the demo's 270 held-out digits and the median time of a
/// forward pass over them; `name` is for the error when the model does
/// not take digits.
pub fn measure(model: &Model, name: &str) -> Result<Measured> {
    let spec = model.spec();
    if spec.input_shape != [64] || spec.output_shape()? != [10] {
        bail!(
            "{name}: --eval runs the demo's digits (input [64], 10 classes); this model takes {:?} and gives {:?}",
            spec.input_shape,
            spec.output_shape()?
        );
    }
    let (_, _, test) = digits()?;
    let (_, accuracy) = evaluate(model, &test)?;
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            model.forward(&test.x)?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    Ok(Measured {
        accuracy,
        seconds: times[RUNS / 2],
    })
}

/// A model package from a file, run as its quantization record says.
pub fn load(path: &Path) -> Result<(Package, Model)> {
    let package = crate::shared::model_io::load_package(path, None, None)?;
    let model = Model::from_package(package.clone(), &Device::Cpu)?;
    Ok((package, model))
}

/// The cells `ckpt eval` and `--eval` show for one model file.
pub fn row(path: &Path, package: &Package, model: &Model) -> Result<Vec<String>> {
    let m = measure(model, &path.display().to_string())?;
    let (elements, nonzero) = crate::shared::model_io::counts(&package.weights);
    let size = std::fs::metadata(path)?.len();
    let kind = match &package.quantization {
        Some(q) => format!("int8 {}", q.activations.name().replace('_', "-")),
        None => "float".into(),
    };
    Ok(vec![
        kind,
        thousands(elements),
        thousands(nonzero),
        human_bytes(size),
        format!("{:.1}%", m.accuracy * 100.0),
        format!("{:.3} ms", m.seconds * 1e3),
    ])
}

/// The header of [`row`]'s table, after the leading label column.
pub const HEADER: [&str; 6] = [
    "weights",
    "parameters",
    "non-zeros",
    "on disk",
    "accuracy",
    "inference",
];
