//! Unit tests of packages: round trips, versions and migrations, quantized packages.

use std::sync::Arc;

use super::*;
use crate::compress::quantize::{Activations, Granularity};
use crate::{KeyRule, TensorData};

fn spec() -> ModelSpec {
    ModelSpec::from_json(
        r#"{"name": "tiny", "input_shape": [2], "layers": [
            {"name": "head", "type": "Linear", "in_features": 2, "out_features": 1}]}"#,
    )
    .unwrap()
}

fn weights(prefix: &str) -> StateDict {
    let mut sd = StateDict::new();
    sd.insert(
        format!("{prefix}.weight"),
        TensorData::from_f32(&[1, 2], &[1.0, 2.0]).unwrap(),
    );
    sd.insert(
        format!("{prefix}.bias"),
        TensorData::from_f32(&[1], &[0.5]).unwrap(),
    );
    sd
}

#[test]
fn packages_round_trip_in_both_formats_and_check_their_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut info = PackageInfo::new(&spec(), "1.2.0");
    info.classes = vec!["yes".into()];
    info.metrics.insert("accuracy".into(), 0.97);
    info.user.insert("dataset".into(), "digits".into());
    let package = Package::new(spec(), weights("head"), info).unwrap();
    for ext in ["safetensors", "pth"] {
        let path = dir.path().join(format!("m.{ext}"));
        package.save(&path).unwrap();
        let back = Package::load(&path, &PackageOptions::default()).unwrap();
        assert_eq!(back, package, "{ext}");
    }
    assert!(Package::new(spec(), weights("out"), PackageInfo::new(&spec(), "1.0.0")).is_err());
    assert!(
        package.info.created.ends_with('Z') && package.info.created.len() == 20,
        "{}",
        package.info.created
    );
}

#[test]
fn versions_warn_error_or_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.safetensors");
    // A 1.0.0 package whose head was called "out".
    let old_spec =
        ModelSpec::from_json(&spec().to_json().to_string().replace("\"head\"", "\"out\"")).unwrap();
    Package::new(old_spec, weights("out"), PackageInfo::new(&spec(), "1.0.0"))
        .unwrap()
        .save(&path)
        .unwrap();

    let warned = Package::load(&path, &PackageOptions::default().expect_version("2.0.0")).unwrap();
    assert_eq!(warned.warnings.len(), 1);
    assert!(warned.warnings[0].contains("model version 1.0.0 is not the expected 2.0.0"));
    let err = Package::load(
        &path,
        &PackageOptions::default()
            .expect_version("2.0.0")
            .on_version_mismatch(VersionPolicy::Error),
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .contains("model version 1.0.0 is not the expected 2.0.0, and no migration leads there"));

    let mut migrations = Migrations::default();
    migrations.add(
        "1.0.0",
        "1.1.0",
        vec![
            MigrationStep::Rename(KeyRule::rename(r"^out\.", "head.").unwrap()),
            MigrationStep::Spec(spec()),
        ],
    );
    migrations.add(
        "1.1.0",
        "2.0.0",
        vec![MigrationStep::Transform {
            name: "head.bias".into(),
            change: Arc::new(|t| {
                TensorData::from_f32(t.shape(), &[t.values_f64().next().unwrap() as f32 * 2.0])
            }),
        }],
    );
    let options = PackageOptions::default()
        .expect_version("2.0.0")
        .migrations(migrations.clone());
    let migrated = Package::load(&path, &options).unwrap();
    assert_eq!(
        migrated.info.migrations,
        ["1.0.0 -> 1.1.0", "1.1.0 -> 2.0.0"]
    );
    assert_eq!(migrated.info.model_version, "2.0.0");
    assert!(migrated.warnings.is_empty());
    assert_eq!(migrated.weights["head.bias"].values_f64().next(), Some(1.0));
    assert_eq!(migrated.spec, spec());

    // Without the spec step, the renamed weights do not fit the old spec.
    migrations.edges[0].2.pop();
    let err = Package::load(
        &path,
        &PackageOptions::default()
            .expect_version("2.0.0")
            .migrations(migrations),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("do not fit the package's spec"),
        "{err}"
    );
}

#[test]
fn quantized_packages_round_trip_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let package =
        Package::new(spec(), weights("head"), PackageInfo::new(&spec(), "1.0.0")).unwrap();
    let q = package
        .quantize(Granularity::PerTensor, Activations::WeightOnly, |n, _| {
            n == "head.weight"
        })
        .unwrap();
    assert_eq!(q.info.format_version, 2);
    assert_eq!(q.weights["head.weight_scale"].shape(), [0usize; 0]);
    assert!(q
        .quantize(Granularity::PerTensor, Activations::Dynamic, |_, _| true)
        .is_err());
    for ext in ["safetensors", "pth"] {
        let path = dir.path().join(format!("q.{ext}"));
        q.save(&path).unwrap();
        let back = Package::load(&path, &PackageOptions::default()).unwrap();
        assert_eq!(back, q, "{ext}");
    }
    let back = q.dequantize().unwrap();
    assert_eq!(back.info.format_version, 1);
    assert!(back.quantization.is_none());
    // A quantized weight without its scale, or a scale of the wrong
    // shape, does not fit.
    let path = dir.path().join("broken.safetensors");
    let mut broken = q.clone();
    broken.weights.shift_remove("head.weight_scale");
    broken.save(&path).unwrap();
    let err = Package::load(&path, &PackageOptions::default()).unwrap_err();
    assert!(err.to_string().contains("head.weight_scale"), "{err}");
    let mut broken = q.clone();
    broken.quantization.as_mut().unwrap().granularity = Granularity::PerChannel;
    broken.save(&path).unwrap();
    assert!(Package::load(&path, &PackageOptions::default()).is_err());
    let mut broken = q.clone();
    broken.quantization.as_mut().unwrap().tensors = vec!["nothing".into()];
    broken.save(&path).unwrap();
    let err = Package::load(&path, &PackageOptions::default()).unwrap_err();
    assert!(err.to_string().contains("nothing is not a weight"), "{err}");
}
