//! What the export tests share: random batches for a spec, and ckpt's own
//! outputs for them written beside an export for a peer to compare.

use std::path::Path;

use candle_core::Device;
use ckpt::{DType, ModelSpec, Package, TensorData, Value};
use ckpt_candle::{from_candle, to_candle, Model, Rng};
use serde_json::json;

/// A random batch for `spec` (ids below the vocabulary for embeddings).
pub fn batch(spec: &ModelSpec, n: usize, rng: &mut Rng) -> TensorData {
    let mut shape = vec![n];
    shape.extend(&spec.input_shape);
    let count: usize = shape.iter().product();
    if spec.takes_ids() {
        let bytes = (0..count)
            .flat_map(|_| (rng.below(10) as i64).to_le_bytes())
            .collect();
        TensorData::new(DType::I64, shape, bytes).unwrap()
    } else {
        let values: Vec<f32> = (0..count).map(|_| rng.normal() as f32).collect();
        TensorData::from_f32(&shape, &values).unwrap()
    }
}

/// Writes `FILE.bN.in.npy` and ckpt's `FILE.bN.out.npy` for batches of 1
/// and 7 into `dir`; returns the pairs and ckpt's own quantization error
/// (the largest difference between its quantized and float outputs; 0
/// for a float package), which a peer may differ by.
pub fn record_runs(
    dir: &Path,
    file: &str,
    package: &Package,
    rng: &mut Rng,
) -> (Vec<serde_json::Value>, f64) {
    let model = Model::from_package(package.clone(), &Device::Cpu).unwrap();
    let float = Model::from_package(package.dequantize().unwrap(), &Device::Cpu).unwrap();
    let mut runs = Vec::new();
    let mut tolerance = 0.0f64;
    for n in [1, 7] {
        let x = batch(&package.spec, n, rng);
        let input = to_candle(&x, &Device::Cpu, "x").unwrap();
        let y = model.forward(&input).unwrap();
        let exact = float.forward(&input).unwrap();
        let diff = (&y - &exact).unwrap().abs().unwrap().flatten_all().unwrap();
        tolerance = tolerance.max(f64::from(diff.max(0).unwrap().to_scalar::<f32>().unwrap()));
        let (input, output) = (
            format!("{file}.b{n}.in.npy"),
            format!("{file}.b{n}.out.npy"),
        );
        ckpt::save(dir.join(&input), &Value::Tensor(x)).unwrap();
        ckpt::save(
            dir.join(&output),
            &Value::Tensor(from_candle(&y, "y").unwrap()),
        )
        .unwrap();
        runs.push(json!({"input": input, "output": output}));
    }
    (runs, tolerance)
}
