//! Any bytes as the `data.pkl` of an otherwise valid `.pth` archive whose
//! storages `data/0` … `data/3` hold 64 bytes each: the pickle machine,
//! tensor views and materialisation get the fuzzer's whole attention.
#![no_main]

use std::path::Path;

use ckpt::format::pytorch::zip::ZipWriter;
use libfuzzer_sys::fuzz_target;

mod common;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fuzz_target!(|data: &[u8]| {
    common::bounded(data.len(), || {
        let storage = [0x3fu8; 64];
        let mut zip = ZipWriter::new(Vec::new());
        zip.entry("a/data.pkl", &[data]).unwrap();
        for key in 0..4 {
            zip.entry(&format!("a/data/{key}"), &[&storage]).unwrap();
        }
        zip.entry("a/version", &[b"3\n"]).unwrap();
        let file = zip.finish().unwrap();
        let _ = ckpt::read_bytes(ckpt::Format::PyTorch, file, Path::new("fuzz.pth"));
    });
});
