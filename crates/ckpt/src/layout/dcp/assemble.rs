//! Putting a checkpoint back together: chunk tables checked to tile
//! their tensor, chunks copied into place, and values put at their paths
//! in the tree.

use std::path::Path;

use crate::{Dict, Key, Result, Value};

use super::{bad, Chunk};

/// The number of elements of `sizes`, when it can be counted.
fn elements(sizes: &[usize]) -> Option<u128> {
    sizes
        .iter()
        .try_fold(1u128, |n, &s| n.checked_mul(s as u128))
}

/// Checks that the chunks lie inside `size`, do not overlap, and cover it.
pub(super) fn check_cover(size: &[usize], chunks: &[Chunk]) -> std::result::Result<(), String> {
    let mut covered: u128 = 0;
    for c in chunks {
        if c.offsets.len() != size.len() || c.sizes.len() != size.len() {
            return Err("a chunk's rank differs from the tensor's".into());
        }
        for ((o, s), d) in c.offsets.iter().zip(&c.sizes).zip(size) {
            if o.checked_add(*s).is_none_or(|end| end > *d) {
                return Err(format!(
                    "a chunk at {:?} of {:?} lies outside {size:?}",
                    c.offsets, c.sizes
                ));
            }
        }
        covered = elements(&c.sizes)
            .and_then(|n| covered.checked_add(n))
            .ok_or("its chunks hold more elements than can be counted")?;
    }
    let whole = elements(size).ok_or("its size has more elements than can be counted")?;
    for (i, a) in chunks.iter().enumerate() {
        for b in &chunks[i + 1..] {
            let meet = a
                .offsets
                .iter()
                .zip(&a.sizes)
                .zip(b.offsets.iter().zip(&b.sizes))
                .all(|((ao, asz), (bo, bsz))| ao.max(bo) < &(ao + asz).min(bo + bsz));
            if meet {
                return Err(format!(
                    "chunks at {:?} and {:?} overlap",
                    a.offsets, b.offsets
                ));
            }
        }
    }
    if covered != whole {
        return Err(format!("its chunks hold {covered} elements of {whole}"));
    }
    Ok(())
}

/// Copies a contiguous chunk of `sizes` at `offsets` into the whole
/// tensor's bytes, one run of its last dimension at a time.
pub(crate) fn place_chunk(
    whole: &mut [u8],
    size: &[usize],
    item: usize,
    (offsets, sizes): (&[usize], &[usize]),
    src: &[u8],
) {
    let rank = size.len();
    if rank == 0 {
        whole.copy_from_slice(src);
        return;
    }
    let run = sizes[rank - 1] * item;
    if run == 0 {
        return;
    }
    // Strides of the whole tensor, in elements.
    let mut strides = vec![1usize; rank];
    for d in (0..rank - 1).rev() {
        strides[d] = strides[d + 1] * size[d + 1];
    }
    let rows = sizes[..rank - 1].iter().product::<usize>();
    let mut index = vec![0usize; rank - 1];
    for r in 0..rows {
        let start: usize = (0..rank - 1)
            .map(|d| (offsets[d] + index[d]) * strides[d])
            .sum::<usize>()
            + offsets[rank - 1];
        whole[start * item..start * item + run].copy_from_slice(&src[r * run..(r + 1) * run]);
        for d in (0..rank - 1).rev() {
            index[d] += 1;
            if index[d] < sizes[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// Puts `value` at `path` in the tree: a string is a dict key, an integer a
/// list index (the list padded with `None`, as torch does).
/// A list index is at most `longest` (a list has no more elements than the
/// index has entries).
pub(super) fn place(
    root: &mut Value,
    path: &[Key],
    value: Value,
    longest: usize,
    meta: &Path,
) -> Result<()> {
    let clash = || {
        bad(
            meta,
            format!(
                "{}: the tree's paths clash",
                path.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            ),
        )
    };
    let (last, parents) = path.split_last().ok_or_else(clash)?;
    let mut node = root;
    for (i, key) in parents.iter().enumerate() {
        let next_is_index = matches!(path[i + 1], Key::Int(_));
        let empty = || match next_is_index {
            true => Value::List(Vec::new()),
            false => Value::Dict(Dict::new()),
        };
        node = slot(node, key, longest, empty).ok_or_else(clash)?;
    }
    *slot(node, last, longest, || Value::None).ok_or_else(clash)? = value;
    Ok(())
}

/// The child of `node` at `key`, made with `make` when missing.
fn slot<'a>(
    node: &'a mut Value,
    key: &Key,
    longest: usize,
    make: impl FnOnce() -> Value,
) -> Option<&'a mut Value> {
    match (node, key) {
        (Value::Dict(d), Key::Str(_)) => Some(d.entry(key.clone()).or_insert_with(make)),
        (Value::List(l), Key::Int(i)) => {
            let i = usize::try_from(*i).ok()?;
            if i >= longest {
                return None;
            }
            if l.len() <= i {
                l.resize(i + 1, Value::None);
            }
            if matches!(l[i], Value::None) {
                l[i] = make();
            }
            Some(&mut l[i])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::dcp::Item;

    fn chunk(offsets: &[usize], sizes: &[usize]) -> Chunk {
        Chunk {
            offsets: offsets.to_vec(),
            sizes: sizes.to_vec(),
            item: Item {
                file: "__0_0.distcp".into(),
                offset: 0,
                length: 0,
                hash: None,
                zstd: false,
            },
        }
    }

    #[test]
    fn chunk_tables_that_lie_are_refused() {
        let size = [4, 3];
        assert!(check_cover(&size, &[chunk(&[0, 0], &[2, 3]), chunk(&[2, 0], &[2, 3])]).is_ok());
        // An empty chunk at the end of a dimension is what torch writes.
        assert!(check_cover(&size, &[chunk(&[0, 0], &[4, 3]), chunk(&[4, 0], &[0, 3])]).is_ok());
        for (chunks, problem) in [
            (vec![chunk(&[0, 0], &[2, 3])], "hold 6 elements of 12"),
            (
                vec![chunk(&[0, 0], &[3, 3]), chunk(&[2, 0], &[2, 3])],
                "overlap",
            ),
            (
                vec![chunk(&[3, 0], &[2, 3]), chunk(&[0, 0], &[2, 3])],
                "outside",
            ),
            (vec![chunk(&[0], &[12])], "rank"),
            (vec![chunk(&[usize::MAX, 0], &[2, 3])], "outside"),
        ] {
            let err = check_cover(&size, &chunks).unwrap_err();
            assert!(err.contains(problem), "{err}");
        }
    }

    #[test]
    fn chunks_land_at_their_offsets() {
        // A [3, 4] tensor of bytes from two column chunks.
        let mut whole = vec![0u8; 12];
        place_chunk(
            &mut whole,
            &[3, 4],
            1,
            (&[0, 0], &[3, 3]),
            &[1, 2, 3, 5, 6, 7, 9, 10, 11],
        );
        place_chunk(&mut whole, &[3, 4], 1, (&[0, 3], &[3, 1]), &[4, 8, 12]);
        assert_eq!(whole, (1..=12).collect::<Vec<u8>>());
    }

    #[test]
    fn paths_rebuild_nesting_and_refuse_clashes() {
        let meta = Path::new(".metadata");
        let mut root = Value::Dict(Dict::new());
        let key = |s: &str| Key::Str(s.into());
        place(
            &mut root,
            &[key("opt"), key("groups"), Key::Int(1), key("lr")],
            Value::Float(0.5),
            4,
            meta,
        )
        .unwrap();
        let Value::Dict(d) = &root else { panic!() };
        let Value::Dict(opt) = &d[&key("opt")] else {
            panic!()
        };
        let Value::List(groups) = &opt[&key("groups")] else {
            panic!()
        };
        assert_eq!(groups.len(), 2);
        assert!(matches!(groups[0], Value::None));
        place(
            &mut root,
            &[key("opt"), key("groups"), key("x")],
            Value::Int(1),
            4,
            meta,
        )
        .unwrap_err();
        // No list longer than the index has entries.
        place(&mut root, &[key("a"), Key::Int(4)], Value::Int(1), 4, meta).unwrap_err();
    }
}
