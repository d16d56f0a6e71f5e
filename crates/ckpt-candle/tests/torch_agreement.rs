//! Agreement with real `torch.optim`: trajectories and state dicts written
//! by torch (tests/fixtures/make_fixtures.py, `training/`) replayed here.

use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{Device, Var};
use ckpt::{Key, Value};
use ckpt_candle::{
    from_candle, to_candle, Adam, AdamConfig, LrScheduler, Mode, Optimizer, PlateauConfig,
    ReduceLrOnPlateau, Sgd, SgdConfig, ThresholdMode,
};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/training")
        .join(name);
    ckpt::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or_else(|| panic!("fixture has no {key}"))
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::List(items) | Value::Tuple(items) => items,
        other => panic!("not a list: {}", other.kind()),
    }
}

fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Tensor(t) => t.values_f64().collect(),
        Value::Float(f) => vec![*f],
        Value::Int(i) => vec![*i as f64],
        other => items(other).iter().flat_map(floats).collect(),
    }
}

/// Within 1e-6 relative (the bound), relative to the element or to
/// the tensor's largest magnitude, whichever is larger: where an update
/// cancels a weight to near zero, torch's fused multiply-add and candle's
/// separate multiply and add differ by an ulp of the operands, not of the
/// result.
fn assert_close(ours: &[f64], theirs: &[f64], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let scale = theirs.iter().fold(0f64, |m, b| m.max(b.abs()));
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let tol = 1e-6 * a.abs().max(b.abs()).max(scale);
        assert!((a - b).abs() <= tol, "{what}[{i}]: ckpt {a} vs torch {b}");
    }
}

/// Same structure; numbers equal as numbers (Python writes `0` where we
/// write `0.0`); tensors within 1e-6 relative. Dict keys are compared as
/// sets: torch orders a param group's keys as the user passed them.
fn assert_same_state(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Dict(a), Value::Dict(b)) => {
            let mut ka: Vec<String> = a.keys().map(Key::to_string).collect();
            let mut kb: Vec<String> = b.keys().map(Key::to_string).collect();
            ka.sort();
            kb.sort();
            assert_eq!(ka, kb, "{at}: keys");
            for (k, va) in a {
                assert_same_state(va, &b[k], &format!("{at}/{k}"));
            }
        }
        (Value::List(a) | Value::Tuple(a), Value::List(b) | Value::Tuple(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: lengths");
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                assert_same_state(va, vb, &format!("{at}/{i}"));
            }
        }
        (Value::Tensor(a), Value::Tensor(b)) => {
            assert_eq!((a.dtype(), a.shape()), (b.dtype(), b.shape()), "{at}");
            assert_close(&floats(ours), &floats(theirs), at);
        }
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            let (a, b) = (floats(ours)[0], floats(theirs)[0]);
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "{at}: ckpt {a} vs torch {b}"
            );
        }
        (a, b) => assert_eq!(a, b, "{at}"),
    }
}

fn vars(v: &Value) -> Vec<Var> {
    items(v)
        .iter()
        .map(|t| {
            Var::from_tensor(&to_candle(t.as_tensor().unwrap(), &Device::Cpu, "p").unwrap())
                .unwrap()
        })
        .collect()
}

fn optimizer(name: &str, params: &[Var], groups: usize) -> Box<dyn Optimizer> {
    // Defaults on purpose: the hyper-parameters come from torch's state.
    fn build<R: ckpt_candle::UpdateRule + 'static>(
        params: &[Var],
        groups: usize,
        config: R,
    ) -> Box<dyn Optimizer>
    where
        ckpt_candle::Optim<R>: Optimizer,
    {
        let mut opt = if groups == 1 {
            ckpt_candle::Optim::new(params.to_vec(), config.clone()).unwrap()
        } else {
            let mut opt = ckpt_candle::Optim::new(vec![params[0].clone()], config.clone()).unwrap();
            opt.add_param_group(params[1..].to_vec(), config).unwrap();
            opt
        };
        let _ = &mut opt;
        Box::new(opt)
    }
    if name.starts_with("sgd") {
        build(params, groups, SgdConfig::default())
    } else {
        build(params, groups, AdamConfig::default())
    }
}

#[test]
fn optimizers_follow_torch_step_for_step() {
    let cases = [
        "sgd",
        "sgd_momentum",
        "sgd_nesterov",
        "sgd_maximize",
        "adam",
        "adam_amsgrad",
        "adam_maximize",
        "adamw",
        "adamw_groups",
    ];
    for case in cases {
        let f = fixture(&format!("optim_{case}.pth"));
        let params = vars(get(&f, "params0"));
        let initial = get(&f, "initial");
        let groups = items(get(initial, "param_groups")).len();
        let mut opt = optimizer(case, &params, groups);
        opt.load_state_dict(initial)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        for (step, (grads, expected)) in items(get(&f, "grads"))
            .iter()
            .zip(items(get(&f, "params")))
            .enumerate()
        {
            let mut store = GradStore::default();
            for (p, g) in params.iter().zip(items(grads)) {
                store.insert(
                    p.as_tensor(),
                    to_candle(g.as_tensor().unwrap(), &Device::Cpu, "g").unwrap(),
                );
            }
            opt.step(&store).unwrap();
            for (i, (p, e)) in params.iter().zip(items(expected)).enumerate() {
                let ours: Vec<f64> = from_candle(p.as_tensor(), "p")
                    .unwrap()
                    .values_f64()
                    .collect();
                assert_close(&ours, &floats(e), &format!("{case} step {step} param {i}"));
            }
        }
        assert_same_state(&opt.state_dict().unwrap(), get(&f, "final"), case);
    }
}

fn two_group_sgd() -> Sgd {
    let w = || Var::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut opt = Sgd::new(
        vec![w()],
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    opt.add_param_group(
        vec![w()],
        SgdConfig {
            lr: 0.05,
            ..Default::default()
        },
    )
    .unwrap();
    opt
}

enum Sched {
    Lr(LrScheduler),
    Plateau(ReduceLrOnPlateau),
}

impl Sched {
    fn step(&mut self, opt: &mut Sgd, metric: f64) {
        match self {
            Sched::Lr(s) => s.step(opt).unwrap(),
            Sched::Plateau(s) => s.step(opt, metric).unwrap(),
        }
    }
    fn state_dict(&self) -> Value {
        match self {
            Sched::Lr(s) => s.state_dict(),
            Sched::Plateau(s) => s.state_dict(),
        }
    }
    fn load_state_dict(&mut self, v: &Value) -> ckpt_candle::Result<()> {
        match self {
            Sched::Lr(s) => s.load_state_dict(v),
            Sched::Plateau(s) => s.load_state_dict(v),
        }
    }
}

fn scheduler(name: &str, o: &mut Sgd) -> Sched {
    let lr = match name {
        "step" => LrScheduler::step_lr(o, 3, 0.5),
        "multistep" => LrScheduler::multi_step_lr(o, &[3, 7, 7, 12], 0.3),
        "exponential" => LrScheduler::exponential_lr(o, 0.93),
        "cosine" => LrScheduler::cosine_annealing_lr(o, 7, 1e-3),
        "linear" => LrScheduler::linear_lr(o, 0.25, 1.0, 6),
        "sequential" => {
            let a = LrScheduler::linear_lr(o, 0.1, 1.0, 4).unwrap();
            let b = LrScheduler::cosine_annealing_lr(o, 10, 0.0).unwrap();
            let c = LrScheduler::exponential_lr(o, 0.9).unwrap();
            LrScheduler::sequential_lr(o, vec![a, b, c], &[4, 12])
        }
        "plateau" => {
            let config = PlateauConfig {
                factor: 0.5,
                patience: 2,
                cooldown: 1,
                threshold: 0.01,
                ..Default::default()
            };
            return Sched::Plateau(ReduceLrOnPlateau::new(o, config).unwrap());
        }
        "plateau_max_abs" => {
            let config = PlateauConfig {
                mode: Mode::Max,
                threshold_mode: ThresholdMode::Abs,
                threshold: 0.05,
                patience: 1,
                min_lrs: vec![0.02, 0.01],
                ..Default::default()
            };
            return Sched::Plateau(ReduceLrOnPlateau::new(o, config).unwrap());
        }
        other => panic!("{other}"),
    };
    Sched::Lr(lr.unwrap())
}

#[test]
fn schedulers_give_torch_learning_rates_and_state_dicts_and_resume_mid_run() {
    let f = fixture("schedulers.pth");
    let metrics = floats(get(&f, "metrics"));
    let cases = [
        "step",
        "multistep",
        "exponential",
        "cosine",
        "linear",
        "sequential",
        "plateau",
        "plateau_max_abs",
    ];
    for case in cases {
        let record = get(&f, case);
        let expected: Vec<Vec<f64>> = items(get(record, "lrs")).iter().map(floats).collect();
        let mut opt = two_group_sgd();
        let mut sched = scheduler(case, &mut opt);
        for (step, want) in expected.iter().enumerate() {
            assert_close(&opt.lrs(), want, &format!("{case} step {step}"));
            if step < 25 {
                sched.step(&mut opt, metrics[step]);
            }
        }
        assert_same_state(&sched.state_dict(), get(record, "end"), case);

        // Resume from torch's state at step 10 in a fresh optimizer and scheduler.
        let mut opt = two_group_sgd();
        let mut sched = scheduler(case, &mut opt);
        opt.load_state_dict(get(record, "mid_optimizer")).unwrap();
        sched
            .load_state_dict(get(record, "mid"))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        for (step, want) in expected.iter().enumerate().skip(10) {
            assert_close(&opt.lrs(), want, &format!("{case} resumed, step {step}"));
            if step < 25 {
                sched.step(&mut opt, metrics[step]);
            }
        }
    }
}

#[test]
fn states_that_do_not_fit_are_refused_naming_the_key() {
    let f = fixture("optim_adam_amsgrad.pth");
    let adam_state = get(&f, "final");
    let params = vars(get(&f, "params0"));

    // An Adam state into SGD.
    let mut sgd = Sgd::new(params.clone(), SgdConfig::default()).unwrap();
    let err = sgd.load_state_dict(adam_state).unwrap_err().to_string();
    assert_eq!(err, "optimizer state: param_groups/0/momentum: missing");

    // The wrong number of parameters.
    let mut adam = Adam::new(params[..1].to_vec(), AdamConfig::default()).unwrap();
    let err = adam.load_state_dict(adam_state).unwrap_err().to_string();
    assert_eq!(err, "optimizer state: param_groups/0/params: the state's group has 2 parameters, the optimizer's 1");

    // The wrong shapes, and nothing half-loaded.
    let other = vec![
        Var::zeros((4, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
        Var::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
    ];
    let mut adam = Adam::new(
        other,
        AdamConfig {
            lr: 0.5,
            ..Default::default()
        },
    )
    .unwrap();
    let err = adam.load_state_dict(adam_state).unwrap_err().to_string();
    assert_eq!(
        err,
        "optimizer state: state/0/exp_avg: has shape [3, 4], its parameter [4, 3]"
    );
    assert_eq!(adam.lrs(), [0.5]);
    assert!(adam.param_state(0).is_none());

    // A scheduler state of another kind.
    let s = fixture("schedulers.pth");
    let mut opt = two_group_sgd();
    let mut cosine = LrScheduler::cosine_annealing_lr(&mut opt, 5, 0.0).unwrap();
    let err = cosine
        .load_state_dict(get(get(&s, "step"), "end"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "scheduler state: T_max: this is a StepLR state, not a CosineAnnealingLR state"
    );
    let mut plateau = ReduceLrOnPlateau::new(&mut opt, PlateauConfig::default()).unwrap();
    let err = plateau
        .load_state_dict(get(get(&s, "cosine"), "end"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("scheduler state: factor: this is a CosineAnnealingLR state"),
        "{err}"
    );
}

#[test]
fn a_model_saved_from_cuda_loads_on_the_cpu_in_any_float_dtype() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/training/from_cuda.pth");
    let sd = ckpt::load_state_dict(&path).unwrap();
    let f32s = ckpt_candle::Placement::new(Device::Cpu)
        .place_all(&sd)
        .unwrap();
    assert_eq!(f32s["weight"].dims(), [2, 3]);
    assert!(f32s["weight"].device().is_cpu());
    for dtype in [
        candle_core::DType::BF16,
        candle_core::DType::F16,
        candle_core::DType::F64,
    ] {
        let placed = ckpt_candle::Placement::new(Device::Cpu)
            .dtype(dtype)
            .place_all(&sd)
            .unwrap();
        assert_eq!(placed["bias"].dtype(), dtype);
        let back = placed["bias"]
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = f32s["bias"].to_vec1::<f32>().unwrap();
        for (a, b) in back.iter().zip(&want) {
            assert!((a - b).abs() <= 4e-3 * b.abs(), "{dtype:?}: {a} vs {b}");
        }
    }
    // Into a model whose variables live on the CPU in bf16.
    let store = ckpt_candle::ParamStore::new(0);
    candle_nn::linear(
        3,
        2,
        store.var_builder(candle_core::DType::BF16, &Device::Cpu),
    )
    .unwrap();
    let report = store
        .load_state_dict(sd, &ckpt::LoadRules::default())
        .unwrap();
    assert_eq!(report.loaded, ["weight", "bias"]);
    assert_eq!(report.cast.len(), 2);
}

#[test]
fn the_tutorial_checkpoint_torch_wrote_restores_into_ckpt_objects() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pth/checkpoint.pth");
    let c = ckpt::TrainingCheckpoint::load(&path).unwrap();
    assert_eq!(c.epoch, 3);
    assert_eq!(c.metric("accuracy"), Some(0.875));
    // The optimizer covers the parameters (not the BatchNorm buffers), in order.
    let params: Vec<Var> = c
        .model
        .iter()
        .filter(|(name, _)| !name.contains("running_") && !name.contains("num_batches"))
        .map(|(name, t)| Var::from_tensor(&to_candle(t, &Device::Cpu, name).unwrap()).unwrap())
        .collect();
    assert_eq!(params.len(), 6);
    let mut adam = Adam::new(params, AdamConfig::default()).unwrap();
    adam.load_state_dict(c.optimizer.as_ref().unwrap()).unwrap();
    assert_eq!(adam.param_state(0).unwrap().step, 1.0);
    let mut sched = LrScheduler::step_lr(&mut adam, 1, 1.0).unwrap();
    sched
        .load_state_dict(c.scheduler.as_ref().unwrap())
        .unwrap();
    assert_same_state(
        &sched.state_dict(),
        c.scheduler.as_ref().unwrap(),
        "scheduler",
    );
    assert_same_state(
        &adam.state_dict().unwrap(),
        c.optimizer.as_ref().unwrap(),
        "optimizer",
    );
}
