//! What checkpointing costs a training loop: steps per second of a candle
//! MLP (AdamW) without checkpoints and with a background save to a
//! checkpoint store every 10 steps, durable, in rotating order.
//!
//! ```sh
//! cargo run --release -p ckpt-candle --example checkpoint_overhead -- WORKDIR [STEPS] [RUNS]
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::linear;
use ckpt::store::{CheckpointManager, Retention, StoreOptions};
use ckpt_candle::{capture, Adam, AdamConfig, Optimizer, ParamStore, Training};

fn train(steps: u64, every: Option<u64>, dir: &std::path::Path) -> f64 {
    let store = ParamStore::new(0);
    let vb = store.var_builder(DType::F32, &Device::Cpu);
    let fc1 = linear(512, 1024, vb.pp("fc1")).unwrap();
    let fc2 = linear(1024, 1024, vb.pp("fc2")).unwrap();
    let fc3 = linear(1024, 10, vb.pp("fc3")).unwrap();
    let mut opt = Adam::new(store.vars(), AdamConfig::adamw()).unwrap();
    let x = Tensor::randn(0f32, 1.0, (128, 512), &Device::Cpu).unwrap();
    let y = Tensor::arange(0u32, 128, &Device::Cpu)
        .unwrap()
        .affine(1.0, 0.0)
        .unwrap();
    let y = (y.to_dtype(DType::F32).unwrap() / 13.0)
        .unwrap()
        .floor()
        .unwrap()
        .to_dtype(DType::U32)
        .unwrap();
    let y = y
        .broadcast_minimum(&Tensor::new(9u32, &Device::Cpu).unwrap())
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let mut run = every.map(|_| {
        CheckpointManager::open(
            dir,
            StoreOptions::default().retention(Retention::default().keep_last(2)),
        )
        .unwrap()
    });
    let start = Instant::now();
    for step in 1..=steps {
        let h = fc2
            .forward(&fc1.forward(&x).unwrap().relu().unwrap())
            .unwrap()
            .relu()
            .unwrap();
        let loss = candle_nn::loss::cross_entropy(&fc3.forward(&h).unwrap(), &y).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        if let (Some(run), Some(every)) = (run.as_mut(), every) {
            if step % every == 0 {
                let parts = Training {
                    model: &store,
                    optimizer: &mut opt,
                    scheduler: None,
                    rng: None,
                };
                let c = capture(parts).unwrap();
                run.save_async_owned(step, c, &[]).unwrap();
            }
        }
    }
    if let Some(run) = run.as_mut() {
        run.wait().unwrap();
    }
    steps as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let work = std::path::PathBuf::from(args.next().expect("WORKDIR"));
    let steps: u64 = args.next().map_or(100, |s| s.parse().unwrap());
    let runs: usize = args.next().map_or(5, |s| s.parse().unwrap());
    let (mut plain, mut saving) = (Vec::new(), Vec::new());
    for r in 0..runs {
        if r % 2 == 0 {
            plain.push(train(steps, None, &work));
            saving.push(train(steps, Some(10), &work));
        } else {
            saving.push(train(steps, Some(10), &work));
            plain.push(train(steps, None, &work));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, s) = (median(plain), median(saving));
    println!("model: 512-1024-1024-10 MLP + AdamW ({:.1} MB checkpoint), batch 128, {steps} steps, medians of {runs}", 1.58e6 * 12.0 / 1e6);
    println!("| loop | steps/s |");
    println!("|---|---:|");
    println!("| no checkpoints | {p:.1} |");
    println!(
        "| save_async every 10 steps (durable) | {s:.1} ({:+.1}%; target ≥ −5%) |",
        (s / p - 1.0) * 100.0
    );
    let _ = std::fs::remove_dir_all(&work);
}
