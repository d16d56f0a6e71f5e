//! Pruning masks equal `torch.nn.utils.prune`'s on the same weights
//! (tests/fixtures/prune/masks.pth, written by make_fixtures.py prune), and
//! a reparametrised state dict has torch's names and order.

mod common;

use ckpt::compress::prune::{
    global_l1_unstructured, l1_unstructured, ln_structured, prune_state_dict, remove, Amount, Mask,
};
use ckpt::{StateDict, TensorData, Value};
use common::fixture;

fn load() -> Value {
    ckpt::load(fixture("prune/masks.pth")).unwrap()
}

fn tensor<'a>(v: &'a Value, group: &str, name: &str) -> &'a TensorData {
    v.get(group)
        .and_then(|g| g.get(name))
        .and_then(Value::as_tensor)
        .unwrap_or_else(|| panic!("{group}/{name}"))
}

fn torch_mask(v: &Value, name: &str) -> Mask {
    tensor(v, "masks", name)
        .values_f64()
        .map(|m| m != 0.0)
        .collect()
}

#[test]
fn masks_equal_torch_for_every_method() {
    let f = load();
    let (fc, conv) = (
        tensor(&f, "weights", "fc.weight"),
        tensor(&f, "weights", "conv.weight"),
    );
    let cases: Vec<(&str, Mask)> = vec![
        (
            "l1_fc_0.3",
            l1_unstructured(fc, Amount::Fraction(0.3), "fc").unwrap(),
        ),
        (
            "l1_conv_5",
            l1_unstructured(conv, Amount::Count(5), "conv").unwrap(),
        ),
        (
            "ln_conv_2_dim0_0.5",
            ln_structured(conv, Amount::Fraction(0.5), 2.0, 0, "conv").unwrap(),
        ),
        (
            "ln_fc_1_dim1_0.25",
            ln_structured(fc, Amount::Fraction(0.25), 1.0, 1, "fc").unwrap(),
        ),
        (
            "ln_fc_inf_dim0_3",
            ln_structured(fc, Amount::Count(3), f64::INFINITY, 0, "fc").unwrap(),
        ),
    ];
    for (name, ours) in cases {
        assert_eq!(ours, torch_mask(&f, name), "{name}");
    }
    let global =
        global_l1_unstructured(&[("fc", fc), ("conv", conv)], Amount::Fraction(0.4)).unwrap();
    assert_eq!(global[0], torch_mask(&f, "global_0.4/fc"));
    assert_eq!(global[1], torch_mask(&f, "global_0.4/conv"));
}

#[test]
fn reparametrised_state_dicts_match_torch_and_remove_makes_them_permanent() {
    let f = load();
    let plain = StateDict::try_from(f.get("plain").unwrap()).unwrap();
    let pruned = StateDict::try_from(f.get("pruned").unwrap()).unwrap();
    let mask = l1_unstructured(&plain["0.weight"], Amount::Fraction(0.5), "0.weight").unwrap();
    let ours = prune_state_dict(&plain, &[("0.weight".into(), mask)], true).unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        pruned.keys().collect::<Vec<_>>()
    );
    assert_eq!(ours, pruned);
    let permanent = remove(&ours).unwrap();
    assert_eq!(permanent.len(), 4);
    let zeros = permanent["0.weight"]
        .values_f64()
        .filter(|v| *v == 0.0)
        .count();
    assert_eq!(zeros, 64);
}
