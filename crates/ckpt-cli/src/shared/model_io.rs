//! Models and their weights as the commands take them: the device, a
//! package (or a state dict with a spec file), parameter counts. Shared
//! by `ckpt run`, `ckpt export`, `ckpt eval`, `ckpt prune` and
//! `ckpt quantize`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use ckpt::compress::{prune, quantize};
use ckpt::{ModelSpec, Package, PackageInfo, StateDict};

/// Where the model runs.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0)
            .context("no CUDA device (this ckpt may have been built without the `cuda` feature)"),
        other => bail!("unknown device {other:?}: use cpu or cuda"),
    }
}

/// A model package, a plain state dict made into one with a spec file, or
/// a whole pickled model whose spec is derived (with `input_shape` when its
/// first layer does not tell), as `ckpt run` and `ckpt export` take them;
/// the package's warnings are printed.
pub fn load_package(
    model_path: &Path,
    spec_path: Option<&Path>,
    input_shape: Option<&[usize]>,
) -> Result<Package> {
    let package = match spec_path {
        Some(spec_path) => {
            let text = std::fs::read_to_string(spec_path)
                .with_context(|| spec_path.display().to_string())?;
            let spec =
                ModelSpec::from_json(&text).with_context(|| spec_path.display().to_string())?;
            let weights = ckpt::load_state_dict(model_path)?;
            let info = PackageInfo::new(&spec, "0.0.0");
            Package::from_state_dict(spec, weights, info)
                .with_context(|| model_path.display().to_string())?
        }
        None => {
            let mut options = ckpt::PackageOptions::default();
            if let Some(shape) = input_shape {
                options = options.input_shape(shape.to_vec());
            }
            Package::load(model_path, &options)?
        }
    };
    for warning in &package.warnings {
        crate::shared::output::warning(warning);
    }
    Ok(package)
}

/// Elements and non-zeros of the model's tensors (quantization scales
/// are not parameters).
pub fn counts(sd: &StateDict) -> (u64, u64) {
    let rows: Vec<_> = prune::sparsity(sd)
        .into_iter()
        .filter(|r| !r.name.ends_with(quantize::SCALE_SUFFIX))
        .collect();
    (
        rows.iter().map(|r| r.elements).sum(),
        rows.iter().map(|r| r.elements - r.zeros).sum(),
    )
}
