//! `ckpt eval` and the `--eval` of `ckpt prune`/`ckpt quantize`: a model
//! package's held-out accuracy on the demo's digits and its inference
//! time, beside its size on disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;
use ckpt::Package;
use ckpt_candle::Model;

use crate::demo::{digits, evaluate};
use crate::output::{human_bytes, thousands, Table};

/// Forward passes timed per model (the median is reported).
const RUNS: usize = 41;

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
    let package = crate::run::load_package(path, None)?;
    let model = Model::from_package(package.clone(), &Device::Cpu)?;
    Ok((package, model))
}

/// The cells `ckpt eval` and `--eval` show for one model file.
pub fn row(path: &Path, package: &Package, model: &Model) -> Result<Vec<String>> {
    let m = measure(model, &path.display().to_string())?;
    let (elements, nonzero) = crate::compress::counts(&package.weights);
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

/// `ckpt eval FILE...`: one row per model package, sizes relative to the
/// first.
pub fn eval(paths: &[PathBuf], out: &mut dyn Write) -> Result<()> {
    let mut header = vec!["model"];
    header.extend(HEADER);
    header.push("size");
    let mut table = Table::new(
        header,
        vec![false, false, true, true, true, true, true, true],
    );
    let mut first = None;
    for path in paths {
        let (package, model) = load(path)?;
        let mut cells = vec![path.display().to_string()];
        cells.extend(row(path, &package, &model)?);
        let size = std::fs::metadata(path)?.len() as f64;
        let base = *first.get_or_insert(size);
        cells.push(format!("{:.1}%", 100.0 * size / base));
        table.row(cells);
    }
    table.write(out)?;
    writeln!(
        out,
        "accuracy on the demo's 270 held-out digits; inference = median of {RUNS} forward passes over them (one batch, CPU); size relative to the first file"
    )?;
    Ok(())
}
