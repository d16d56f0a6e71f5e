//! TorchScript export: a [`ModelSpec`] and its weights as the archive
//! `torch.jit.save` writes, which `torch.jit.load` and LibTorch's
//! `torch::jit::load` run with no Python: `data.pkl` holds the module
//! objects and their tensors (`data/N`), `code/__torch__/…` each class's
//! TorchScript source with its `forward`, `constants.pkl`, the version,
//! and the package metadata in `extra/ckpt.json`.
//!
//! Layers become the classes `torch.jit.script` writes for their
//! `torch.nn` modules, under torch's names (`torch.nn.modules.linear.Linear`,
//! a `___torch_mangle_N` twin for each other set of constants), calling
//! the aten operators ckpt's inference computes (`torch.linear`,
//! `torch.conv2d`, `torch.batch_norm`, …); nested Sequentials are
//! `nn.Sequential`s and residual blocks the class `ckpt.modules.Residual`.
//! A quantized package with int8 weights dequantized to float
//! (`weight_only`) keeps its int8 weights and scales as buffers and
//! dequantizes them in `forward`; dynamic int8 activations are refused.
//!
//! `layers` holds the class of each layer kind; `code` the classes being
//! collected into source files.

mod code;
mod layers;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use indexmap::IndexMap;

use crate::compress::quantize::{Activations, Quantization};
use crate::format::pytorch::write::{archive_prefix, Pickler};
use crate::format::pytorch::zip::ZipWriter;
use crate::{LayerKind, ModelSpec, Result, StateDict, TensorData};
use code::{Code, Object};

/// The file format version ckpt writes (torch's own for these operators):
/// 3, or 10 when the model has a GELU (its `approximate` argument).
pub const VERSION: u64 = 3;
/// The version of a model with a GELU.
pub const VERSION_GELU: u64 = 10;

/// How to export.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TorchScriptOptions {
    /// Metadata (model version, classes, ...), written with the spec to
    /// `extra/ckpt.json`.
    pub metadata: IndexMap<String, String>,
    /// The weights' quantization, for a quantized package.
    pub quantization: Option<Quantization>,
}

/// What an export produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TorchScriptReport {
    /// Module classes used (`Linear`, `Sequential`) and how many objects
    /// of each.
    pub modules: BTreeMap<String, usize>,
    /// Trainable parameters.
    pub parameters: u64,
    /// The file's size.
    pub bytes: u64,
    /// Its file format version ([`VERSION`] or [`VERSION_GELU`]).
    pub version: u64,
}

/// Exports to `path` (atomically; a folder or `s3://` URL as every path).
///
/// ```
/// let spec = ckpt::ModelSpec::from_json(r#"{"name": "lin", "input_shape": [2], "layers": [
///     {"name": "fc", "type": "Linear", "in_features": 2, "out_features": 1}]}"#).unwrap();
/// let mut w = ckpt::StateDict::new();
/// w.insert("fc.weight".into(), ckpt::TensorData::from_f32(&[1, 2], &[1.0, 2.0]).unwrap());
/// w.insert("fc.bias".into(), ckpt::TensorData::from_f32(&[1], &[0.5]).unwrap());
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("lin.pt");
/// let report = ckpt::export::torchscript::export(&spec, w, &Default::default(), &path).unwrap();
/// assert_eq!(report.modules["Linear"], 1);
/// // Its weights read back under their state-dict names.
/// assert!(ckpt::load_state_dict(&path).unwrap().contains_key("fc.weight"));
/// ```
pub fn export(
    spec: &ModelSpec,
    weights: StateDict,
    options: &TorchScriptOptions,
    path: &Path,
) -> Result<TorchScriptReport> {
    if let Some(q) = &options.quantization {
        if q.activations == Activations::Dynamic {
            return Err(super::unsupported(
                "model",
                "dynamic int8 activations have no TorchScript form in ckpt: quantize with \
                 --mode weight_only, or export ONNX",
            ));
        }
    }
    spec.output_shape()?;
    super::ids_only_at_input(&spec.layers, true, "")?;
    let weights = super::fit_weights(spec, weights, options.quantization.as_ref())?;
    let mut code = Code::default();
    let top = code.model(spec, &weights, options.quantization.as_ref())?;
    let mut pickler = Pickler::new();
    pickle(&top, &weights, &mut pickler)?;
    let (data, tensors) = pickler.finish_with_tensors();
    if tensors.len() != weights.len() {
        return Err(super::unsupported(
            "model",
            format!(
                "{} of the package's {} tensors have no place in the modules",
                weights.len().abs_diff(tensors.len()),
                weights.len()
            ),
        ));
    }
    let version = if uses_gelu(&spec.layers) {
        VERSION_GELU
    } else {
        VERSION
    };
    let extra = serde_json::to_vec_pretty(&serde_json::json!({
        "metadata": options.metadata,
        "spec": spec.to_json(),
    }))
    .expect("JSON of strings serialises");
    let prefix = archive_prefix(path);
    let mut bytes = 0;
    crate::storage::write_atomic(path, false, |out| {
        let mut counted = Counted { out, bytes: 0 };
        let mut zip = ZipWriter::new(&mut counted);
        zip.entry(&format!("{prefix}/data.pkl"), &[&data])?;
        for (file, text) in code.files() {
            zip.entry(&format!("{prefix}/code/{file}"), &[text.as_bytes()])?;
        }
        zip.entry(&format!("{prefix}/constants.pkl"), &[b"\x80\x02)."])?;
        for (i, t) in tensors.iter().enumerate() {
            zip.entry(&format!("{prefix}/data/{i}"), &[t.bytes()])?;
        }
        zip.entry(&format!("{prefix}/extra/ckpt.json"), &[&extra])?;
        // torch moved the version to `.data/version` with version 6.
        let name = if version >= 6 {
            ".data/version"
        } else {
            "version"
        };
        zip.entry(
            &format!("{prefix}/{name}"),
            &[format!("{version}\n").as_bytes()],
        )?;
        zip.entry(&format!("{prefix}/byteorder"), &[b"little"])?;
        zip.finish()?;
        bytes = counted.bytes;
        Ok(())
    })?;
    Ok(TorchScriptReport {
        modules: code.counts(),
        parameters: spec.parameter_count(),
        bytes,
        version,
    })
}

/// The object `obj` as `torch.jit.save` pickles a module: `NEWOBJ` of its
/// class, then `BUILD` with its attributes (tensors, `training`, children).
fn pickle(obj: &Object, weights: &StateDict, p: &mut Pickler) -> Result<()> {
    let (module, name) = obj.class.rsplit_once('.').expect("classes are qualified");
    p.global(module, name);
    p.op(b")\x81}(");
    for (attr, key, trainable) in &obj.tensors {
        let t: &TensorData = weights
            .get(key)
            .ok_or_else(|| super::unsupported(key, "missing weight"))?;
        p.str(attr);
        p.tensor(t, *trainable);
    }
    p.str("training");
    p.op(b"\x89");
    for (attr, child) in &obj.children {
        p.str(attr);
        pickle(child, weights, p)?;
    }
    p.op(b"ub");
    Ok(())
}

/// True when a GELU is among `layers` (or in their blocks).
fn uses_gelu(layers: &[crate::Layer]) -> bool {
    layers.iter().any(|l| match &l.kind {
        LayerKind::GELU { .. } => true,
        LayerKind::Residual { layers } | LayerKind::Sequential { layers } => uses_gelu(layers),
        _ => false,
    })
}

/// A writer that counts the bytes through it.
struct Counted<'a> {
    out: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pytorch::zip::ZipArchive;

    fn export_json(json: &str, name: &str) -> Result<(Vec<u8>, TorchScriptReport)> {
        let spec = ModelSpec::from_json(json).unwrap();
        let mut weights = StateDict::new();
        for p in spec.parameters() {
            let t = match p.dtype {
                crate::DType::F32 => {
                    TensorData::from_f32(&p.shape, &vec![0.5; p.shape.iter().product()])
                }
                _ => TensorData::new(p.dtype, p.shape.clone(), vec![0; 8]),
            };
            weights.insert(p.name, t.unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let report = export(&spec, weights, &TorchScriptOptions::default(), &path)?;
        Ok((std::fs::read(&path).unwrap(), report))
    }

    fn entry<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let zip = ZipArchive::parse(bytes, Path::new("m.pt")).unwrap();
        zip.get(name).map(|e| &bytes[e.data.clone()])
    }

    #[test]
    fn the_archive_has_torchs_entries_version_and_mangled_twins() {
        let (bytes, report) = export_json(
            r#"{"name": "m", "input_shape": [4], "layers": [
                {"name": "a", "type": "Linear", "in_features": 4, "out_features": 3},
                {"name": "g", "type": "GELU", "approximate": "tanh"},
                {"name": "b", "type": "Linear", "in_features": 3, "out_features": 2},
                {"name": "n", "type": "BatchNorm1d", "num_features": 2}]}"#,
            "m.pt",
        )
        .unwrap();
        assert_eq!(report.version, VERSION_GELU);
        assert_eq!(entry(&bytes, "m/.data/version"), Some(&b"10\n"[..]));
        assert!(entry(&bytes, "m/version").is_none());
        let data = entry(&bytes, "m/data.pkl").unwrap();
        assert!(
            data.starts_with(b"\x80\x02c__torch__.torch.nn.modules.container\nSequential\n)\x81}(")
        );
        let linear = entry(&bytes, "m/code/__torch__/torch/nn/modules/linear.py").unwrap();
        let text = std::str::from_utf8(linear).unwrap();
        assert!(text.contains("in_features : Final[int] = 4"), "{text}");
        let twin = "m/code/__torch__/torch/nn/modules/linear/___torch_mangle_2.py";
        assert!(entry(&bytes, twin).is_some());
        assert_eq!(entry(&bytes, "m/constants.pkl"), Some(&b"\x80\x02)."[..]));
        // Five BatchNorm tensors (statistics included), four Linear ones.
        assert!(entry(&bytes, "m/data/8").is_some() && entry(&bytes, "m/data/9").is_none());
        let (bytes, report) = export_json(
            r#"{"name": "m", "input_shape": [4], "layers": [{"type": "ReLU"}]}"#,
            "r.pt",
        )
        .unwrap();
        assert_eq!(report.version, VERSION);
        assert_eq!(entry(&bytes, "r/version"), Some(&b"3\n"[..]));
    }

    #[test]
    fn names_and_embeddings_torchscript_cannot_hold_are_refused() {
        let err = export_json(
            r#"{"name": "m", "input_shape": [4], "layers": [{"name": "__x", "type": "ReLU"}]}"#,
            "m.pt",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot be a TorchScript attribute"),
            "{err}"
        );
        let err = export_json(
            r#"{"name": "m", "input_shape": [4], "layers": [
                {"name": "f", "type": "Linear", "in_features": 4, "out_features": 4},
                {"name": "e", "type": "Embedding", "num_embeddings": 10, "embedding_dim": 2}]}"#,
            "m.pt",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot export e: an Embedding takes integer ids"),
            "{err}"
        );
        // At the input, inside a leading Sequential, it is the input.
        export_json(
            r#"{"name": "m", "input_shape": [4], "layers": [
                {"name": "s", "type": "Sequential", "layers": [
                    {"type": "Embedding", "num_embeddings": 10, "embedding_dim": 2}]}]}"#,
            "m.pt",
        )
        .unwrap();
    }
}
