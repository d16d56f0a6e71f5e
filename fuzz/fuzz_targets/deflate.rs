//! Structure-aware: real deflate and zlib streams of high ratio, with
//! sizes that may lie, built from the fuzz input into each place ckpt
//! inflates — a `.pth`'s `data.pkl` or storage, a `.npz` member, a
//! `.ckptz` index or tensor blob — so that inputs of a few KB reach what
//! a decompression bomb does. Reading must allocate no more than a fixed
//! multiple of the built file's length (see `common`).
//!
//! Input: byte 0 picks the place (`% 5`) and a variant (`/ 5`: whether
//! a zip entry's size lies, the `.ckptz` codec), bytes 1..5 the size the
//! headers declare, bytes 5..7 how many times the rest repeats to make
//! the payload (at most 16 MiB), byte 7 the compression level.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use miniz_oxide::deflate::{compress_to_vec, compress_to_vec_zlib};

mod common;

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

const MAX_PAYLOAD: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let variant = data[0] as usize / 5;
    let declared = u32::from_le_bytes(data[1..5].try_into().unwrap());
    let repeat = u16::from_le_bytes(data[5..7].try_into().unwrap()) as usize;
    let level = data[7] % 11;
    let unit = &data[8..];
    let payload = unit.repeat(repeat.clamp(1, MAX_PAYLOAD / unit.len()));
    let (format, file, name) = match data[0] % 5 {
        0 => {
            let pickle = [b"\x80\x02".as_slice(), &payload].concat();
            let packed = compress_to_vec(&pickle, level);
            let size = if variant & 1 == 0 { pickle.len() as u32 } else { declared };
            let file = zip(&[
                ("a/data.pkl", 8, &packed, size, crc(&pickle)),
                ("a/version", 0, b"3\n", 2, crc(b"3\n")),
            ]);
            (ckpt::Format::PyTorch, file, "fuzz.pth")
        }
        1 => {
            let pickle = tensor_pickle(declared / 4);
            let packed = compress_to_vec(&payload, level);
            let file = zip(&[
                ("a/data.pkl", 0, &pickle, pickle.len() as u32, crc(&pickle)),
                ("a/data/0", 8, &packed, declared, crc(&payload)),
            ]);
            (ckpt::Format::PyTorch, file, "fuzz.pth")
        }
        2 => {
            let numel = match variant & 1 {
                0 => payload.len() / 4,
                _ => declared as usize / 4,
            };
            let header =
                format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({numel},), }}\n");
            let mut member = b"\x93NUMPY\x01\x00".to_vec();
            member.extend((header.len() as u16).to_le_bytes());
            member.extend(header.as_bytes());
            member.extend(&payload);
            let packed = compress_to_vec(&member, level);
            let size = if variant & 1 == 0 { member.len() as u32 } else { declared };
            let file = zip(&[("x.npy", 8, &packed, size, crc(&member))]);
            (ckpt::Format::Npz, file, "fuzz.npz")
        }
        3 => {
            let index = [br#"{"metadata": {}, "tensors": []"#.as_slice(), &payload, b"}"].concat();
            (ckpt::Format::Compressed, ckptz(&compress_to_vec_zlib(&index, level), &[]), "fuzz.ckptz")
        }
        _ => {
            let codec = ["zlib", "planes", "sparse"][variant % 3];
            // Declared 0: the size the payload makes (a sparse payload is
            // read as the bitmap of an all-zero tensor).
            let numel = match (declared, codec) {
                (0, "sparse") => payload.len() * 8,
                (0, _) => payload.len() / 4,
                _ => declared as usize / 4,
            };
            let blob = compress_to_vec_zlib(&payload, level);
            let index = format!(
                r#"{{"metadata": {{}}, "tensors": [{{"name": "w", "dtype": "F32", "shape": [{numel}], "codec": "{codec}", "length": {}}}]}}"#,
                blob.len()
            );
            let file = ckptz(&compress_to_vec_zlib(index.as_bytes(), level), &blob);
            (ckpt::Format::Compressed, file, "fuzz.ckptz")
        }
    };
    common::bounded(file.len(), || {
        let _ = ckpt::read_bytes(format, file.clone(), Path::new(name));
    });
});

fn crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

/// A zip archive of (name, method, data, declared size, crc) entries.
fn zip(entries: &[(&str, u16, &[u8], u32, u32)]) -> Vec<u8> {
    let (mut body, mut central) = (Vec::new(), Vec::new());
    for &(name, method, data, size, crc) in entries {
        let offset = body.len() as u32;
        let fields = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend(20u16.to_le_bytes());
            }
            for v in [20u16, 0, method, 0, 0x21] {
                h.extend(v.to_le_bytes());
            }
            for v in [crc, data.len() as u32, size] {
                h.extend(v.to_le_bytes());
            }
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes());
            h
        };
        body.extend(fields(0x0403_4b50, false));
        body.extend(name.as_bytes());
        body.extend(data);
        central.extend(fields(0x0201_4b50, true));
        central.extend([0u8; 6]); // comment length, disk, internal attributes
        central.extend(0u32.to_le_bytes()); // external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let mut end = 0x0605_4b50u32.to_le_bytes().to_vec();
    let n = entries.len() as u16;
    for v in [0u16, 0, n, n] {
        end.extend(v.to_le_bytes());
    }
    end.extend((central.len() as u32).to_le_bytes());
    end.extend((body.len() as u32).to_le_bytes());
    end.extend(0u16.to_le_bytes());
    [body, central, end].concat()
}

/// `{'w': a float32 tensor of `numel` elements over storage `0`}`, as
/// torch.save pickles it.
fn tensor_pickle(numel: u32) -> Vec<u8> {
    let text = |s: &str| [b"X".as_slice(), &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat();
    let int = |n: u32| [b"J".as_slice(), &(n as i32).to_le_bytes()].concat();
    [
        b"\x80\x02}(".as_slice(),
        &text("w"),
        b"ctorch._utils\n_rebuild_tensor_v2\n((",
        &text("storage"),
        b"ctorch\nFloatStorage\n",
        &text("0"),
        &text("cpu"),
        &int(numel),
        b"tQK\x00",
        &int(numel),
        b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu.",
    ]
    .concat()
}

/// A `.ckptz` file: magic, the zlib index's length, the index, the blobs.
fn ckptz(index: &[u8], blobs: &[u8]) -> Vec<u8> {
    [b"CKPTZ\0\0\x01".as_slice(), &(index.len() as u64).to_le_bytes(), index, blobs].concat()
}
