//! Pruning with `torch.nn.utils.prune`'s rules: L1 unstructured (per
//! tensor or global across tensors), Ln structured (whole slices along a
//! dimension), random unstructured; masks applied permanently or as
//! PyTorch's reparametrisation (`weight_orig` + `weight_mask`), and
//! `remove` to make that permanent; a sparsity report.

use crate::{DType, Error, Result, StateDict, TensorData};

/// How much to prune.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// A fraction of the elements (or slices), rounded half to even as
    /// Python's `round` does.
    Fraction(f64),
    /// A number of elements (or slices).
    Count(usize),
}

impl Amount {
    /// The number of units to prune out of `n`.
    pub fn count(self, n: usize) -> Result<usize> {
        match self {
            Amount::Fraction(f) if (0.0..=1.0).contains(&f) => {
                Ok((f * n as f64).round_ties_even() as usize)
            }
            Amount::Fraction(f) => Err(Error::BadPruning(format!(
                "amount {f} is not a fraction in [0, 1]"
            ))),
            Amount::Count(c) if c <= n => Ok(c),
            Amount::Count(c) => Err(Error::BadPruning(format!("cannot prune {c} of {n} units"))),
        }
    }
}

/// A mask: `true` keeps the element.
pub type Mask = Vec<bool>;

fn float_values(t: &TensorData, name: &str) -> Result<Vec<f64>> {
    if !t.dtype().is_float() {
        return Err(Error::BadPruning(format!(
            "{name} is {}, not a float tensor",
            t.dtype()
        )));
    }
    Ok(t.values_f64().collect())
}

/// Keeps all but the `k` smallest `scores` (ties: the earlier index goes
/// first, as a stable sort would).
fn drop_smallest(scores: &[f64], k: usize) -> Mask {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut mask = vec![true; scores.len()];
    for &i in &order[..k] {
        mask[i] = false;
    }
    mask
}

/// `prune.l1_unstructured`: zero the `amount` elements of smallest
/// magnitude.
///
/// ```
/// use ckpt::compress::prune::{l1_unstructured, Amount};
/// let t = ckpt::TensorData::from_f32(&[4], &[0.5, -0.1, 2.0, 0.2]).unwrap();
/// assert_eq!(l1_unstructured(&t, Amount::Fraction(0.5), "w").unwrap(), [true, false, true, false]);
/// ```
pub fn l1_unstructured(t: &TensorData, amount: Amount, name: &str) -> Result<Mask> {
    let v = float_values(t, name)?;
    let k = amount.count(v.len())?;
    Ok(drop_smallest(
        &v.iter().map(|x| x.abs()).collect::<Vec<_>>(),
        k,
    ))
}

/// `prune.global_unstructured` with L1: the `amount` smallest magnitudes
/// across all `tensors` together; one mask per tensor.
pub fn global_l1_unstructured(
    tensors: &[(&str, &TensorData)],
    amount: Amount,
) -> Result<Vec<Mask>> {
    let mut all = Vec::new();
    for (name, t) in tensors {
        all.extend(float_values(t, name)?.into_iter().map(f64::abs));
    }
    let k = amount.count(all.len())?;
    let mask = drop_smallest(&all, k);
    let mut out = Vec::new();
    let mut at = 0;
    for (_, t) in tensors {
        out.push(mask[at..at + t.numel()].to_vec());
        at += t.numel();
    }
    Ok(out)
}

/// `prune.ln_structured`: zero whole slices along `dim` (0: output rows or
/// channels) with the smallest `n`-norm (`n` may be `f64::INFINITY`).
pub fn ln_structured(
    t: &TensorData,
    amount: Amount,
    n: f64,
    dim: usize,
    name: &str,
) -> Result<Mask> {
    let v = float_values(t, name)?;
    let shape = t.shape();
    if dim >= shape.len() {
        return Err(Error::BadPruning(format!(
            "{name} has {} dimensions, no dimension {dim}",
            shape.len()
        )));
    }
    let (slices, inner) = (shape[dim], shape[dim + 1..].iter().product::<usize>());
    let slice_of = |i: usize| (i / inner) % slices;
    let mut norms = vec![0.0f64; slices];
    for (i, x) in v.iter().enumerate() {
        let s = slice_of(i);
        norms[s] = if n.is_infinite() {
            norms[s].max(x.abs())
        } else {
            norms[s] + x.abs().powf(n)
        };
    }
    if n.is_finite() {
        for norm in &mut norms {
            *norm = norm.powf(1.0 / n);
        }
    }
    let k = amount.count(slices)?;
    let keep = drop_smallest(&norms, k);
    Ok((0..v.len()).map(|i| keep[slice_of(i)]).collect())
}

/// `prune.random_unstructured`: zero `amount` elements chosen at random
/// (a seeded generator; PyTorch's random choices cannot be reproduced).
pub fn random_unstructured(t: &TensorData, amount: Amount, seed: u64) -> Result<Mask> {
    let n = t.numel();
    let k = amount.count(n)?;
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let scores: Vec<f64> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64
        })
        .collect();
    Ok(drop_smallest(&scores, k))
}

/// `t` with the masked-out elements set to zero (same dtype and shape).
pub fn apply(t: &TensorData, mask: &Mask) -> Result<TensorData> {
    let size = t.dtype().size();
    let mut bytes = t.bytes().to_vec();
    for (i, keep) in mask.iter().enumerate() {
        if !keep {
            bytes[i * size..(i + 1) * size].fill(0);
        }
    }
    TensorData::new(t.dtype(), t.shape().to_vec(), bytes)
}

/// The mask as a tensor of `like`'s dtype and shape (ones and zeros), as
/// PyTorch stores `weight_mask`.
pub fn mask_tensor(like: &TensorData, mask: &Mask) -> Result<TensorData> {
    let ones: Vec<f32> = mask.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    TensorData::from_f32(like.shape(), &ones)?.cast(like.dtype())
}

/// Buffers of PyTorch's layers (not parameters): they follow the
/// parameters of their module in a state dict.
const BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// Puts pruning into a state dict: permanently (`name` zeroed in place),
/// or as PyTorch's reparametrisation — `name` replaced by `name_orig` (the
/// untouched values) and `name_mask`, in the order PyTorch's pruning leaves
/// them (within each module: the other parameters, `name_orig`, the
/// buffers, `name_mask`) — so it loads into a PyTorch model pruned the
/// same way.
pub fn prune_state_dict(
    sd: &StateDict,
    masks: &[(String, Mask)],
    reparametrize: bool,
) -> Result<StateDict> {
    let module = |name: &str| name.rsplit_once('.').map_or("", |(m, _)| m).to_owned();
    let mut out = StateDict::new();
    let entries: Vec<(&String, &TensorData)> = sd.iter().collect();
    let mut i = 0;
    while i < entries.len() {
        let prefix = module(entries[i].0);
        let group: Vec<(&String, &TensorData)> = entries[i..]
            .iter()
            .take_while(|(n, _)| module(n) == prefix)
            .copied()
            .collect();
        i += group.len();
        let (mut params, mut buffers, mut origs, mut new_masks) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (name, t) in group {
            let leaf = name.rsplit('.').next().unwrap_or(name);
            match masks.iter().find(|(n, _)| n == name) {
                Some((_, mask)) if reparametrize => {
                    origs.push((format!("{name}_orig"), t.clone()));
                    new_masks.push((format!("{name}_mask"), mask_tensor(t, mask)?));
                }
                Some((_, mask)) => params.push((name.clone(), apply(t, mask)?)),
                None if BUFFERS.contains(&leaf) || leaf.ends_with("_mask") => {
                    buffers.push((name.clone(), t.clone()))
                }
                None => params.push((name.clone(), t.clone())),
            }
        }
        out.extend(
            params
                .into_iter()
                .chain(origs)
                .chain(buffers)
                .chain(new_masks),
        );
    }
    Ok(out)
}

/// `prune.remove` for a whole state dict: every `X_orig` with its
/// `X_mask` becomes `X = X_orig * X_mask`, in `X_orig`'s place.
pub fn remove(sd: &StateDict) -> Result<StateDict> {
    let mut out = StateDict::new();
    for (name, t) in sd.iter() {
        if let Some(base) = name.strip_suffix("_orig") {
            let Some(mask) = sd.get(&format!("{base}_mask")) else {
                out.insert(name.clone(), t.clone());
                continue;
            };
            let keep: Mask = mask.values_f64().map(|m| m != 0.0).collect();
            if mask.shape() != t.shape() {
                return Err(Error::BadPruning(format!(
                    "{base}_mask has shape {:?}, {name} {:?}",
                    mask.shape(),
                    t.shape()
                )));
            }
            out.insert(base.to_owned(), apply(t, &keep)?);
        } else if name.ends_with("_mask")
            && sd.contains_key(&format!("{}_orig", &name[..name.len() - 5]))
        {
            continue;
        } else {
            out.insert(name.clone(), t.clone());
        }
    }
    Ok(out)
}

/// One row of [`sparsity`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Sparsity {
    /// The tensor.
    pub name: String,
    /// Its elements.
    pub elements: u64,
    /// Its zeros.
    pub zeros: u64,
}

/// Zeros per float tensor.
pub fn sparsity(sd: &StateDict) -> Vec<Sparsity> {
    sd.iter()
        .filter(|(_, t)| t.dtype().is_float() || t.dtype() == DType::I8)
        .map(|(name, t)| Sparsity {
            name: name.clone(),
            elements: t.numel() as u64,
            zeros: t.values_f64().filter(|v| *v == 0.0).count() as u64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_like_python_and_refuse_nonsense() {
        assert_eq!(Amount::Fraction(0.5).count(5).unwrap(), 2); // round(2.5) == 2
        assert_eq!(Amount::Fraction(0.3).count(5).unwrap(), 2); // round(1.5) == 2
        assert_eq!(Amount::Count(3).count(5).unwrap(), 3);
        assert!(Amount::Fraction(1.5).count(5).is_err());
        assert!(Amount::Count(6).count(5).is_err());
    }

    #[test]
    fn reparametrised_pruning_removes_back_to_permanent() {
        let w = TensorData::from_f32(&[2, 2], &[1.0, -0.1, 0.2, -3.0]).unwrap();
        let b = TensorData::from_f32(&[2], &[0.5, 0.5]).unwrap();
        let sd: StateDict = [
            ("fc.weight".to_string(), w.clone()),
            ("fc.bias".to_string(), b),
        ]
        .into_iter()
        .collect();
        let mask = l1_unstructured(&w, Amount::Count(2), "fc.weight").unwrap();
        let re = prune_state_dict(&sd, &[("fc.weight".into(), mask.clone())], true).unwrap();
        assert_eq!(
            re.keys().collect::<Vec<_>>(),
            ["fc.bias", "fc.weight_orig", "fc.weight_mask"]
        );
        let permanent = prune_state_dict(&sd, &[("fc.weight".into(), mask)], false).unwrap();
        let removed = remove(&re).unwrap();
        assert_eq!(removed, permanent);
        assert_eq!(
            removed["fc.weight"].values_f64().collect::<Vec<_>>(),
            [1.0, 0.0, 0.0, -3.0]
        );
        assert_eq!(
            sparsity(&removed)
                .iter()
                .find(|s| s.name == "fc.weight")
                .unwrap()
                .zeros,
            2
        );
    }

    #[test]
    fn structured_pruning_zeroes_whole_rows() {
        let w = TensorData::from_f32(&[3, 2], &[1.0, 1.0, 0.1, 0.1, 5.0, 0.0]).unwrap();
        let mask = ln_structured(&w, Amount::Count(1), 2.0, 0, "w").unwrap();
        assert_eq!(mask, [true, true, false, false, true, true]);
        let cols = ln_structured(&w, Amount::Count(1), 1.0, 1, "w").unwrap();
        assert_eq!(cols, [true, false, true, false, true, false]);
        assert!(ln_structured(&w, Amount::Count(1), 2.0, 2, "w").is_err());
        let r = random_unstructured(&w, Amount::Fraction(0.5), 1).unwrap();
        assert_eq!(r.iter().filter(|k| !**k).count(), 3);
    }
}
