//! The compressed format: a file written from the documented layout by
//! another program (tests/fixtures/make_fixtures.py, with Python's zlib)
//! reads as the same tensors as its safetensors twin; ckpt's own files
//! round-trip every fixture exactly and shrink pruned and int8 weights.

use std::path::{Path, PathBuf};

use ckpt::compress::{prune, quantize};
use ckpt::{StateDict, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

#[test]
fn a_file_written_by_another_program_reads_as_its_safetensors_twin() {
    let loaded = ckpt::read(fixture("ckptz/valid.ckptz"), &Default::default()).unwrap();
    assert_eq!(loaded.format, ckpt::Format::Compressed);
    assert_eq!(loaded.metadata["source"], "make_fixtures.py");
    let ours = StateDict::flatten(&loaded.value).unwrap();
    let twin = ckpt::load_state_dict(fixture("ckptz/valid.safetensors")).unwrap();
    assert_eq!(ours.len(), 3);
    for (name, t) in twin.iter() {
        assert_eq!(ours[name], *t, "{name}");
    }
}

#[test]
fn every_fixture_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "mlp.safetensors",
        "all_dtypes.safetensors",
        "training/optim_adam.pth",
        "spec/conv.pth",
    ] {
        let value = ckpt::load(fixture(name)).unwrap();
        let path = dir.path().join("x.ckptz");
        ckpt::save(&path, &value).unwrap();
        assert_eq!(ckpt::load(&path).unwrap(), value, "{name}");
        assert!(ckpt::verify(&path).unwrap().mismatches.is_empty());
    }
}

#[test]
fn pruned_int8_weights_shrink_far_below_the_float_file() {
    let dir = tempfile::tempdir().unwrap();
    let sd = ckpt::load_state_dict(fixture("mlp.safetensors")).unwrap();
    let masks: Vec<(String, prune::Mask)> = sd
        .iter()
        .filter(|(n, t)| n.ends_with(".weight") && t.shape().len() == 2)
        .map(|(n, t)| {
            let mask = prune::l1_unstructured(t, prune::Amount::Fraction(0.5), n).unwrap();
            (n.clone(), mask)
        })
        .collect();
    let pruned = prune::prune_state_dict(&sd, &masks, false).unwrap();
    let q = quantize::quantize_state_dict(&pruned, quantize::Granularity::PerChannel, |n, t| {
        n.ends_with(".weight") && t.shape().len() == 2
    })
    .unwrap();
    let size = |sd: &StateDict, name: &str| {
        let path = dir.path().join(name);
        ckpt::save(&path, &Value::from(sd.clone())).unwrap();
        assert_eq!(ckpt::load_state_dict(&path).unwrap(), *sd, "{name}");
        std::fs::metadata(path).unwrap().len()
    };
    let float = size(&sd, "f.safetensors");
    let compressed = size(&q, "q.ckptz");
    assert!(
        compressed * 5 <= float,
        "50% pruned int8 .ckptz is {compressed} bytes, over 20% of {float}"
    );
    assert!(size(&pruned, "p.ckptz") * 10 < float * 7);
}
