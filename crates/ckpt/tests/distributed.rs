//! Multi-rank checkpoints with real processes: W = 4 writer processes
//! save their parts of one DCP checkpoint (tensors split by rows,
//! unevenly, and tensors owned whole); the coordinator commits only when
//! all are there; a rank killed before saving leaves nothing committed;
//! loading with 1, 2 and 3 ranks gives bit-identical tensors; `ckpt::read`
//! of the folder sees the whole state dict; torch's `dcp.load` reads it
//! with 1 and 2 ranks. Folders torch wrote load by rank too, and folders
//! in ckpt's earlier layout (`ckpt.index.json`) still read.

mod common;
#[path = "../../../tests/interop/python.rs"]
mod python;

use std::path::Path;
use std::process::{Child, Command};

use ckpt::layout::distributed::{commit, save_part, Distributed, Part, INDEX};
use ckpt::{DType, StateDict, TensorData};
use common::fixture;

const WORLD: usize = 4;

/// The whole model every rank holds a piece of.
fn model() -> StateDict {
    let mut sd = StateDict::new();
    let values = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| i as f32 * k - 3.5).collect() };
    sd.insert(
        "embed.weight".into(),
        TensorData::from_f32(&[10, 6], &values(60, 0.25)).unwrap(),
    );
    sd.insert(
        "head.weight".into(),
        TensorData::from_f32(&[3, 4], &values(12, 1.5)).unwrap(),
    );
    sd.insert(
        "bias".into(),
        TensorData::from_f32(&[7], &values(7, 0.1)).unwrap(),
    );
    sd.insert("scale".into(), TensorData::from_f32(&[], &[2.5]).unwrap());
    sd.insert(
        "ids".into(),
        TensorData::new(
            DType::I64,
            vec![5],
            (0..5i64).flat_map(|i| (i * 11).to_le_bytes()).collect(),
        )
        .unwrap(),
    );
    sd
}

/// Rows `rows` of `t` (dimension 0).
fn rows(t: &TensorData, rows: std::ops::Range<usize>) -> TensorData {
    let row = t.bytes().len() / t.shape()[0].max(1);
    let mut shape = t.shape().to_vec();
    shape[0] = rows.len();
    TensorData::new(
        t.dtype(),
        shape,
        t.bytes()[rows.start * row..rows.end * row].to_vec(),
    )
    .unwrap()
}

/// What rank `rank` saves: uneven row splits of embed and bias, head
/// whole on rank 1, scale on rank 2, ids on rank 3.
fn parts(rank: usize) -> Vec<Part> {
    let m = model();
    let split = |name: &str, cuts: &[usize]| Part {
        name: name.into(),
        shape: m[name].shape().to_vec(),
        rows: cuts[rank]..cuts[rank + 1],
        data: rows(&m[name], cuts[rank]..cuts[rank + 1]),
    };
    let mut out = vec![
        split("embed.weight", &[0, 3, 5, 9, 10]),
        split("bias", &[0, 0, 4, 6, 7]),
    ];
    match rank {
        1 => out.push(Part::whole("head.weight", m["head.weight"].clone())),
        2 => out.push(Part::whole("scale", m["scale"].clone())),
        3 => out.push(Part::whole("ids", m["ids"].clone())),
        _ => {}
    }
    out
}

#[test]
fn rank_process() {
    let (Ok(dir), Ok(rank)) = (std::env::var("CKPT_RANK_DIR"), std::env::var("CKPT_RANK")) else {
        return; // only when started by the tests here
    };
    let rank: usize = rank.parse().unwrap();
    if std::env::var("CKPT_RANK_STALL").is_ok_and(|r| r == rank.to_string()) {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    save_part(Path::new(&dir), rank, WORLD, &parts(rank)).unwrap();
}

fn spawn(dir: &Path, rank: usize, stall: Option<usize>) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "rank_process", "--nocapture"])
        .env("CKPT_RANK_DIR", dir)
        .env("CKPT_RANK", rank.to_string())
        .stdout(std::process::Stdio::null());
    if let Some(s) = stall {
        c.env("CKPT_RANK_STALL", s.to_string());
    }
    c.spawn().unwrap()
}

#[test]
fn four_writer_processes_commit_one_checkpoint_that_any_world_size_loads() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..WORLD).map(|r| spawn(dir.path(), r, None)).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    commit(dir.path(), WORLD).unwrap();
    let ckpt = Distributed::open(dir.path()).unwrap();
    assert_eq!(ckpt.world(), WORLD);
    let whole = model();
    for world in 1..=3 {
        // Each rank's shard, put back together, is the model bit for bit.
        let shards: Vec<StateDict> = (0..world)
            .map(|r| ckpt.load_shard(r, world).unwrap())
            .collect();
        for (name, t) in whole.iter() {
            if t.shape().is_empty() {
                for s in &shards {
                    assert_eq!(s[name], *t, "{name}");
                }
                continue;
            }
            let mut bytes = Vec::new();
            for s in &shards {
                bytes.extend_from_slice(s[name].bytes());
            }
            assert_eq!(bytes, t.bytes(), "{name} with {world} ranks");
        }
    }
    // Any rows, across piece boundaries.
    assert_eq!(
        ckpt.read_rows("embed.weight", 2..8).unwrap(),
        rows(&whole["embed.weight"], 2..8)
    );
    // The folder is the whole checkpoint for every command.
    let read = ckpt::load_state_dict(dir.path()).unwrap();
    for (name, t) in whole.iter() {
        assert_eq!(read[name], *t, "{name}");
    }
    assert!(ckpt::verify(dir.path()).unwrap().mismatches.is_empty());
    // torch reads it, whole and sharded across 2 ranks.
    if let Some(python) = python::python() {
        let expected = dir.path().join("expected.pth");
        ckpt::save(&expected, &whole.clone().into()).unwrap();
        let (d, e) = (dir.path().to_str().unwrap(), expected.to_str().unwrap());
        for world in ["1", "2"] {
            python::run_peer(&python, "dcp_peer.py", &["load", d, e, world]);
        }
    }
}

/// Folders real torch wrote (2 ranks on dimension 0, 4 on dimension 1)
/// load by rank with 1, 2 and 3 ranks, bit-identical to the whole.
#[test]
fn folders_torch_wrote_load_by_rank_with_any_world_size() {
    for name in ["ranks2_dim0", "ranks4_dim1", "single", "zstd"] {
        let ckpt = Distributed::open(&fixture(&format!("dcp/{name}"))).unwrap();
        // DCP's keys are the tree's paths joined with dots.
        let whole: std::collections::HashMap<String, TensorData> =
            ckpt::load_state_dict(fixture(&format!("dcp/{name}.expected.pth")))
                .unwrap()
                .iter()
                .map(|(k, t)| (k.replace('/', "."), t.clone()))
                .collect();
        assert!(!ckpt.tensors().is_empty());
        for world in 1..=3 {
            let shards: Vec<StateDict> = (0..world)
                .map(|r| ckpt.load_shard(r, world).unwrap())
                .collect();
            for (tensor, _, shape) in ckpt.tensors() {
                let mut bytes = Vec::new();
                for s in &shards {
                    if shape.is_empty() {
                        assert_eq!(s[&tensor], whole[&tensor]);
                        bytes = s[&tensor].bytes().to_vec();
                    } else {
                        bytes.extend_from_slice(s[&tensor].bytes());
                    }
                }
                assert_eq!(
                    bytes,
                    whole[&tensor].bytes(),
                    "{name}: {tensor} with {world} ranks"
                );
            }
        }
    }
}

#[test]
fn a_rank_killed_before_its_part_leaves_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<Child> = (0..WORLD).map(|r| spawn(dir.path(), r, Some(2))).collect();
    for (r, c) in children.iter_mut().enumerate() {
        if r != 2 {
            assert!(c.wait().unwrap().success());
        }
    }
    children[2].kill().unwrap();
    children[2].wait().unwrap();
    let err = commit(dir.path(), WORLD).unwrap_err().to_string();
    assert!(err.contains("ranks [2] of 4 are not whole"), "{err}");
    assert!(!dir.path().join(".metadata").exists());
    let err = Distributed::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("no committed checkpoint"), "{err}");
    // Rank 2 comes back and saves: now it commits.
    save_part(dir.path(), 2, WORLD, &parts(2)).unwrap();
    commit(dir.path(), WORLD).unwrap();
    assert_eq!(
        Distributed::open(dir.path()).unwrap().load().unwrap()["scale"],
        model()["scale"]
    );
}

/// Rows `r` of the model's 7-row `bias`.
fn bias_part(m: &StateDict, r: std::ops::Range<usize>) -> Part {
    Part {
        name: "bias".into(),
        shape: vec![7],
        rows: r.clone(),
        data: rows(&m["bias"], r),
    }
}

/// A tensor every rank saves whole (replicated) is kept once.
#[test]
fn a_tensor_every_rank_saves_whole_is_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    for (rank, rows) in [(0, 0..3), (1, 3..7)] {
        let parts = [
            bias_part(&m, rows),
            Part::whole("scale", m["scale"].clone()),
        ];
        save_part(dir.path(), rank, 2, &parts).unwrap();
    }
    commit(dir.path(), 2).unwrap();
    let whole = Distributed::open(dir.path()).unwrap().load().unwrap();
    assert_eq!((&whole["bias"], &whole["scale"]), (&m["bias"], &m["scale"]));
}

#[test]
fn gaps_overlaps_and_bad_ranks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let part = |r| bias_part(&m, r);
    save_part(dir.path(), 0, 2, &[part(0..4)]).unwrap();
    save_part(dir.path(), 1, 2, &[part(3..7)]).unwrap();
    let err = commit(dir.path(), 2).unwrap_err().to_string();
    assert!(err.contains("bias") && err.contains("overlap"), "{err}");
    save_part(dir.path(), 1, 2, &[part(5..7)]).unwrap();
    let err = commit(dir.path(), 2).unwrap_err().to_string();
    assert!(
        err.contains("bias") && err.contains("6 elements of 7"),
        "{err}"
    );
    assert!(save_part(dir.path(), 2, 2, &[part(0..7)]).is_err());
    let bad = Part {
        name: "bias".into(),
        shape: vec![7],
        rows: 0..3,
        data: rows(&m["bias"], 0..4),
    };
    assert!(save_part(dir.path(), 0, 2, &[bad]).is_err());
}

/// A copy of the folder ckpt 0.x wrote in its own layout (2 ranks:
/// `layer.weight` split 1 + 3 rows, `layer.bias` and a 0-d `scale` whole).
fn earlier_layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("ckpt-distributed-v1")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn folders_in_the_earlier_layout_still_read() {
    let dir = earlier_layout();
    let ckpt = Distributed::open(dir.path()).unwrap();
    assert_eq!(ckpt.world(), 2);
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
    let weight = TensorData::from_f32(&[4, 3], &w).unwrap();
    assert_eq!(ckpt.read_rows("layer.weight", 0..4).unwrap(), weight);
    assert_eq!(
        ckpt.read_rows("layer.weight", 2..3).unwrap(),
        rows(&weight, 2..3)
    );
    let whole = ckpt::load_state_dict(dir.path().join(INDEX)).unwrap();
    assert_eq!(whole["layer.weight"], weight);
    assert_eq!(whole["scale"], TensorData::from_f32(&[], &[2.5]).unwrap());
}

#[test]
fn an_index_whose_pieces_are_out_of_order_or_overlap_is_refused_on_read() {
    let dir = earlier_layout();
    let index = dir.path().join(INDEX);
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    assert!(Distributed::open(dir.path()).is_ok());
    // Pieces swapped: readers that go in file order and readers that sort
    // would read different tensors.
    let mut swapped = good.clone();
    let pieces = swapped["tensors"][0]["pieces"].as_array_mut().unwrap();
    pieces.swap(0, 1);
    std::fs::write(&index, swapped.to_string()).unwrap();
    let err = Distributed::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("out of order"), "{err}");
    assert!(ckpt::load_state_dict(&index).is_err());
    // The second piece claiming rows the first already covers.
    let mut overlapping = good;
    overlapping["tensors"][0]["pieces"][1]["rows"] = serde_json::json!([0, 3]);
    std::fs::write(&index, overlapping.to_string()).unwrap();
    let err = Distributed::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("saved twice"), "{err}");
}

#[test]
fn an_index_whose_piece_is_not_an_object_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let index = r#"{"format": "ckpt-distributed", "world": 1, "tensors": [
        {"name": "w", "dtype": "F32", "shape": [1], "pieces": [7]}]}"#;
    std::fs::write(dir.path().join(INDEX), index).unwrap();
    let err = Distributed::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("not an object"), "{err}");
}

/// A local folder that counts the bytes read from it.
struct Counting {
    inner: ckpt::storage::LocalStorage,
    read: std::sync::atomic::AtomicU64,
}

impl ckpt::storage::Storage for Counting {
    fn root(&self) -> &Path {
        self.inner.root()
    }
    fn create_root(&self) -> std::io::Result<()> {
        self.inner.create_root()
    }
    fn lock(&self) -> std::io::Result<Option<Box<dyn std::any::Any + Send + Sync>>> {
        self.inner.lock()
    }
    fn create_dir(&self, name: &str) -> std::io::Result<()> {
        self.inner.create_dir(name)
    }
    fn write(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.inner.write(name, write)
    }
    fn append(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.append(name, bytes)
    }
    fn sync(&self, name: &str) -> std::io::Result<()> {
        self.inner.sync(name)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove(name)
    }
    fn list_in(&self, dir: &str) -> std::io::Result<Vec<String>> {
        self.inner.list_in(dir)
    }
    fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        let bytes = self.inner.read(name)?;
        self.read
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(bytes)
    }
    fn read_range(&self, name: &str, range: std::ops::Range<u64>) -> std::io::Result<Vec<u8>> {
        let bytes = self.inner.read_range(name, range)?;
        self.read
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(bytes)
    }
    fn local_path(&self, _: &str) -> Option<std::path::PathBuf> {
        None
    }
}

/// A [1000, 512] float32 tensor whose element i is i / 2.
fn big() -> TensorData {
    let values: Vec<f32> = (0..512_000).map(|i| i as f32 * 0.5).collect();
    TensorData::from_f32(&[1000, 512], &values).unwrap()
}

/// Reads rows 100..200 of `w` in `dir` through a counting storage: the
/// rows, and the bytes it took.
fn rows_counted(dir: &Path) -> (TensorData, u64) {
    let storage = std::sync::Arc::new(Counting {
        inner: ckpt::storage::LocalStorage::new(dir),
        read: Default::default(),
    });
    let ckpt = Distributed::open_in(dir, storage.clone()).unwrap();
    let before = storage.read.load(std::sync::atomic::Ordering::Relaxed);
    let rows = ckpt.read_rows("w", 100..200).unwrap();
    let after = storage.read.load(std::sync::atomic::Ordering::Relaxed);
    (rows, after - before)
}

/// Some rows of a large chunk are read alone, from inside its item: the
/// item's end records, pickle and header, then the rows (200 KB of a
/// 1.2 MB chunk) — in folders ckpt wrote and folders torch wrote.
#[test]
fn some_rows_of_a_large_chunk_are_read_without_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let w = big();
    let half = |r: std::ops::Range<usize>| Part {
        name: "w".into(),
        shape: vec![1000, 512],
        rows: r.clone(),
        data: rows(&w, r),
    };
    save_part(dir.path(), 0, 2, &[half(0..600)]).unwrap();
    save_part(dir.path(), 1, 2, &[half(600..1000)]).unwrap();
    commit(dir.path(), 2).unwrap();
    let (got, read) = rows_counted(dir.path());
    assert_eq!(got, rows(&w, 100..200));
    assert!(read < 250_000, "read {read} bytes for 204,800");
    // Across two chunks, and whole chunks (hash-checked) still agree.
    let ckpt = Distributed::open(dir.path()).unwrap();
    assert_eq!(ckpt.read_rows("w", 550..650).unwrap(), rows(&w, 550..650));
    assert_eq!(ckpt.load().unwrap()["w"], w);
    if let Some(python) = python::python() {
        let torch = dir.path().join("torch");
        let t = torch.to_str().unwrap();
        python::run_peer(&python, "dcp_peer.py", &["save-big", t]);
        let (got, read) = rows_counted(&torch);
        assert_eq!(got, rows(&w, 100..200));
        assert!(
            read < 250_000,
            "read {read} bytes for 204,800 of torch's 2 MB item"
        );
    }
}
