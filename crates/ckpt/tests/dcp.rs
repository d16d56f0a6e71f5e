//! PyTorch Distributed Checkpoint folders written by real torch
//! (`tests/fixtures/make_fixtures.py dcp`): ckpt reads each as one tree
//! equal to what torch's `dcp_to_torch_save` consolidates.

mod common;

use common::fixture;

#[test]
fn dcp_folders_read_as_what_dcp_to_torch_save_gives() {
    for name in ["single", "ranks2_dim0", "ranks4_dim1"] {
        let folder = fixture(&format!("dcp/{name}"));
        let loaded =
            ckpt::read(&folder, &Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.format, ckpt::Format::Dcp);
        let report = ckpt::verify(&folder).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.format, ckpt::Format::Dcp);
        let expected = ckpt::load(fixture(&format!("dcp/{name}.expected.pth"))).unwrap();
        assert_eq!(loaded.value, expected, "{name}");
        let tensors = ckpt::StateDict::flatten(&loaded.value).unwrap();
        assert!(
            tensors.len() >= 4,
            "{name}: {:?}",
            tensors.keys().collect::<Vec<_>>()
        );
    }
}

/// The sharded tensors are whole: rank 1's rows of `w` follow rank 0's.
#[test]
fn a_sharded_tensor_is_assembled_from_its_chunks() {
    let loaded = ckpt::load_state_dict(fixture("dcp/ranks4_dim1")).unwrap();
    let w = &loaded["w"];
    assert_eq!(w.shape(), [3, 10]);
    let ids = &loaded["ids"];
    assert_eq!(ids.shape(), [2, 5], "an empty chunk on the last rank");
}
