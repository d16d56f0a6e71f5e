//! `.pth` files written by real torch (tests/fixtures/make_fixtures.py):
//! ckpt reads them exactly as `torch.load` shows them, refuses what it must,
//! and writes files that read back identically.

mod common;

use common::*;
use std::path::Path;

use ckpt::{Error, Key, Value};
use serde_json::Value as Json;

fn expected(name: &str) -> Json {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

#[test]
fn every_dtype_reads_as_torch_shows_it() {
    let v = ckpt::load(fixture("pth/all_dtypes.pth")).unwrap();
    assert_eq!(describe_tree(&v), expected("pth/all_dtypes.expected.json"));
}

#[test]
fn views_strides_offsets_and_expansions_read_as_torch_shows_them() {
    let v = ckpt::load(fixture("pth/views.pth")).unwrap();
    assert_eq!(describe_tree(&v), expected("pth/views.expected.json"));
    // Contiguous views borrow the map; strided ones are gathered copies.
    assert!(v.get("base").unwrap().as_tensor().unwrap().is_mapped());
    assert!(v.get("row").unwrap().as_tensor().unwrap().is_mapped());
    assert!(!v
        .get("transposed")
        .unwrap()
        .as_tensor()
        .unwrap()
        .is_mapped());
}

#[test]
fn a_training_checkpoint_reads_as_a_tree() {
    let v = ckpt::load(fixture("pth/checkpoint.pth")).unwrap();
    assert_eq!(describe_tree(&v), expected("pth/checkpoint.expected.json"));
    let opt = v.get("optimizer_state_dict").unwrap();
    let Value::Dict(state) = opt.get("state").unwrap() else {
        panic!()
    };
    assert!(state.contains_key(&Key::Int(0)));
    let group = match opt.get("param_groups").unwrap() {
        Value::List(groups) => &groups[0],
        other => panic!("{other:?}"),
    };
    assert!(matches!(group.get("betas"), Some(Value::Tuple(b)) if b.len() == 2));
}

#[test]
fn big_endian_storages_are_swapped() {
    let big = ckpt::load(fixture("pth/big_endian.pth")).unwrap();
    assert_eq!(
        describe_tree(&big),
        expected("pth/all_dtypes.expected.json")
    );
}

#[test]
fn parameters_load_as_tensors() {
    let v = ckpt::load(fixture("pth/parameter.pth")).unwrap();
    let t = v.get("weight").unwrap().as_tensor().unwrap();
    assert_eq!(t.shape(), &[2, 2]);
}

#[test]
fn pth_round_trips_through_ckpt_writers() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["all_dtypes", "views", "checkpoint"] {
        let v = ckpt::load(fixture(&format!("pth/{name}.pth"))).unwrap();
        for ext in ["pth", "safetensors"] {
            let out = dir.path().join(format!("{name}.{ext}"));
            ckpt::save(&out, &v).unwrap();
            assert_eq!(ckpt::load(&out).unwrap(), v, "{name}.{ext}");
        }
    }
}

#[test]
fn a_malicious_pickle_is_refused_and_nothing_runs() {
    let marker = Path::new("/tmp/ckpt-exploited");
    let _ = std::fs::remove_file(marker);
    let err = ckpt::load(fixture("hostile/malicious.pth")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::DangerousGlobal { ref global, .. } if global.ends_with(".system")),
        "{msg}"
    );
    assert!(
        msg.contains("malicious.pth") && msg.contains("never runs code"),
        "{msg}"
    );
    assert!(!marker.exists());
}

#[test]
fn whole_module_pickles_give_the_state_dict_without_running_anything() {
    let loaded = ckpt::read(fixture("pth/full_model.pth"), &ckpt::LoadOptions::default()).unwrap();
    assert_eq!(
        describe_tree(&loaded.value),
        expected("pth/full_model.expected.json")
    );
    assert_eq!(loaded.metadata["pytorch.pickled"], "torch.save(model)");
    let classes = &loaded.metadata["pytorch.classes"];
    assert!(
        classes.contains("__main__.Tiny")
            && classes.contains("torch.nn.modules.batchnorm.BatchNorm1d"),
        "{classes}"
    );
}

#[test]
fn torchscript_archives_give_the_same_state_dict() {
    let loaded = ckpt::read(fixture("pth/torchscript.pt"), &ckpt::LoadOptions::default()).unwrap();
    assert_eq!(
        describe_tree(&loaded.value),
        expected("pth/full_model.expected.json")
    );
    assert_eq!(loaded.metadata["pytorch.pickled"], "TorchScript archive");
}

#[test]
fn legacy_format_files_read_like_zip_ones() {
    let v = ckpt::load(fixture("pth/legacy.pth")).unwrap();
    assert_eq!(describe_tree(&v), expected("pth/all_dtypes.expected.json"));
}

#[test]
fn other_pickled_objects_are_inert_objects_and_the_verdict_names_them() {
    let loaded = ckpt::read(fixture("pth/namespace.pth"), &ckpt::LoadOptions::default()).unwrap();
    let Value::Object(o) = &loaded.value else {
        panic!("{:?}", loaded.value)
    };
    assert_eq!(o.class, "argparse.Namespace");
    assert_eq!(o.state.get("lr"), Some(&Value::Float(0.1)));
    let pickle = loaded.pickle.unwrap();
    assert_eq!(pickle.needs_weights_only_false, ["argparse.Namespace"]);
    assert!(pickle.verdict().contains("weights_only=False"));
    let plain = ckpt::read(fixture("pth/all_dtypes.pth"), &ckpt::LoadOptions::default()).unwrap();
    assert_eq!(
        plain.pickle.unwrap().verdict(),
        "opens with torch.load(weights_only=True)"
    );
}

#[test]
fn hostile_pth_files_are_errors_naming_the_file() {
    for name in [
        "truncated.pth",
        "random.pth",
        "short_storage.pth",
        "bad_pickle.pth",
    ] {
        let err = ckpt::load(fixture(&format!("hostile/{name}"))).expect_err(name);
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
    let err = ckpt::load(fixture("hostile/short_storage.pth")).unwrap_err();
    assert!(matches!(err, Error::BadStorage { .. }), "{err}");
}

#[test]
fn quantized_tensors_read_as_integers_with_scales_and_dequantize_exactly_as_torch() {
    use ckpt::compress::quantize::{dequantize_state_dict, dequantize_value};
    use ckpt::StateDict;
    let want = expected("pth/quantized.expected.json");
    let v = ckpt::load(fixture("pth/quantized.pth")).unwrap();
    let sd = StateDict::flatten(&v).unwrap();
    for (name, w) in want["int_repr"].as_object().unwrap() {
        assert_tensor(name, &sd[name.as_str()], w);
    }
    // ckpt's own int8 layout where it fits: int8, zero point 0, dim 0.
    assert!(sd.contains_key("per_tensor_qint8_scale"));
    assert!(!sd.contains_key("per_tensor_qint8_zero_point"));
    assert_eq!(sd["per_channel_axis1_axis"].values_f64().next(), Some(1.0));
    // torch's dequantize(), bit for bit, from the tree and from the
    // flattened state dict, and after a trip through safetensors.
    let dequantized = StateDict::flatten(&dequantize_value(&v).unwrap()).unwrap();
    let want_float = want["dequantized"].as_object().unwrap();
    assert_eq!(
        dequantized.keys().collect::<Vec<_>>(),
        want_float.keys().collect::<Vec<_>>()
    );
    for (name, w) in want_float {
        assert_tensor(name, &dequantized[name.as_str()], w);
    }
    assert_eq!(dequantize_state_dict(&sd).unwrap(), dequantized);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("q.safetensors");
    ckpt::save(&copy, &sd.clone().into()).unwrap();
    let back = ckpt::load_state_dict(&copy).unwrap();
    assert_eq!(dequantize_state_dict(&back).unwrap(), dequantized);
}

#[test]
fn quantize_dynamic_state_dicts_read_with_their_packed_weights() {
    let v = ckpt::load(fixture("pth/quantize_dynamic.pth")).unwrap();
    let sd = ckpt::StateDict::flatten(v.get("state_dict").unwrap()).unwrap();
    assert_eq!(
        sd.keys().collect::<Vec<_>>(),
        [
            "0.scale",
            "0.zero_point",
            "0._packed_params._packed_params/0",
            "0._packed_params._packed_params/0_scale",
            "0._packed_params._packed_params/1",
            "2.scale",
            "2.zero_point",
            "2._packed_params._packed_params/0",
            "2._packed_params._packed_params/0_scale",
            "2._packed_params._packed_params/1",
        ]
    );
    let state = v.get("state_dict").unwrap();
    assert_eq!(
        state.get("0._packed_params.dtype"),
        Some(&Value::Str("torch.qint8".into()))
    );
}

#[test]
fn torch_export_archives_read_as_torch_export_load_gives_them() {
    let want = expected("pth/exported.expected.json");
    let loaded = ckpt::read(fixture("pth/exported.pt2"), &ckpt::LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, ckpt::Format::ExportedProgram);
    assert!(loaded.pickle.is_none(), "no pickled payloads");
    let sd = ckpt::StateDict::flatten(&loaded.value).unwrap();
    let want = want.as_object().unwrap();
    // state_dict order, then the constants; views of one storage
    // (the transposed parameter) gathered as torch shows them.
    assert_eq!(
        sd.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, w) in want {
        assert_tensor(name, &sd[name.as_str()], w);
    }
    let err = ckpt::save("/tmp/never-written.pt2", &loaded.value).unwrap_err();
    assert!(matches!(err, Error::ReadOnlyFormat { .. }), "{err}");
}

#[test]
fn pt2_configs_that_lie_are_errors_naming_the_entry() {
    use ckpt::format::pytorch::zip::ZipWriter;
    let archive = |config: &str, data: &[u8]| {
        let mut w = ZipWriter::new(Vec::new());
        w.entry("m/archive_format", &[b"pt2"]).unwrap();
        w.entry(
            "m/data/weights/model_weights_config.json",
            &[config.as_bytes()],
        )
        .unwrap();
        w.entry("m/data/weights/weight_0", &[data]).unwrap();
        w.finish().unwrap()
    };
    let meta = |path: &str, sizes: &str, strides: &str, offset: u64| {
        format!(
            r#"{{"config": {{"w": {{"path_name": "{path}", "is_param": true, "use_pickle": false, "tensor_meta": {{"dtype": 7, "sizes": {sizes}, "strides": {strides}, "storage_offset": {{"as_int": {offset}}}}}}}}}}}"#
        )
    };
    let ints = |v: &[u64]| {
        format!(
            "[{}]",
            v.iter()
                .map(|n| format!(r#"{{"as_int": {n}}}"#))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let read =
        |bytes: Vec<u8>| ckpt::read_bytes(ckpt::Format::ExportedProgram, bytes, Path::new("m.pt2"));
    let good = read(archive(
        &meta("weight_0", &ints(&[2]), &ints(&[1]), 0),
        &[0; 8],
    ))
    .unwrap();
    assert_eq!(
        good.value.get("w").unwrap().as_tensor().unwrap().shape(),
        [2]
    );
    for (config, data, needle) in [
        (
            meta("../../etc/passwd", &ints(&[2]), &ints(&[1]), 0),
            &[0u8; 8][..],
            "path_name",
        ),
        (
            meta("weight_9", &ints(&[2]), &ints(&[1]), 0),
            &[0; 8],
            "missing",
        ),
        (
            meta("weight_0", &ints(&[3]), &ints(&[1]), 0),
            &[0; 8],
            "past the end",
        ),
        (
            meta("weight_0", &ints(&[2]), &ints(&[1]), 1 << 60),
            &[0; 8],
            "past the end",
        ),
        (
            meta("weight_0", &ints(&[2]), &ints(&[1]), u64::MAX),
            &[0; 8],
            "overflows",
        ),
        (
            meta("weight_0", &ints(&[2]), &ints(&[1]), 0),
            &[0; 7],
            "whole float32",
        ),
        (
            meta("weight_0", &ints(&[2, 2]), &ints(&[1]), 0),
            &[0; 8],
            "differ in length",
        ),
        ("{\"config\": 5}".to_owned(), &[0; 8], "config"),
        ("not json".to_owned(), &[0; 8], "not JSON"),
    ] {
        let err = read(archive(&config, data)).unwrap_err().to_string();
        assert!(
            err.contains(needle) && err.contains("m.pt2"),
            "{needle}: {err}"
        );
    }
}

#[test]
fn torchscript_archives_read_as_torch_jit_load_names_them() {
    for name in ["scripted", "traced"] {
        let loaded = ckpt::read(
            fixture(&format!("torchscript/{name}.pt")),
            &ckpt::LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(loaded.format, ckpt::Format::TorchScript, "{name}");
        // torch.jit.load, not torch.load, opens these: no torch.load verdict.
        assert!(loaded.pickle.is_none(), "{name}");
        let sd = ckpt::StateDict::flatten(&loaded.value).unwrap();
        let want = expected(&format!("torchscript/{name}.expected.json"));
        let want = want.as_object().unwrap();
        assert_eq!(
            sd.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (n, w) in want {
            assert_tensor(n, &sd[n.as_str()], w);
        }
    }
}

#[test]
fn checkpoints_saved_from_cuda_read_on_the_cpu_as_torch_maps_them() {
    let v = ckpt::load(fixture("pth/saved_from_cuda.pth")).unwrap();
    assert_eq!(
        describe_tree(&v),
        expected("pth/saved_from_cuda.expected.json")
    );
}
