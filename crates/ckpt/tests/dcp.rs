//! PyTorch Distributed Checkpoint folders written by real torch
//! (`tests/fixtures/make_fixtures.py dcp`, one through torch's zstd
//! transform): ckpt reads each as one tree equal to what torch's
//! `dcp_to_torch_save` consolidates; folders that lie are refused by name.

mod common;

use common::fixture;

#[test]
fn dcp_folders_read_as_what_dcp_to_torch_save_gives() {
    for name in ["single", "ranks2_dim0", "ranks4_dim1", "zstd"] {
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

/// A `.metadata` rewritten by torch's own pickle to lie: a tensor whose
/// one chunk claims 16 GiB is refused before anything is allocated, and
/// chunks that leave a gap are refused by name.
#[test]
fn indexes_that_lie_are_refused_without_allocating() {
    let Some(python) = std::env::var_os("CKPT_PYTHON") else {
        return;
    };
    let cases = [
        ("huge", "m.size = torch.Size([65536, 65536]); c = m.chunks[0]; c.sizes = torch.Size([65536, 65536])", "claim more bytes"),
        ("gap", "m.size = torch.Size([m.size[0] + 1] + list(m.size[1:]))", "elements of"),
    ];
    for (name, change, problem) in cases {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(fixture("dcp/single")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        let script = format!(
            "import pickle, sys, torch\n\
             p = sys.argv[1] + '/.metadata'\n\
             md = pickle.load(open(p, 'rb'))\n\
             m = md.state_dict_metadata['model.0.weight']\n\
             {change}\n\
             pickle.dump(md, open(p, 'wb'))\n"
        );
        let status = std::process::Command::new(&python)
            .args(["-c", &script, dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "{name}: the python rewrite failed");
        let err = ckpt::read(dir.path(), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(problem) && err.contains("model.0.weight"),
            "{name}: {err}"
        );
    }
}

/// A folder ckpt writes reads back as the tree it saved, carries each
/// item's hash in `ckpt.integrity.json` (which torch never opens), and a
/// flipped byte in a data file is found by `verify` and by every read.
#[test]
fn a_folder_ckpt_wrote_carries_hashes_that_reads_check() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("out");
    let value = ckpt::load(fixture("dcp/ranks2_dim0.expected.pth")).unwrap();
    let options = ckpt::SaveOptions::default().format(ckpt::Format::Dcp);
    ckpt::save_with(&folder, &value, &options).unwrap();
    assert_eq!(ckpt::load(&folder).unwrap(), value);
    assert!(ckpt::verify(&folder).unwrap().mismatches.is_empty());
    assert!(folder.join("ckpt.integrity.json").is_file());
    let data = folder.join("__0_0.distcp");
    let mut bytes = std::fs::read(&data).unwrap();
    let at = bytes.len() - 200;
    bytes[at] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    for err in [
        ckpt::verify(&folder).unwrap_err(),
        ckpt::load(&folder).unwrap_err(),
    ] {
        assert!(
            matches!(err, ckpt::Error::HashMismatch { .. })
                && err.to_string().contains("__0_0.distcp"),
            "{err}"
        );
    }
}

/// The hostile DCP folders (made from ranks2_dim0 by torch's own pickle)
/// are refused, each for what it is, before anything large is allocated
/// (the CLI's hostile test runs them under a 1 GiB limit).
#[test]
fn hostile_folders_are_refused_by_name() {
    for (name, problem) in [
        ("dcp_claims_16gib", "claim more bytes"),
        ("dcp_escape", "is not a file in the folder"),
        ("dcp_past_end", "past the file"),
        ("dcp_zstd_bomb", "claim more bytes"),
    ] {
        let folder = fixture(&format!("hostile/{name}"));
        let err = ckpt::read(&folder, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(problem) && err.contains(name), "{name}: {err}");
        let err = ckpt::layout::distributed::Distributed::open(&folder)
            .and_then(|d| d.load())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("whole.safetensors");
        let err = ckpt::layout::dcp::consolidate(&folder, &file, &Default::default()).unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
        assert!(!file.exists(), "{name}: a partial file was left");
    }
}

/// The per-rank shards torch's Hugging Face DCP writer leaves
/// (`hf_ranks2/sharded/`, each rank's chunk under the plain key with its
/// offsets in `DCP_SHARDING_INFO`) consolidate into the tensors torch's own
/// reader gives (its key order follows the directory listing: compared as
/// maps).
#[test]
fn hugging_face_dcp_shards_consolidate_by_their_sharding_info() {
    let folder = fixture("dcp/hf_ranks2/sharded");
    let loaded = ckpt::read(&folder, &Default::default()).unwrap();
    assert_eq!(loaded.format, ckpt::Format::Dcp);
    let got = ckpt::StateDict::flatten(&loaded.value).unwrap();
    let want = ckpt::load_state_dict(fixture("dcp/hf_ranks2.expected.pth")).unwrap();
    assert_eq!(got.len(), want.len());
    for (name, t) in want.iter() {
        assert_eq!(&got[name], t, "{name}");
    }
    assert_eq!(got["w"].shape(), [7, 3], "rank 1's rows follow rank 0's");
    assert!(ckpt::verify(&folder).unwrap().mismatches.is_empty());
}

/// Streaming consolidation writes, byte for byte, the file the in-memory
/// path writes (same names, tree and order), for folders torch wrote
/// (sharded on rows, on columns, through zstd) and one ckpt wrote.
#[test]
fn consolidating_tensor_by_tensor_writes_what_the_whole_tree_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let value = ckpt::load(fixture("pth/checkpoint.pth")).unwrap();
    let options = ckpt::SaveOptions::default().format(ckpt::Format::Dcp);
    ckpt::save_with(&ours, &value, &options).unwrap();
    let folders = [
        "dcp/single",
        "dcp/ranks2_dim0",
        "dcp/ranks4_dim1",
        "dcp/zstd",
    ];
    for folder in folders.map(fixture).into_iter().chain([ours]) {
        let streamed = dir.path().join("streamed.safetensors");
        let whole = dir.path().join("whole.safetensors");
        let done = ckpt::layout::dcp::consolidate(&folder, &streamed, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", folder.display()));
        let tree = ckpt::read(&folder, &Default::default()).unwrap().value;
        ckpt::save(&whole, &tree).unwrap();
        let tensors = ckpt::StateDict::flatten(&tree).unwrap();
        assert_eq!(
            (done.tensors, done.bytes),
            (tensors.len(), tensors.total_bytes())
        );
        assert!(
            std::fs::read(&streamed).unwrap() == std::fs::read(&whole).unwrap(),
            "{}",
            folder.display()
        );
        assert_eq!(ckpt::load(&streamed).unwrap(), tree);
    }
}
