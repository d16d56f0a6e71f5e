//! What the commands share: output and colours, progress bars, the
//! non-tensor values of a tree, run metrics, the demo's digits, model
//! loading, and the metric plot.

pub mod digits;
pub mod metrics;
pub mod model_io;
pub mod output;
#[cfg(feature = "plot")]
pub mod plot;
pub mod progress;
pub mod values;
