//! `Embedding` as `Gather` from its table.

use super::builder::{attr_int, Builder};
use super::Site;
use crate::Result;

pub(super) fn lower(b: &mut Builder, s: &Site) -> Result<String> {
    let weight = b.param(s.name, "weight")?;
    Ok(b.node(s.name, "Gather", &[&weight, s.x], vec![attr_int("axis", 0)]))
}
