//! `ckpt prune` and `ckpt quantize`: smaller models, with a before/after
//! table.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ckpt::compress::prune;
use ckpt::compress::quantize::{self, Activations};
use ckpt::{Package, StateDict, TensorData, Value};
use regex_lite::Regex;

use crate::args::{PruneArgs, QuantizeArgs};
use crate::shared::model_io::counts;
use crate::shared::output::{human_bytes, thousands, Table};

/// The input: a package (weights and the rest) or a plain state dict.
enum Input {
    Package(Box<Package>),
    StateDict(StateDict),
}

fn read(path: &Path) -> Result<Input> {
    let value = ckpt::load(path)?;
    if Package::is_package(&value) {
        return Ok(Input::Package(Box::new(Package::from_value(
            &value,
            path,
            &Default::default(),
        )?)));
    }
    Ok(Input::StateDict(StateDict::flatten(&value)?))
}

/// Weights to compress: `--layers` when given, else every `*.weight` of
/// rank ≥ `min_rank` (Linear and Conv weights; not norms or biases).
fn selector(layers: Option<&str>, min_rank: usize) -> Result<impl Fn(&str, &TensorData) -> bool> {
    let pattern = layers.map(Regex::new).transpose().context("--layers")?;
    Ok(move |name: &str, t: &TensorData| {
        t.dtype().is_float()
            && match &pattern {
                Some(re) => re.is_match(name),
                None => name.ends_with(".weight") && t.shape().len() >= min_rank,
            }
    })
}

fn report(
    before: (&StateDict, &Path),
    after: (&StateDict, &Path),
    evaluate: bool,
    out: &mut dyn Write,
) -> Result<()> {
    if evaluate {
        // Both as packages, run: sizes, accuracy and time from `eval`.
        let mut header = vec![""];
        header.extend(crate::shared::digits::HEADER);
        let mut table = Table::new(header, vec![false, false, true, true, true, true, true]);
        for (label, path) in [("before", before.1), ("after", after.1)] {
            let (package, model) = crate::shared::digits::load(path)?;
            let mut cells = vec![label.to_string()];
            cells.extend(crate::shared::digits::row(path, &package, &model)?);
            table.row(cells);
        }
        table.write(out)?;
        return Ok(());
    }
    let mut table = Table::new(
        vec!["", "parameters", "non-zeros", "on disk"],
        vec![false, true, true, true],
    );
    for (label, (sd, path)) in [("before", before), ("after", after)] {
        let (n, nz) = counts(sd);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        table.row(vec![
            label.into(),
            thousands(n),
            thousands(nz),
            human_bytes(size),
        ]);
    }
    table.write(out)?;
    Ok(())
}

/// `--eval` needs packages on both sides.
fn check_eval(evaluate: bool, source: &Input, input: &Path) -> Result<()> {
    if evaluate && !matches!(source, Input::Package(_)) {
        bail!(
            "{}: --eval runs model packages (spec and weights); this is a plain state dict",
            input.display()
        );
    }
    Ok(())
}

/// `ckpt prune`: prunes the chosen weights, writes the result and reports
/// each tensor's sparsity.
pub fn prune(o: &PruneArgs, out: &mut dyn Write) -> Result<()> {
    let (input, output) = (o.input.as_path(), o.output.as_path());
    let structured = o.structured.then_some((o.dim, o.n));
    let source = read(input)?;
    check_eval(o.evaluate, &source, input)?;
    let sd = match &source {
        Input::Package(p) if p.quantization.is_some() => {
            bail!(
                "{}: the package is quantized; prune before quantizing (zeros stay zeros in int8)",
                input.display()
            )
        }
        Input::Package(p) => p.weights.clone(),
        Input::StateDict(sd) => sd.clone(),
    };
    let select = selector(o.layers.as_deref(), 2)?;
    let chosen: Vec<(&String, &TensorData)> = sd.iter().filter(|(n, t)| select(n, t)).collect();
    if chosen.is_empty() {
        bail!(
            "{}: no tensor to prune (give --layers PATTERN)",
            input.display()
        );
    }
    let masks: Vec<(String, prune::Mask)> = if o.global {
        let refs: Vec<(&str, &TensorData)> = chosen.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let masks = prune::global_l1_unstructured(&refs, o.amount)?;
        chosen
            .iter()
            .map(|(n, _)| n.to_string())
            .zip(masks)
            .collect()
    } else {
        chosen
            .iter()
            .map(|(name, t)| {
                let mask = match (structured, o.random) {
                    (Some((dim, n)), _) => prune::ln_structured(t, o.amount, n, dim, name)?,
                    (None, Some(seed)) => prune::random_unstructured(t, o.amount, seed)?,
                    (None, None) => prune::l1_unstructured(t, o.amount, name)?,
                };
                Ok((name.to_string(), mask))
            })
            .collect::<Result<_>>()?
    };
    let pruned = prune::prune_state_dict(&sd, &masks, o.reparametrize)?;
    match source {
        Input::Package(_) if o.reparametrize => {
            bail!("--reparametrize writes weight_orig/weight_mask, which a package's spec does not have: give a state dict")
        }
        Input::Package(mut p) => {
            p.weights = pruned.clone();
            p.save(output)?;
        }
        Input::StateDict(_) => ckpt::save(output, &pruned.clone().into())?,
    }
    writeln!(out, "{} -> {}", input.display(), output.display())?;
    let mut table = Table::new(
        vec!["tensor", "elements", "zeros", "sparsity"],
        vec![false, true, true, true],
    );
    let permanent = prune::remove(&pruned)?;
    for row in prune::sparsity(&permanent)
        .into_iter()
        .filter(|r| masks.iter().any(|(n, _)| *n == r.name))
    {
        let pct = 100.0 * row.zeros as f64 / row.elements.max(1) as f64;
        table.row(vec![
            row.name,
            thousands(row.elements),
            thousands(row.zeros),
            format!("{pct:.1}%"),
        ]);
    }
    table.write(out)?;
    writeln!(out)?;
    report((&sd, input), (&permanent, output), o.evaluate, out)
}

/// `ckpt quantize`: int8 weights with their scales, the largest rounding
/// error, and with `--eval` the models side by side.
pub fn quantize(o: &QuantizeArgs, out: &mut dyn Write) -> Result<()> {
    let (input, output) = (o.input.as_path(), o.output.as_path());
    let (granularity, activations) = (o.granularity(), o.activations());
    let layers = o.layers.as_deref();
    let source = read(input)?;
    check_eval(o.evaluate, &source, input)?;
    let sd = match &source {
        Input::Package(p) if p.quantization.is_some() => {
            bail!("{}: the package is already quantized", input.display())
        }
        Input::Package(p) => p.weights.clone(),
        Input::StateDict(sd) => sd.clone(),
    };
    // By default the Linear weights: in a package, the spec says which;
    // in a state dict, the `*.weight` tensors of rank 2.
    let linear: Option<Vec<String>> = match &source {
        Input::Package(p) => Some(
            p.spec
                .summary()?
                .into_iter()
                .filter(|r| matches!(r.kind, ckpt::LayerKind::Linear { .. }))
                .map(|r| format!("{}.weight", r.name))
                .collect(),
        ),
        Input::StateDict(_) => None,
    };
    let select = selector(layers, 2)?;
    let chosen = |n: &str, t: &TensorData| match (&linear, layers) {
        (Some(names), None) => names.iter().any(|l| l == n),
        (None, None) => select(n, t) && t.shape().len() == 2,
        (_, Some(_)) => select(n, t),
    };
    let quantized = match &source {
        Input::Package(p) => {
            let q = p.quantize(granularity, activations, chosen)?;
            q.save(output)?;
            q.weights
        }
        Input::StateDict(_) => {
            let q = quantize::quantize_state_dict(&sd, granularity, chosen)?;
            ckpt::save(output, &Value::from(q.clone()))?;
            q
        }
    };
    let restored = quantize::dequantize_state_dict(&quantized)?;
    let mut worst = 0.0f64;
    for (name, t) in sd.iter() {
        if let Some(r) = restored.get(name) {
            for (a, b) in t.values_f64().zip(r.values_f64()) {
                worst = worst.max((a - b).abs());
            }
        }
    }
    let count = quantized
        .keys()
        .filter(|k| k.ends_with(quantize::SCALE_SUFFIX))
        .count();
    writeln!(
        out,
        "{} -> {}: {count} tensors to int8 ({}), scales in NAME{}; largest rounding error {worst:.2e}",
        input.display(),
        output.display(),
        granularity.name().replace('_', " "),
        quantize::SCALE_SUFFIX
    )?;
    if matches!(source, Input::Package(_)) {
        writeln!(
            out,
            "  a quantized package (format 2): Linear layers run {}",
            match activations {
                Activations::Dynamic => "int8 with activations quantized per batch (dynamic)",
                Activations::WeightOnly => "on the dequantized weights (weight-only)",
            }
        )?;
    }
    report((&sd, input), (&quantized, output), o.evaluate, out)
}
