//! save → load round trips through real files.

use ckpt::{DType, Dict, Key, LoadOptions, StateDict, TensorData, Value};
use proptest::prelude::*;

fn tensor(dtype: DType, shape: &[usize], seed: u8) -> TensorData {
    let len = ckpt::byte_len(dtype, shape).unwrap() as usize;
    let bytes = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    TensorData::new(dtype, shape.to_vec(), bytes).unwrap()
}

fn dict(pairs: Vec<(Key, Value)>) -> Value {
    Value::Dict(pairs.into_iter().collect())
}

/// A checkpoint shaped like the one PyTorch's tutorial saves, with every
/// kind of value.
fn training_checkpoint() -> Value {
    let model = dict(vec![
        ("fc1.weight".into(), tensor(DType::F32, &[4, 3], 1).into()),
        ("fc1.bias".into(), tensor(DType::F32, &[4], 2).into()),
        (
            "bn.num_batches_tracked".into(),
            tensor(DType::I64, &[], 3).into(),
        ),
    ]);
    let state0 = dict(vec![
        ("step".into(), tensor(DType::F32, &[], 4).into()),
        ("exp_avg".into(), tensor(DType::F32, &[4, 3], 5).into()),
    ]);
    let group = dict(vec![
        ("lr".into(), Value::Float(1e-3)),
        (
            "betas".into(),
            Value::Tuple(vec![Value::Float(0.9), Value::Float(0.999)]),
        ),
        ("eps".into(), Value::Float(1e-8)),
        ("weight_decay".into(), Value::Int(0)),
        ("amsgrad".into(), Value::Bool(false)),
        ("foreach".into(), Value::None),
        (
            "params".into(),
            Value::List(vec![Value::Int(0), Value::Int(1)]),
        ),
    ]);
    let optimizer = dict(vec![
        ("state".into(), dict(vec![(Key::Int(0), state0)])),
        ("param_groups".into(), Value::List(vec![group])),
    ]);
    dict(vec![
        ("epoch".into(), Value::Int(7)),
        ("model_state_dict".into(), model),
        ("optimizer_state_dict".into(), optimizer),
        (
            "loss".into(),
            Value::Float(f64::from_bits(0x3fd5_5555_5555_5555)),
        ),
        (
            "nan".into(),
            Value::Float(f64::from_bits(0x7ff8_dead_beef_0001)),
        ),
        ("note".into(), Value::Str("ünïcode / slashes".into())),
        ("raw".into(), Value::Bytes(vec![0, 1, 255])),
    ])
}

#[test]
fn nested_checkpoint_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let value = training_checkpoint();
    ckpt::save(&path, &value).unwrap();
    assert_eq!(ckpt::load(&path).unwrap(), value);
    let owned = ckpt::read(&path, &LoadOptions::default().mmap(false)).unwrap();
    assert_eq!(owned.value, value);
}

#[test]
fn mapped_load_borrows_and_owned_load_copies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let mut sd = StateDict::new();
    sd.insert("w".into(), tensor(DType::BF16, &[8, 8], 9));
    ckpt::save(&path, &sd.clone().into()).unwrap();
    let mapped = ckpt::load_state_dict(&path).unwrap();
    assert!(mapped["w"].is_mapped());
    let owned = ckpt::read(&path, &LoadOptions::default().mmap(false)).unwrap();
    let owned = StateDict::try_from(&owned.value).unwrap();
    assert!(!owned["w"].is_mapped());
    assert_eq!(mapped, sd);
    assert_eq!(owned, sd);
}

#[test]
fn nested_checkpoint_flattens_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    ckpt::save(&path, &training_checkpoint()).unwrap();
    let sd = ckpt::load_state_dict(&path).unwrap();
    let names: Vec<_> = sd.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "model_state_dict/fc1.weight",
            "model_state_dict/fc1.bias",
            "model_state_dict/bn.num_batches_tracked",
            "optimizer_state_dict/state/0/step",
            "optimizer_state_dict/state/0/exp_avg",
        ]
    );
}

#[test]
fn metadata_is_stored_and_returned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let options = ckpt::SaveOptions::default()
        .metadata("architecture", "mlp")
        .durable(true);
    ckpt::save_with(&path, &training_checkpoint(), &options).unwrap();
    let loaded = ckpt::read(&path, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.metadata["architecture"], "mlp");
    assert!(!loaded
        .metadata
        .contains_key(ckpt::format::safetensors::TREE_KEY));
}

#[test]
fn saving_to_an_unknown_extension_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = ckpt::save(dir.path().join("m.txt"), &Value::None).unwrap_err();
    assert!(matches!(err, ckpt::Error::UnknownExtension { .. }));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn saving_into_a_missing_directory_names_the_path() {
    let err = ckpt::save("/nonexistent-dir/m.safetensors", &Value::Dict(Dict::new())).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/m.safetensors"),
        "{err}"
    );
}

fn dtype_strategy() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::all().collect::<Vec<_>>())
}

fn tensor_strategy() -> impl Strategy<Value = TensorData> {
    (
        dtype_strategy(),
        prop::collection::vec(0usize..4, 0..4),
        any::<u8>(),
    )
        .prop_map(|(dtype, shape, seed)| tensor(dtype, &shape, seed))
}

fn key_strategy() -> impl Strategy<Value = Key> {
    prop_oneof![
        "[a-z._/]{0,8}".prop_map(Key::Str),
        any::<i64>().prop_map(Key::Int),
    ]
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(|bits| Value::Float(f64::from_bits(bits))),
        any::<f64>().prop_map(Value::Float),
        ".{0,12}".prop_map(Value::Str),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        tensor_strategy().prop_map(Value::Tensor),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            prop::collection::vec((key_strategy(), inner), 0..6)
                .prop_map(|pairs| Value::Dict(pairs.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_tree_round_trips_or_reports_a_name_collision(value in value_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        match ckpt::save(&path, &value) {
            Ok(()) => prop_assert_eq!(ckpt::load(&path).unwrap(), value),
            // Keys with '/' can make two paths flatten to one name.
            Err(ckpt::Error::DuplicateName { .. }) => prop_assert!(!path.exists()),
            // safetensors has no complex128.
            Err(ckpt::Error::SafetensorsDType { dtype: DType::C128, .. }) => prop_assert!(!path.exists()),
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
    }

    #[test]
    fn any_tree_round_trips_through_pth_exactly(value in value_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.pth");
        ckpt::save(&path, &value).unwrap();
        prop_assert_eq!(ckpt::load(&path).unwrap(), value);
    }

    #[test]
    fn any_state_dict_round_trips(tensors in prop::collection::vec(tensor_strategy(), 0..10)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sd.safetensors");
        let sd: StateDict = tensors.into_iter().enumerate().map(|(i, t)| (format!("layer{i}.weight"), t)).collect();
        match ckpt::save(&path, &sd.clone().into()) {
            Ok(()) => prop_assert_eq!(ckpt::load_state_dict(&path).unwrap(), sd),
            // safetensors has no complex128: refused, nothing written.
            Err(ckpt::Error::SafetensorsDType { dtype: DType::C128, .. }) => {
                prop_assert!(sd.values().any(|t| t.dtype() == DType::C128));
                prop_assert!(!path.exists());
            }
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
    }
}

#[test]
fn progress_is_reported_in_order_and_ends_at_the_total() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let sd: StateDict = (0..50)
        .map(|i| (format!("w{i}"), tensor(DType::F32, &[1000], i as u8)))
        .collect();
    for ext in ["safetensors", "pth", "npz"] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let options = ckpt::SaveOptions::default()
            .on_progress(move |done, total| sink.lock().unwrap().push((done, total)));
        ckpt::save_with(
            dir.path().join(format!("p.{ext}")),
            &sd.clone().into(),
            &options,
        )
        .unwrap();
        let seen = seen.lock().unwrap();
        assert!(seen.len() >= 10, "{ext}: {} reports", seen.len());
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{ext}");
        assert_eq!(*seen.last().unwrap(), (200_000, 200_000), "{ext}");
    }
}

#[test]
fn a_tree_of_100000_tensors_reads_in_linear_time() {
    // Quadratic work (a removal that shifts every later entry) took over
    // 20 s for 100,000 tensors; linear work takes well under a second.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.safetensors");
        let t = TensorData::new(DType::U8, vec![1], vec![7]).unwrap();
        let mut inner = Dict::new();
        for i in 0..100_000 {
            inner.insert(format!("t{i}").into(), Value::Tensor(t.clone()));
        }
        let mut root = Dict::new();
        root.insert("layers".into(), Value::Dict(inner));
        let value = Value::Dict(root);
        ckpt::save(&path, &value).unwrap();
        let back = ckpt::load(&path).unwrap();
        let _ = tx.send(back == value);
    });
    let equal = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("reading 100,000 tensors took over a minute: quadratic work");
    assert!(equal);
}
