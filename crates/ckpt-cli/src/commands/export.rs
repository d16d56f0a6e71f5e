//! `ckpt export MODEL OUT`: ONNX (with a check in an independent runtime)
//! or TorchScript from a model package (or a state dict plus `--spec`, or
//! a whole pickled model), with a report.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use ckpt::export::onnx::{export, OnnxOptions};
use ckpt::export::torchscript::{self, TorchScriptOptions};
use ckpt::Package;
use indexmap::IndexMap;

use crate::args::{ExportArgs, ExportFormat};
use crate::shared::model_io::load_package;
use crate::shared::output::{human_bytes, thousands};

/// Exports and reports; returns the exit code (1 when the check finds a
/// difference).
pub fn run(o: &ExportArgs, out: &mut dyn Write) -> Result<u8> {
    let format = format(o)?;
    let package = load_package(
        &o.model,
        o.spec.as_deref(),
        o.input_shape.as_ref().map(|s| s.0.as_slice()),
    )?;
    match format {
        ExportFormat::Onnx => onnx(o, &package, out),
        ExportFormat::Torchscript => torchscript(o, &package, out),
    }
}

/// `--format`, or the format OUT's extension names; ONNX's options are
/// refused for TorchScript.
fn format(o: &ExportArgs) -> Result<ExportFormat> {
    let ext = o.output.extension().and_then(|e| e.to_str()).unwrap_or("");
    let format = match (o.format, ext.to_ascii_lowercase().as_str()) {
        (Some(f), _) => f,
        (None, "onnx") => ExportFormat::Onnx,
        (None, "pt" | "pth" | "torchscript") => ExportFormat::Torchscript,
        (None, _) => bail!(
            "{}: say the format with --format onnx or --format torchscript \
             (or name the file .onnx or .pt)",
            o.output.display()
        ),
    };
    let onnx_only = o.opset.is_some()
        || o.static_batch.is_some()
        || o.input_name.is_some()
        || o.output_name.is_some()
        || o.no_check;
    if format == ExportFormat::Torchscript && onnx_only {
        bail!(
            "--opset, --static-batch, --input-name, --output-name and --no-check are ONNX options"
        );
    }
    Ok(format)
}

/// The package's metadata as export metadata: version, architecture,
/// input shape, classes, creation time, metrics, the user's.
fn metadata(package: &Package) -> Result<IndexMap<String, String>> {
    let i = &package.info;
    let mut m = IndexMap::new();
    m.insert("model_version".into(), i.model_version.clone());
    m.insert("architecture".into(), i.architecture.clone());
    m.insert(
        "input_shape".into(),
        serde_json::to_string(&package.spec.input_shape)?,
    );
    if !i.classes.is_empty() {
        m.insert("classes".into(), serde_json::to_string(&i.classes)?);
    }
    if !i.created.is_empty() {
        m.insert("created".into(), i.created.clone());
    }
    for (k, v) in &i.metrics {
        m.insert(format!("metric.{k}"), v.to_string());
    }
    for (k, v) in &i.user {
        m.insert(k.clone(), v.clone());
    }
    Ok(m)
}

/// `Linear×2, ReLU` from counts by name.
fn counted(counts: &std::collections::BTreeMap<String, usize>) -> String {
    let names: Vec<String> = counts
        .iter()
        .map(|(op, n)| {
            if *n > 1 {
                format!("{op}×{n}")
            } else {
                op.clone()
            }
        })
        .collect();
    names.join(", ")
}

fn torchscript(o: &ExportArgs, package: &Package, out: &mut dyn Write) -> Result<u8> {
    let mut options = TorchScriptOptions::default();
    options.metadata = metadata(package)?;
    options.quantization = package.quantization.clone();
    let report = torchscript::export(&package.spec, package.weights.clone(), &options, &o.output)?;
    writeln!(
        out,
        "{} -> {} (TorchScript, file format version {})",
        o.model.display(),
        o.output.display(),
        report.version
    )?;
    writeln!(out, "  modules:    {}", counted(&report.modules))?;
    writeln!(out, "  parameters: {}", thousands(report.parameters))?;
    writeln!(out, "  file:       {}", human_bytes(report.bytes))?;
    writeln!(
        out,
        "  check:      none here (ckpt has no TorchScript runtime); torch.jit.load runs it"
    )?;
    Ok(0)
}

fn onnx(o: &ExportArgs, package: &Package, out: &mut dyn Write) -> Result<u8> {
    let (model_path, output) = (&o.model, o.output.as_path());
    let i = &package.info;
    let mut options = OnnxOptions::default();
    if let Some(opset) = o.opset {
        options.opset = opset;
    }
    options.batch = o.static_batch;
    if let Some(name) = &o.input_name {
        options.input_name = name.clone();
    }
    if let Some(name) = &o.output_name {
        options.output_name = name.clone();
    }
    options.quantization = package.quantization.clone();
    options.doc_string = format!(
        "{} {}, exported by ckpt {}",
        i.architecture,
        i.model_version,
        env!("CARGO_PKG_VERSION")
    );
    options.metadata = metadata(package)?;
    let report = export(&package.spec, package.weights.clone(), &options, output)?;

    writeln!(
        out,
        "{} -> {} (opset {}, batch {})",
        model_path.display(),
        output.display(),
        options.opset,
        o.static_batch
            .map_or("dynamic".to_owned(), |n| n.to_string())
    )?;
    writeln!(out, "  operators:  {}", counted(&report.operators))?;
    writeln!(out, "  parameters: {}", thousands(report.parameters))?;
    write!(out, "  file:       {}", human_bytes(report.bytes))?;
    if let Some((path, bytes)) = &report.external {
        write!(
            out,
            " + external data {} ({})",
            path.display(),
            human_bytes(*bytes)
        )?;
    }
    writeln!(out)?;
    if o.no_check {
        writeln!(out, "  check:      skipped (--no-check)")?;
        return Ok(0);
    }
    check(package, output, o.static_batch.unwrap_or(3), out)
}

#[cfg(not(feature = "onnx-check"))]
fn check(_: &Package, _: &Path, _: usize, out: &mut dyn Write) -> Result<u8> {
    writeln!(
        out,
        "  check:      skipped (this ckpt was built without the onnx-check feature)"
    )?;
    Ok(0)
}

/// Runs the file in tract on a random batch and compares with ckpt's own
/// inference.
#[cfg(feature = "onnx-check")]
fn check(package: &Package, file: &Path, batch: usize, out: &mut dyn Write) -> Result<u8> {
    use candle_core::Device;
    use ckpt::{DType, TensorData};
    use ckpt_candle::{from_candle, to_candle, Model, Rng};
    use tract_onnx::prelude::*;
    let spec = &package.spec;
    let mut rng = Rng::new(0x000c_4ec4);
    let mut shape = vec![batch];
    shape.extend(&spec.input_shape);
    let count: usize = shape.iter().product();
    let vocab = match spec.layers.first().map(|l| &l.kind) {
        Some(ckpt::LayerKind::Embedding { num_embeddings, .. }) => *num_embeddings as u64,
        _ => 0,
    };
    let (x, input) = if vocab > 0 {
        let ids: Vec<i64> = (0..count).map(|_| rng.below(vocab) as i64).collect();
        let bytes = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        (
            TensorData::new(DType::I64, shape.clone(), bytes)?,
            Tensor::from_shape(&shape, &ids)?,
        )
    } else {
        let values: Vec<f32> = (0..count).map(|_| rng.normal() as f32).collect();
        (
            TensorData::from_f32(&shape, &values)?,
            Tensor::from_shape(&shape, &values)?,
        )
    };
    let run = |package: &Package| -> Result<Vec<f64>> {
        let model = Model::from_package(package.clone(), &Device::Cpu)?;
        let y = model.forward(&to_candle(&x, &Device::Cpu, "input")?)?;
        Ok(from_candle(&y, "output")?.values_f64().collect())
    };
    let ours = run(package)?;
    // A quantized model may differ from ckpt's by as much as ckpt's own
    // quantized output differs from the float model's.
    let quantization_error = match &package.quantization {
        Some(_) => run(&package.dequantize()?)?
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max),
        None => 0.0,
    };
    let runnable = tract_onnx::onnx()
        .model_for_path(file)
        .and_then(|m| {
            m.with_input_fact(
                0,
                InferenceFact::dt_shape(input.datum_type(), shape.clone()),
            )
        })
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow::anyhow!("{}: tract cannot load the export: {e:#}", file.display()))?;
    let result = runnable
        .run(tvec!(input.into_tvalue()))
        .map_err(|e| anyhow::anyhow!("{}: tract cannot run the export: {e:#}", file.display()))?;
    let theirs: Vec<f64> = result[0]
        .to_plain_array_view::<f32>()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    if theirs.len() != ours.len() {
        bail!("tract gives {} outputs, ckpt {}", theirs.len(), ours.len());
    }
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = ours.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let ok = worst <= (1e-5 * scale.max(1.0)).max(quantization_error);
    write!(
        out,
        "  check:      {} — tract on a random batch of {batch}: max |difference| from ckpt's inference {worst:.2e}",
        if ok { "ok" } else { "MISMATCH" }
    )?;
    if quantization_error > 0.0 {
        write!(out, " (quantization error {quantization_error:.2e})")?;
    }
    writeln!(out)?;
    Ok(if ok { 0 } else { 1 })
}
