//! Unit tests of specs: shapes, names and the errors for bad specs.

use super::*;

#[test]
fn values_torch_refuses_and_specs_that_ask_for_the_moon_are_errors() {
    let conv = |extra: &str| {
        format!(
            r#"{{"name": "c", "type": "Conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 3{extra}}}"#
        )
    };
    for (layers, input, needle) in [
        (
            conv(r#", "dilation": 0"#),
            "[2, 8, 8]",
            "dilation must be positive",
        ),
        (
            conv(r#", "stride": 0"#),
            "[2, 8, 8]",
            "stride must be positive",
        ),
        (
            conv(r#", "groups": 3"#),
            "[2, 8, 8]",
            "groups 3 must divide",
        ),
        (
            conv("").replace(r#""kernel_size": 3"#, r#""kernel_size": 0"#),
            "[2, 8, 8]",
            "kernel_size must be positive",
        ),
        (
            r#"{"name": "p", "type": "MaxPool2d", "kernel_size": 2, "stride": 0}"#.into(),
            "[2, 8, 8]",
            "stride must be positive",
        ),
        (
            r#"{"name": "a", "type": "AdaptiveAvgPool2d", "output_size": [16384, 16384]}"#
                .into(),
            "[3, 8, 8]",
            "at most 2^28",
        ),
        (
            r#"{"name": "r", "type": "ReLU"}"#.into(),
            "[4096, 4096, 64]",
            "at most 2^28",
        ),
        (
            r#"{"name": "w", "type": "Conv2d", "in_channels": 128, "out_channels": 128, "kernel_size": 31, "padding": 15}"#.into(),
            "[128, 256, 256]",
            "w: Conv2d takes 1031865892864 multiply-adds per sample; ckpt accepts at most 2^38",
        ),
        (
            r#"{"name": "l", "type": "Linear", "in_features": 65536, "out_features": 65536}"#.into(),
            "[65536]",
            "l.bias: the model's parameters pass 2^32",
        ),
    ] {
        let err = spec(&layers, input).unwrap_err().to_string();
        assert!(err.contains(needle), "{layers}: {err}");
    }
    assert!(spec(&conv(""), "[2, 8, 8]").is_ok());
}

fn spec(layers: &str, input: &str) -> Result<ModelSpec> {
    ModelSpec::from_json(&format!(
        r#"{{"name": "t", "input_shape": {input}, "layers": [{layers}]}}"#
    ))
}

#[test]
fn a_cnn_infers_shapes_and_names_like_torch() {
    let s = spec(
        r#"{"name": "conv", "type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
           {"name": "bn", "type": "BatchNorm2d", "num_features": 4},
           {"type": "ReLU"},
           {"name": "pool", "type": "MaxPool2d", "kernel_size": 2},
           {"name": "res", "type": "Residual", "layers": [
               {"type": "Conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 1},
               {"type": "GELU"}]},
           {"name": "gap", "type": "AdaptiveAvgPool2d", "output_size": 1},
           {"name": "flat", "type": "Flatten"},
           {"name": "head", "type": "Linear", "in_features": 4, "out_features": 10}"#,
        "[1, 8, 8]",
    )
    .unwrap();
    assert_eq!(s.output_shape().unwrap(), [10]);
    let names: Vec<String> = s.parameters().into_iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "conv.weight",
            "conv.bias",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked",
            "res.0.weight",
            "res.0.bias",
            "head.weight",
            "head.bias"
        ]
    );
    assert_eq!(s.parameters()[0].shape, [4, 1, 3, 3]);
    assert_eq!(s.parameter_count(), 40 + 8 + 148 + 50);
    let again = ModelSpec::from_json(&s.to_json().to_string()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn clear_errors_for_bad_specs() {
    let err = |layers: &str, input: &str| spec(layers, input).unwrap_err().to_string();
    assert_eq!(
        err(
            r#"{"name": "fc", "type": "Linear", "in_features": 3, "out_features": 2}"#,
            "[4]"
        ),
        "model spec: fc: Linear expects 3 input features, gets a sample of shape [4]"
    );
    assert_eq!(
        err(
            r#"{"name": "fc", "type": "Linear", "in_features": 3}"#,
            "[3]"
        ),
        "model spec: fc: missing field \"out_features\""
    );
    assert!(err(r#"{"name": "x", "type": "Transformer"}"#, "[3]")
        .starts_with("model spec: x: unknown layer type \"Transformer\""));
    assert!(err(
        r#"{"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 5}"#,
        "[1, 3, 3]"
    )
    .contains("does not fit an input of 3"));
    assert!(err(r#"{"name": "r", "type": "Residual", "layers": [{"type": "Linear", "in_features": 3, "out_features": 2}]}"#, "[3]").contains("must keep the shape"));
    assert!(err(
        r#"{"type": "ReLU", "name": "a"}, {"type": "ReLU", "name": "a"}"#,
        "[3]"
    )
    .contains("two layers have this name"));
    let newer = ModelSpec::from_json(r#"{"spec_version": 9, "input_shape": [1], "layers": []}"#)
        .unwrap_err();
    assert!(
        newer.to_string().contains("newer than this ckpt reads"),
        "{newer}"
    );
    assert!(ModelSpec::from_json("{")
        .unwrap_err()
        .to_string()
        .contains("not JSON"));
}
