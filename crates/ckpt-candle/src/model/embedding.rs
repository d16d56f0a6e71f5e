//! `Embedding` (N(0, 1) initialisation): rows of its table by id.

use candle_core::{DType, Tensor};
use candle_nn::init::Init;
use ckpt::LayerKind;

use super::Vars;
use crate::Result;

pub(super) fn build(kind: &LayerKind, v: &Vars) -> Result<Tensor> {
    let LayerKind::Embedding {
        num_embeddings,
        embedding_dim,
    } = kind
    else {
        unreachable!("dispatched by kind")
    };
    Ok(v.vb.get_with_hints(
        (*num_embeddings, *embedding_dim),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        },
    )?)
}

pub(super) fn forward(table: &Tensor, x: &Tensor) -> Result<Tensor> {
    let ids = x.to_dtype(DType::U32)?;
    let mut shape = ids.dims().to_vec();
    shape.push(table.dim(1)?);
    Ok(table.index_select(&ids.flatten_all()?, 0)?.reshape(shape)?)
}
