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
    let weights = super::fit_weights(spec, weights, options.quantization.as_ref())?;
    let mut code = Code::default();
    let top = code.model(spec, &weights, options.quantization.as_ref())?;
    let mut pickler = Pickler::new();
    pickle(&top, &weights, &mut pickler)?;
    let (data, tensors) = pickler.finish_with_tensors();
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
