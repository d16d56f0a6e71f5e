//! Making models smaller: [`prune`] and [`quantize`] take state dicts to
//! state dicts.

pub mod prune;
pub mod quantize;
