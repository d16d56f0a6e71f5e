//! Checkpoints as the real libraries write them in the wild
//! (tests/fixtures/make_wild.py): a Lightning `Trainer` checkpoint,
//! `transformers` model folders and `training_args.bin`, a research
//! script's training checkpoint full of Python objects, torch 1.4's legacy
//! container (Python 2 and 3 pickling, saved from CUDA) and bare NumPy
//! pickles. ckpt must read each exactly as the Python side loads it: every
//! tensor (name, dtype, shape, bytes), the classes that would need
//! `torch.load(weights_only=False)`, and the values the script selected.

mod common;

use common::*;

use ckpt::{Key, StateDict, Value};
use serde_json::Value as Json;

fn expected(name: &str) -> Json {
    let path = fixture(&format!("wild/{name}.expected.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn read(name: &str) -> ckpt::Loaded {
    ckpt::read(
        fixture(&format!("wild/{name}")),
        &ckpt::LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The value at a flattened path (`args/lr`), Python objects seen as their
/// plain dicts, as the Python side describes it.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = value;
    for segment in path.split('/') {
        at = match at {
            Value::Dict(d) => d.get(&Key::from(segment)).or_else(|| {
                segment
                    .parse::<i64>()
                    .ok()
                    .and_then(|i| d.get(&Key::Int(i)))
            })?,
            Value::List(items) | Value::Tuple(items) => {
                items.get(segment.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(at)
}

/// Checks `loaded` against `wild/<name>.expected.json`: the tensors (in
/// order unless `any_order`), the classes, the selected values.
fn check(name: &str, loaded: &ckpt::Loaded, any_order: bool) {
    let want = expected(name);
    let sd = StateDict::flatten(&loaded.value).unwrap_or_else(|e| panic!("{name}: {e}"));
    let tensors = want["tensors"].as_object().unwrap();
    let mut got_names: Vec<&str> = sd.keys().map(String::as_str).collect();
    let mut want_names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    if any_order {
        got_names.sort();
        want_names.sort();
    }
    assert_eq!(got_names, want_names, "{name}: tensor names");
    for (tensor, w) in tensors {
        assert_tensor(&format!("{name}: {tensor}"), &sd[tensor.as_str()], w);
    }

    let report = loaded
        .pickle
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: no pickle report"));
    let classes: Vec<&str> = want["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        report.needs_weights_only_false, classes,
        "{name}: the classes torch.load(weights_only=True) refuses"
    );
    if want["weights_only"] == Json::Bool(true) {
        assert!(report.needs_weights_only_false.is_empty(), "{name}");
        assert_eq!(
            report.verdict(),
            "opens with torch.load(weights_only=True)",
            "{name}"
        );
    }

    let (plain, _) = loaded.value.without_objects();
    for (path, w) in want["values"].as_object().unwrap() {
        let got = lookup(&plain, path).unwrap_or_else(|| panic!("{name}: no value at {path}"));
        assert_eq!(&describe_tree(got), w, "{name}: value at {path}");
    }
}

fn check_file(name: &str) -> ckpt::Loaded {
    let loaded = read(name);
    check(name, &loaded, false);
    loaded
}

#[test]
fn a_lightning_trainer_checkpoint_reads_as_torch_loads_it() {
    let loaded = check_file("lightning.ckpt");
    assert_eq!(loaded.format, ckpt::Format::PyTorch);
    assert!(!loaded.value.has_objects());
}

#[test]
fn a_transformers_bert_folder_opens_as_its_pytorch_model_bin() {
    let loaded = read("bert");
    check("bert", &loaded, false);
    assert_eq!(loaded.metadata["folder.weights"], "pytorch_model.bin");
    assert_eq!(loaded.metadata["config.model_type"], "bert");
}

#[test]
fn a_sharded_transformers_bert_folder_opens_through_its_index() {
    let loaded = read("bert_sharded");
    check("bert_sharded", &loaded, true);
    assert_eq!(
        loaded.metadata["folder.weights"],
        "pytorch_model.bin.index.json"
    );
    // The same weights as the unsharded folder.
    assert_eq!(
        StateDict::flatten(&loaded.value).unwrap().len(),
        StateDict::flatten(&read("bert").value).unwrap().len()
    );
}

#[test]
fn transformers_training_args_read_as_an_inert_object() {
    let loaded = check_file("training_args.bin");
    let Value::Object(args) = &loaded.value else {
        panic!(
            "training_args.bin is not an object: {:?}",
            loaded.value.kind()
        )
    };
    assert_eq!(args.class, "transformers.training_args.TrainingArguments");
}

#[test]
fn a_research_training_checkpoint_with_python_objects_reads_as_torch_loads_it() {
    let loaded = check_file("checkpoint.pth.tar");
    assert!(loaded.value.has_objects());
    let Some(Value::Object(ns)) = loaded.value.get("args") else {
        panic!("args is not an object")
    };
    assert_eq!(ns.class, "argparse.Namespace");
}

// OmegaConf's ListConfig metadata names `int` as its key type; pickle
// protocol 2 (torch.save's) writes the `int` type as `__builtin__.long`,
// read as Python 3 reads it (`_compat_pickle`'s names).
#[test]
fn a_checkpoint_carrying_an_omegaconf_config_reads() {
    check_file("checkpoint_omegaconf.pth");
}

// Every node of a DictConfig keeps `_parent`, a memo reference back to the
// config: a cycle, read with the back-reference marked.
#[test]
fn a_checkpoint_carrying_an_omegaconf_dict_config_reads() {
    check_file("checkpoint_omegaconf_dict.pth");
}

#[test]
fn a_torch_1_4_state_dict_pickled_by_python_2_reads_as_torch_loads_it() {
    let loaded = check_file("legacy_v1_4_state_dict.pth");
    assert_eq!(loaded.format, ckpt::Format::PyTorch);
}

#[test]
fn a_torch_1_4_state_dict_pickled_by_python_3_reads_as_torch_loads_it() {
    check_file("legacy_py3_state_dict.pth");
}

#[test]
fn a_torch_1_4_state_dict_saved_from_cuda_reads_on_the_cpu() {
    check_file("legacy_cuda.pth");
}

#[test]
fn a_torch_1_4_training_checkpoint_reads_with_its_views_and_id_keys() {
    check_file("legacy_training.pth");
}

#[test]
fn a_bare_numpy_pickle_reads_its_arrays_as_tensors() {
    let loaded = check_file("weights.pkl");
    assert_eq!(loaded.format, ckpt::Format::Pickle);
}

// Protocol 5 (Python 3.14's default) pickles a contiguous array as
// `numpy._core.numeric._frombuffer(bytearray, dtype, shape, order)`.
#[test]
fn a_numpy_pickle_of_protocol_5_reads_its_arrays_as_tensors() {
    check_file("weights_p5.pkl");
}
