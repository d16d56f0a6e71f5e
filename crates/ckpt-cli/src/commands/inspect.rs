//! `ckpt inspect FILE [--json]`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use ckpt::{LoadOptions, StateDict};

use crate::args::InspectArgs;
use crate::shared::output::{human_bytes, one_line, thousands, Table};
use crate::shared::values::{repr, write_tree};

/// What a file holds besides its tree: the tensors flattened, the
/// non-tensor values by path, the Python classes named, and the verdict on
/// its pickle.
struct Contents {
    tensors: StateDict,
    values: Vec<(String, ckpt::Value)>,
    classes: BTreeSet<String>,
    verdict: Option<String>,
}

impl Contents {
    fn of(loaded: &ckpt::Loaded) -> Result<Contents> {
        let tensors = StateDict::flatten(&loaded.value)?;
        let values = ckpt::report::values(&loaded.value);
        let classes = ckpt::report::object_classes(&loaded.value);
        let verdict = loaded.pickle.as_ref().map(ckpt::PickleReport::verdict);
        Ok(Contents {
            tensors,
            values,
            classes,
            verdict,
        })
    }
}

/// Prints the tensors, values and metadata of the file (for a run
/// directory, of its latest step), or with `--tree` its nested structure,
/// or with `--json` the same for programs.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> Result<()> {
    inspect(&args.file, args.json, args.tree, out)
}

fn inspect(file: &Path, as_json: bool, tree: bool, out: &mut dyn Write) -> Result<()> {
    if file.is_dir() && file.join("manifest.json").is_file() {
        let path = latest_step(file, as_json, out)?;
        return inspect(&path, as_json, tree, out);
    }
    let loaded = ckpt::read(file, &LoadOptions::default())?;
    let found = found_as(file, &loaded);
    if tree {
        writeln!(out, "{} ({found})", file.display())?;
        write_tree(&loaded.value, out)?;
        return Ok(());
    }
    if as_json {
        return json_report(&loaded, out);
    }
    let contents = Contents::of(&loaded)?;
    if ckpt::Package::is_package(&loaded.value) {
        return package(file, &loaded, out);
    }
    writeln!(out, "{} ({found})", file.display())?;
    writeln!(out)?;
    table(&contents.tensors, out)?;
    other_contents(&loaded, &contents, out)?;
    derived_spec(file, &loaded, out)
}

/// A run directory's latest step, said (not for `--json`) before it is
/// shown.
fn latest_step(dir: &Path, as_json: bool, out: &mut dyn Write) -> Result<PathBuf> {
    let reader = ckpt::store::RunReader::open(dir)?;
    let latest = reader.steps().last().map(|s| s.step);
    let Some(path) = latest.and_then(|s| reader.checkpoint_path(s)) else {
        anyhow::bail!(
            "{}: a ckpt run directory with no committed step",
            dir.display()
        );
    };
    if !as_json {
        writeln!(
            out,
            "{}: ckpt run directory; its latest step, {}:",
            dir.display(),
            latest.unwrap_or_default()
        )?;
    }
    Ok(path)
}

/// `--json`: [`ckpt::report::Inspection`], in large writes.
fn json_report(loaded: &ckpt::Loaded, out: &mut dyn Write) -> Result<()> {
    let report = ckpt::report::Inspection::of(loaded)?;
    // Large writes: the terminal's line buffering would make one
    // system call per line of a million-tensor listing.
    let mut buffered = std::io::BufWriter::with_capacity(1 << 20, &mut *out);
    serde_json::to_writer_pretty(&mut buffered, &report)?;
    writeln!(buffered)?;
    buffered.flush()?;
    Ok(())
}

/// The tensor table and its totals.
fn table(tensors: &StateDict, out: &mut dyn Write) -> Result<()> {
    let mut table = Table::new(
        vec!["name", "dtype", "shape", "params", "bytes"],
        vec![false, false, false, true, true],
    );
    for (name, t) in tensors.iter() {
        table.row(vec![
            name.clone(),
            t.dtype().torch_name().to_owned(),
            format!("{:?}", t.shape()),
            thousands(t.numel() as u64),
            thousands(t.bytes().len() as u64),
        ]);
    }
    table.write(out)?;
    writeln!(
        out,
        "\n{} tensors, {} parameters, {} bytes ({})",
        thousands(tensors.len() as u64),
        thousands(tensors.total_params()),
        thousands(tensors.total_bytes()),
        human_bytes(tensors.total_bytes()),
    )?;
    Ok(())
}

/// The values, metadata, Python classes and verdict after the table.
fn other_contents(loaded: &ckpt::Loaded, contents: &Contents, out: &mut dyn Write) -> Result<()> {
    if !contents.values.is_empty() {
        writeln!(out, "\nvalues:")?;
        for (path, v) in &contents.values {
            writeln!(out, "  {path} = {}", repr(v))?;
        }
    }
    if !loaded.metadata.is_empty() {
        writeln!(out, "\nmetadata:")?;
        for (k, v) in &loaded.metadata {
            writeln!(out, "  {k}: {v}")?;
        }
    }
    if !contents.classes.is_empty() {
        let list: Vec<&str> = contents.classes.iter().map(String::as_str).collect();
        writeln!(
            out,
            "\nPython objects (inert, never constructed): {}",
            list.join(", ")
        )?;
    }
    if let Some(verdict) = &contents.verdict {
        writeln!(out, "\nin Python: {verdict}")?;
    }
    Ok(())
}

/// The format a file was read as, saying when its contents, not its
/// name, told (`PyTorch, recognised by its contents`), and for a folder
/// the file it was read from.
pub fn found_as(file: &Path, loaded: &ckpt::Loaded) -> String {
    if let Some(weights) = loaded.metadata.get("folder.weights") {
        return format!("model folder: {weights}, {}", loaded.format);
    }
    match ckpt::Format::from_path(file) {
        Ok(named) if named == loaded.format => loaded.format.to_string(),
        _ => format!("{}, recognised by its contents", loaded.format),
    }
}

/// A model package: its metadata and its spec as a layer table.
fn package(file: &Path, loaded: &ckpt::Loaded, out: &mut dyn Write) -> Result<()> {
    let p = ckpt::Package::from_value(&loaded.value, file, &Default::default())?;
    let i = &p.info;
    writeln!(
        out,
        "{} ({} model package, format {})",
        file.display(),
        loaded.format,
        i.format_version
    )?;
    writeln!(out)?;
    writeln!(out, "  architecture: {}", i.architecture)?;
    writeln!(out, "  version:      {}", i.model_version)?;
    writeln!(out, "  created:      {} by {}", i.created, i.library)?;
    writeln!(out, "  input shape:  {:?} per sample", p.spec.input_shape)?;
    if !i.classes.is_empty() {
        writeln!(out, "  classes:      {}", i.classes.join(", "))?;
    }
    for (k, v) in &i.metrics {
        writeln!(out, "  {k}: {v:.4}")?;
    }
    for (k, v) in &i.user {
        writeln!(out, "  {k}: {v}")?;
    }
    if !i.migrations.is_empty() {
        writeln!(out, "  migrations:   {}", i.migrations.join(", "))?;
    }
    let training = if p.optimizer.is_some() {
        "training package: optimizer state included"
    } else {
        "inference package"
    };
    writeln!(out, "  contents:     {training}")?;
    writeln!(out)?;
    layer_table(&p.spec, out)?;
    let bytes: u64 = p.weights.total_bytes();
    writeln!(
        out,
        "\n{} layers, {} parameters, {} of weights",
        p.spec.layers.len(),
        thousands(p.spec.parameter_count()),
        human_bytes(bytes)
    )?;
    if let Some(q) = &p.quantization {
        quantized(&p, q, out)?;
    }
    Ok(())
}

/// A spec's layers: name, type, output shape, parameters.
fn layer_table(spec: &ckpt::ModelSpec, out: &mut dyn Write) -> Result<()> {
    let mut table = Table::new(
        vec!["layer", "type", "output", "params"],
        vec![false, false, false, true],
    );
    for row in spec.summary()? {
        let kind = match row.kind {
            ckpt::LayerKind::Residual { .. } => "Residual (x + ...)".to_owned(),
            ref other => describe(other),
        };
        let params = if row.params == 0 {
            "-".into()
        } else {
            thousands(row.params)
        };
        table.row(vec![
            row.name,
            kind,
            format!("{:?}", row.output_shape),
            params,
        ]);
    }
    table.write(out)?;
    Ok(())
}

/// A whole model (`torch.save(model)` or TorchScript): its module tree,
/// then the spec derived from its modules, or why none is.
fn derived_spec(file: &Path, loaded: &ckpt::Loaded, out: &mut dyn Write) -> Result<()> {
    let Some(module) = &loaded.module else {
        return Ok(());
    };
    writeln!(
        out,
        "\nmodules (classes and settings read from the file, never run):"
    )?;
    module_rows(module, "", 1, out)?;
    match ckpt::Package::from_module(module, &loaded.value, file, None) {
        Ok(package) => {
            writeln!(
                out,
                "\nspec derived from the modules (ckpt run and ckpt export take this file as it is), input {:?} per sample:",
                package.spec.input_shape
            )?;
            layer_table(&package.spec, out)
        }
        Err(e) => Ok(writeln!(out, "\nno spec derived from the modules: {e}")?),
    }
}

/// One line per module: its name, class (short for `torch.nn`'s) and
/// settings, children indented under it.
fn module_rows(
    m: &ckpt::format::pytorch::PickledModule,
    name: &str,
    depth: usize,
    out: &mut dyn Write,
) -> Result<()> {
    let class = match m.class.strip_prefix("torch.nn.modules.") {
        Some(c) => c.rsplit('.').next().unwrap_or(c),
        None => m.class.as_str(),
    };
    let settings: Vec<String> = m
        .attributes
        .iter()
        .filter(|(k, _)| k.to_string() != "training")
        .map(|(k, v)| format!("{k}={}", ckpt::report::to_json(v)))
        .collect();
    let label = if name.is_empty() {
        String::new()
    } else {
        format!("{name}: ")
    };
    let line = one_line(format!("{label}{class}({})", settings.join(", ")));
    writeln!(out, "{}{line}", "  ".repeat(depth))?;
    for (child, c) in &m.children {
        module_rows(c, child, depth + 1, out)?;
    }
    Ok(())
}

/// A quantized package's int8 weights and their scales.
fn quantized(
    p: &ckpt::Package,
    q: &ckpt::compress::quantize::Quantization,
    out: &mut dyn Write,
) -> Result<()> {
    use ckpt::compress::quantize::{Activations, SCALE_SUFFIX};
    writeln!(
        out,
        "\nquantized: int8 symmetric, {}; Linear layers run {}; each NAME (int8) has NAME{SCALE_SUFFIX} (float32) beside it, value = int8 × scale",
        q.granularity.name().replace('_', " "),
        match q.activations {
            Activations::Dynamic => "with int8 arithmetic on activations quantized per batch (dynamic)",
            Activations::WeightOnly => "on the dequantized weights (weight-only)",
        }
    )?;
    let mut table = Table::new(
        vec!["tensor", "shape", "scales", "scale range"],
        vec![false, false, false, true],
    );
    for name in &q.tensors {
        let (Some(w), Some(s)) = (
            p.weights.get(name),
            p.weights.get(&format!("{name}{SCALE_SUFFIX}")),
        ) else {
            continue;
        };
        let (lo, hi) = s.values_f64().fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        table.row(vec![
            name.clone(),
            format!("{:?}", w.shape()),
            format!("{:?}", s.shape()),
            format!("{lo:.3e} … {hi:.3e}"),
        ]);
    }
    table.write(out)?;
    Ok(())
}

/// `Linear(64 → 128)`, `Conv2d(1 → 8, 3×3, stride 1)`, `Dropout(p=0.1)`.
fn describe(kind: &ckpt::LayerKind) -> String {
    use ckpt::LayerKind as K;
    match kind {
        K::Linear {
            in_features,
            out_features,
            bias,
        } => {
            format!(
                "Linear({in_features} → {out_features}{})",
                if *bias { "" } else { ", no bias" }
            )
        }
        K::Conv2d {
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            ..
        } => format!(
            "Conv2d({in_channels} → {out_channels}, {}×{}, stride {:?}, padding {:?})",
            kernel_size[0], kernel_size[1], stride, padding
        ),
        K::BatchNorm1d { num_features, .. } | K::BatchNorm2d { num_features, .. } => {
            format!("{}({num_features})", kind.type_name())
        }
        K::LayerNorm {
            normalized_shape, ..
        } => format!("LayerNorm({normalized_shape:?})"),
        K::Embedding {
            num_embeddings,
            embedding_dim,
        } => format!("Embedding({num_embeddings} × {embedding_dim})"),
        K::GELU { tanh: true } => "GELU(tanh)".into(),
        K::Softmax { dim } => format!("Softmax(dim={dim})"),
        K::Dropout { p } => format!("Dropout(p={p})"),
        K::Flatten { start_dim, end_dim } => format!("Flatten({start_dim}, {end_dim})"),
        K::MaxPool2d {
            kernel_size,
            stride,
            ..
        }
        | K::AvgPool2d {
            kernel_size,
            stride,
            ..
        } => {
            format!(
                "{}({}×{}, stride {:?})",
                kind.type_name(),
                kernel_size[0],
                kernel_size[1],
                stride
            )
        }
        K::AdaptiveAvgPool2d { output_size } => {
            format!("AdaptiveAvgPool2d({}×{})", output_size[0], output_size[1])
        }
        other => other.type_name().to_owned(),
    }
}
