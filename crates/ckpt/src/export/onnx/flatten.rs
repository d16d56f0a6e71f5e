//! `Flatten` as a `Reshape` to the output shape (the batch kept).

use super::builder::{i64s, Builder};
use super::Site;

pub(super) fn lower(b: &mut Builder, s: &Site) -> String {
    let mut target = vec![0i64]; // 0 copies the batch dimension
    target.extend(i64s(s.out_shape));
    let shape = b.constant_i64(&format!("{}.shape", s.name), &target);
    b.node(s.name, "Reshape", &[s.x, &shape], vec![])
}
