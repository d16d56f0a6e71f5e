//! Trains a small MLP with AdamW and a warm-up + cosine schedule, saving a
//! training checkpoint every 10 steps; run it again and it resumes from the
//! checkpoint exactly where it stopped (stop it with Ctrl-C mid-run to see).
//!
//! ```sh
//! cargo run -p ckpt-candle --example train -- run.safetensors 100
//! ```

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear, Linear};
use ckpt::{LoadRules, TrainingCheckpoint};
use ckpt_candle::{
    capture, restore, Adam, AdamConfig, LrScheduler, Optimizer, ParamStore, Rng, Training,
};

const SAMPLES: usize = 256;
const BATCH: usize = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "run.safetensors".into());
    let total: i64 = args.next().map_or(Ok(100), |s| s.parse())?;

    // The model's variables are created in order, under PyTorch's names.
    let store = ParamStore::new(0);
    let vb = store.var_builder(DType::F32, &Device::Cpu);
    let (fc1, fc2): (Linear, Linear) = (linear(2, 32, vb.pp("fc1"))?, linear(32, 2, vb.pp("fc2"))?);
    let mut opt = Adam::new(
        store.vars(),
        AdamConfig {
            lr: 0.02,
            ..AdamConfig::adamw()
        },
    )?;
    let warmup = LrScheduler::linear_lr(&mut opt, 0.1, 1.0, 10)?;
    let cosine = LrScheduler::cosine_annealing_lr(&mut opt, total - 10, 1e-4)?;
    let mut sched = LrScheduler::sequential_lr(&mut opt, vec![warmup, cosine], &[10])?;
    let mut rng = Rng::new(1);
    let mut step = 0;

    if std::path::Path::new(&path).exists() {
        let c = TrainingCheckpoint::load(&path)?;
        let parts = Training {
            model: &store,
            optimizer: &mut opt,
            scheduler: Some(&mut sched),
            rng: Some(&mut rng),
        };
        restore(&c, &LoadRules::default(), parts)?;
        step = c.step;
        println!("resumed from {path} at step {step} (loss {:?})", c.loss);
    }

    // Points in a square; the class is which side of a sine curve they lie on.
    let xs: Vec<f32> = (0..SAMPLES * 2)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let ys: Vec<u32> = xs
        .chunks(2)
        .map(|p| u32::from(p[1] > (3.0 * p[0]).sin() * 0.5))
        .collect();
    let x = Tensor::from_vec(xs, (SAMPLES, 2), &Device::Cpu)?;
    let y = Tensor::from_vec(ys, SAMPLES, &Device::Cpu)?;

    while step < total {
        // A random batch and dropout, both from the saved generator.
        let idx: Vec<u32> = (0..BATCH)
            .map(|_| rng.below(SAMPLES as u64) as u32)
            .collect();
        let idx = Tensor::new(idx.as_slice(), &Device::Cpu)?;
        let hidden = rng.dropout(&fc1.forward(&x.index_select(&idx, 0)?)?.relu()?, 0.1)?;
        let loss =
            candle_nn::loss::cross_entropy(&fc2.forward(&hidden)?, &y.index_select(&idx, 0)?)?;
        opt.step(&loss.backward()?)?;
        sched.step(&mut opt)?;
        step += 1;
        if step % 10 == 0 || step == total {
            let parts = Training {
                model: &store,
                optimizer: &mut opt,
                scheduler: Some(&mut sched),
                rng: Some(&mut rng),
            };
            let mut c = capture(parts)?;
            c.step = step;
            c.loss = Some(f64::from(loss.to_scalar::<f32>()?));
            c.save(&path)?; // atomic: a crash leaves the previous checkpoint whole
            println!(
                "step {step:4}  loss {:.4}  lr {:.5}",
                c.loss.unwrap_or(0.0),
                opt.lrs()[0]
            );
        }
    }
    Ok(())
}
