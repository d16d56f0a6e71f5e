//! `ckpt run MODEL --input x.npy --output y.npy`: batched inference.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use ckpt::Value;
use ckpt_candle::{from_candle, to_candle, Model};

use crate::args::RunArgs;
use crate::shared::model_io::{device, load_package};

/// Runs the model (a package, or a state dict with `--spec`) on every
/// sample of `--input` in batches and writes the outputs to `--output`
/// (float32).
pub fn run(args: &RunArgs, out: &mut dyn Write) -> Result<()> {
    let (input, output) = (args.input.as_path(), args.output.as_path());
    let (batch_size, device_name) = (args.batch_size, &args.device);
    let device = device(device_name)?;
    let package = load_package(
        &args.model,
        args.spec.as_deref(),
        args.input_shape.as_ref().map(|s| s.0.as_slice()),
    )?;
    let model = Model::from_package(package, &device)?;
    let Value::Tensor(x) = ckpt::load(input)? else {
        bail!(
            "{}: expected one array (.npy), found several",
            input.display()
        );
    };
    let spec = model.spec();
    if x.shape().get(1..) != Some(spec.input_shape.as_slice()) {
        bail!(
            "{}: the model takes samples of shape {:?} (inputs [N, {}]), the array is {:?}",
            input.display(),
            spec.input_shape,
            spec.input_shape
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            x.shape()
        );
    }
    let takes_ids = spec.takes_ids();
    let x = to_candle(&x, &device, "input")?;
    let x = if takes_ids {
        x.to_dtype(DType::U32)?
    } else {
        x.to_dtype(DType::F32)?
    };
    let n = x.dim(0)?;
    let start = Instant::now();
    let mut parts = Vec::new();
    for at in (0..n).step_by(batch_size.max(1)) {
        let len = batch_size.min(n - at);
        parts.push(model.forward(&x.narrow(0, at, len)?)?);
    }
    let y = if parts.is_empty() {
        let mut shape = vec![0];
        shape.extend(spec.output_shape()?);
        Tensor::zeros(shape, DType::F32, &device)?
    } else {
        Tensor::cat(&parts, 0)?
    };
    let seconds = start.elapsed().as_secs_f64();
    let y = from_candle(&y.to_dtype(DType::F32)?, "output")?;
    ckpt::save(output, &Value::Tensor(y.clone()))?;
    let name = model.info().map_or(spec.name.clone(), |i| {
        format!("{} {}", i.architecture, i.model_version)
    });
    writeln!(
        out,
        "{}: {n} samples through {name} on {device_name} in batches of {batch_size}: {:?} in {:.1} ms",
        output.display(),
        y.shape(),
        seconds * 1e3
    )?;
    Ok(())
}
